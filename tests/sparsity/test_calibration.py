"""Calibration hooks and the three pruners behind one interface, on a toy model (no fairseq)."""
import subprocess
import sys

import pytest
import torch
from torch import nn

from td_fairseq.sparsity import PruneRanking
from td_fairseq.sparsity.calibration import StopForward, collect, forward_groups, weight_modules
from td_fairseq.sparsity.patterns import follows_pattern
from td_fairseq.sparsity.pruners import make_pruner, wanda_mask
from td_fairseq.sparsity.sparsegpt import sparsegpt_prune


class Toy(nn.Module):
    """a, then q and k reading the same tensor, then out reading both: three input groups."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.a, self.q, self.k, self.out = nn.Linear(6, 8), nn.Linear(8, 8), nn.Linear(8, 8), nn.Linear(16, 4)

    def forward(self, x):
        h = torch.relu(self.a(x))
        return self.out(torch.cat([self.q(h), self.k(h)], dim=-1))


class Bypass(Toy):
    def forward(self, x):  # reads q's weight without calling q, like an attention fast path
        h = torch.relu(self.a(x))
        return self.out(torch.cat([nn.functional.linear(h, self.q.weight), self.k(h)], dim=-1))


def setup(model_class=Toy):
    model = model_class()
    batches = [torch.randn(3, 5, 6, generator=torch.Generator().manual_seed(i)) for i in range(4)]
    calls = []

    def feed():
        calls.append(1)
        with torch.no_grad():
            for batch in batches:
                try:
                    model(batch)
                except StopForward:
                    pass
    weights = {n: p for n, p in model.named_parameters() if n.endswith("weight")}
    return model, weights, feed, batches, calls


def gram(x):
    x = x.reshape(-1, x.shape[-1])
    return x.T @ x / x.shape[0]


def test_statistics_order_and_groups():
    model, weights, feed, batches, _ = setup()
    stats = collect(weight_modules(model, weights), feed, "gram")
    x = torch.cat(batches)
    assert torch.allclose(stats["a.weight"].mean(), gram(x), atol=1e-6)
    h = torch.relu(model.a(x)).detach()
    assert torch.allclose(stats["q.weight"].mean(), gram(h), atol=1e-5)
    assert stats["a.weight"].tokens == 60
    assert forward_groups(stats) == [["a.weight"], ["q.weight", "k.weight"], ["out.weight"]]
    square = collect(weight_modules(model, weights), feed, "square")
    assert torch.allclose(square["q.weight"].total, h.reshape(-1, 8).square().sum(0), atol=1e-5)


class Spy(nn.Module):
    def __init__(self, module, log):
        super().__init__()
        self.module, self.log = module, log

    def forward(self, x):
        self.log.append(1)
        return self.module(x)


def test_a_feed_stops_once_the_hooked_modules_have_their_input():
    model, weights, feed, batches, calls = setup()
    log = []
    model.out = Spy(model.out, log)  # out.weight now lives at out.module.weight
    only_a = weight_modules(model, {"a.weight": weights["a.weight"]})
    stats = collect(only_a, feed, "gram")
    assert log == [] and len(calls) == 1 and stats["a.weight"].tokens == 60

    def plain_feed():  # does not catch StopForward: collect runs it again, whole
        calls.append(1)
        for batch in batches:
            model(batch)
    again = collect(only_a, plain_feed, "gram")
    assert len(calls) == 3 and len(log) == 4 and torch.equal(again["a.weight"].total, stats["a.weight"].total)


def test_modules_reading_one_tensor_form_one_group_even_apart():
    model, weights, feed, _, _ = setup()
    shared = torch.randn(2, 8)

    def forward(x):  # like every decoder layer's cross-attention k reading the encoder's output
        q = model.q(shared)
        h = model.a(x)
        return model.out(torch.cat([q, model.k(shared)], dim=-1)) + h.sum()
    model.forward = forward
    stats = collect(weight_modules(model, weights), feed, "gram")
    assert forward_groups(stats) == [["q.weight", "k.weight"], ["a.weight"], ["out.weight"]]


def test_sparsegpt_is_sequential_and_leaves_the_model_as_found():
    model, weights, feed, batches, calls = setup()
    before = {n: p.detach().clone() for n, p in weights.items()}
    pruner = make_pruner("sparsegpt", model, weights, feed, "row", {"calib_sentences": 12}, blocksize=4)
    new = pruner.prune(0.5)
    assert len(calls) == 1 + 3 and pruner.info["passes"] == 3 and pruner.info["calib_sentences"] == 12
    assert all(torch.equal(p, before[n]) for n, p in weights.items())
    # by hand: each group's inputs come from the model with every earlier group pruned
    x = torch.cat(batches)
    expect = {"a.weight": sparsegpt_prune(before["a.weight"], gram(x), 0.5, blocksize=4)[0]}
    h = torch.relu(nn.functional.linear(x, expect["a.weight"], model.a.bias))
    for name in ("q.weight", "k.weight"):
        expect[name] = sparsegpt_prune(before[name], gram(h), 0.5, blocksize=4)[0]
    z = torch.cat([nn.functional.linear(h, expect["q.weight"], model.q.bias),
                   nn.functional.linear(h, expect["k.weight"], model.k.bias)], dim=-1)
    expect["out.weight"] = sparsegpt_prune(before["out.weight"], gram(z), 0.5, blocksize=4)[0]
    for name in expect:
        assert torch.allclose(new[name], expect[name], atol=1e-5), name
    # a sweep copies a level into the model; the next level still starts from the originals
    with torch.no_grad():
        for name, tensor in new.items():
            weights[name].copy_(tensor)
    again = pruner.prune(0.5)
    assert len(calls) == 6  # the order is known, the first group's dense statistics are reused
    assert all(torch.allclose(again[n], new[n], atol=1e-6) for n in new)
    assert all(torch.equal(p, new[n]) for n, p in weights.items())
    nm = pruner.prune(None, "1:2")
    assert all(follows_pattern(t, (1, 2)) for t in nm.values())
    assert all(torch.equal(pruner.prune(0)[n], before[n]) for n in before)


def test_wanda_collects_once_and_prunes_by_input_norm():
    model, weights, feed, batches, calls = setup()
    pruner = make_pruner("wanda", model, weights, feed, info={"calib_seed": 3})
    first, second = pruner.prune(0.5), pruner.prune(0.25)
    assert len(calls) == 1 and pruner.info == {"calib_seed": 3, "pruner": "wanda", "calibration": "one dense pass"}
    h = torch.relu(model.a(torch.cat(batches))).detach().reshape(-1, 8)
    mask = wanda_mask(weights["q.weight"], h.square().sum(0), 0.25)
    assert torch.equal(second["q.weight"], weights["q.weight"].detach().masked_fill(mask, 0))
    assert all(int((t == 0).sum()) == t.numel() // 2 for t in first.values())


def test_magnitude_pruner_is_the_row_ranking_of_the_original_weights():
    model, weights, _, _, _ = setup()
    pruner = make_pruner("magnitude", weights=weights, info={"calib_seed": 1})
    plain = {n: p.detach().clone() for n, p in weights.items()}
    with torch.no_grad():  # a sweep copied a higher level into the model
        for name, tensor in pruner.prune(0.9).items():
            weights[name].copy_(tensor)
    expect = PruneRanking(plain, "weight", "unit").prune(plain, 0.4)
    assert all(torch.equal(pruner.prune(0.4)[n], expect[n]) for n in expect)
    assert all(follows_pattern(t, (1, 2)) for t in pruner.prune(0.5, (1, 2)).values())
    assert pruner.info == {"pruner": "magnitude", "calib_seed": 1}


def test_a_weight_without_inputs_raises():
    model, weights, feed, _, _ = setup(Bypass)
    with pytest.raises(ValueError, match="no input for 1 weight.*q.weight"):
        make_pruner("sparsegpt", model, weights, feed).prune(0.5)
    with pytest.raises(ValueError, match="no module"):
        make_pruner("wanda", model, {"stray": nn.Parameter(torch.ones(2, 2))}, feed)


def test_make_pruner_checks_its_arguments():
    model, weights, feed, _, _ = setup()
    with pytest.raises(ValueError, match="pruner must be"):
        make_pruner("obs", model, weights, feed)
    with pytest.raises(ValueError, match="within a row"):
        make_pruner("wanda", model, weights, feed, "block")
    with pytest.raises(ValueError, match="no options"):
        make_pruner("magnitude", weights=weights, blocksize=4)
    with pytest.raises(ValueError, match="mask_groups"):
        make_pruner("sparsegpt", model, weights, feed, "layer")
    with pytest.raises(ValueError, match="multiple of M"):
        make_pruner("wanda", model, weights, feed).prune(None, "4:8")  # a has 6 inputs


def test_core_imports_no_fairseq():
    code = ("import sys, td_fairseq.sparsity.pruners, td_fairseq.sparsity.calibration; "
            "sys.exit(1 if 'fairseq' in sys.modules else 0)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
