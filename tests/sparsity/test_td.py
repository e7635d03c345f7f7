import copy
import math
import subprocess
import sys

import pytest
import torch
from torch import nn

from td_fairseq.sparsity import (TDConfig, apply_targeted_dropout, attach_view, detach_view, drop_fraction,
                                 follows_pattern, remove_views, targeted_unit_mask, targeted_weight_mask, views_of)
from td_fairseq.sparsity.masks import targeted_pattern_mask


def linear_with_td(**kw):
    torch.manual_seed(0)
    layer = nn.Linear(20, 12)
    config = TDConfig(**{"td_type": "weight", "gamma": 0.5, "alpha": 1.0, **kw})
    apply_targeted_dropout(layer, config, lambda name, m: True)
    return layer


def test_core_imports_no_fairseq():
    code = ("import sys, td_fairseq.sparsity, td_fairseq.results, td_fairseq.synthetic; "
            "sys.exit(1 if 'fairseq' in sys.modules else 0)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_training_read_drops_exactly_targeted_with_alpha_one_and_zero_gradient():
    layer = linear_with_td()
    raw = layer._parameters["weight"]
    targeted = targeted_weight_mask(raw, 0.5)
    layer.train()
    out = layer(torch.randn(8, 20))
    assert torch.equal(layer.weight == 0, targeted)
    out.sum().backward()
    assert (raw.grad[targeted] == 0).all()
    assert (raw.grad[~targeted] != 0).all()


def test_training_is_not_destructive():
    layer = linear_with_td()
    before = layer._parameters["weight"].detach().clone()
    layer.train()
    layer(torch.randn(3, 20))
    assert torch.equal(layer._parameters["weight"], before)


def test_eval_is_identity_by_default():
    layer = linear_with_td()
    layer.eval()
    assert layer.weight is layer._parameters["weight"]
    x = torch.randn(4, 20)
    x.requires_grad_(False)
    out = layer(x)
    out.sum().backward()
    assert (layer._parameters["weight"].grad != 0).all()


def test_eval_mask_removes_bottom_gamma_deterministically():
    layer = linear_with_td(eval_mask=True, alpha=0.3)
    layer.eval()
    raw = layer._parameters["weight"]
    expected = raw.masked_fill(targeted_weight_mask(raw, 0.5), 0)
    assert torch.equal(layer.weight, expected)
    assert torch.equal(layer.weight, layer.weight)


def test_state_dict_keys_unchanged_and_detach_restores_class():
    plain = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))
    wrapped = copy.deepcopy(plain)
    apply_targeted_dropout(wrapped, TDConfig(), lambda n, m: True)
    assert list(wrapped.state_dict()) == list(plain.state_dict())
    assert len(views_of(wrapped)) == 2
    remove_views(wrapped)
    assert type(wrapped[0]) is nn.Linear and not views_of(wrapped)


def test_tied_parameter_gets_one_controller_and_stays_tied():
    embed = nn.Embedding(10, 6)
    proj = nn.Linear(6, 10, bias=False)
    proj.weight = embed.weight
    model = nn.ModuleDict({"embed_tokens": embed, "output_projection": proj})
    apply_targeted_dropout(model, TDConfig(gamma=0.5, alpha=1.0), lambda n, m: True)
    assert embed.td is proj.td
    assert proj._parameters["weight"] is embed._parameters["weight"]
    assert len(list(model.parameters())) == 1


def test_unit_td_drops_whole_rows():
    layer = linear_with_td(td_type="unit", gamma=0.25)
    raw = layer._parameters["weight"]
    layer.train()
    zero_rows = (layer.weight == 0).all(dim=1)
    assert torch.equal(zero_rows, targeted_unit_mask(raw, 0.25).flatten())
    assert zero_rows.sum() == 3


def test_random_targeted_subset_is_fixed_and_saved():
    layer = linear_with_td(td_type="weight_random", gamma=0.5)
    assert "td.random_score" in layer.state_dict()
    layer.train()
    first = layer.weight == 0
    with torch.no_grad():
        layer._parameters["weight"].mul_(-3.0)  # magnitudes change, random subset must not
    assert torch.equal(layer.weight == 0, first)


def test_schedule_follows_set_num_updates():
    layer = linear_with_td(gamma=0.8, alpha=0.5, ramp_updates=10)
    layer.td.set_num_updates(0)
    assert layer.td.rates == (0.0, 0.0)
    layer.train()
    assert layer.weight is layer._parameters["weight"]  # nothing dropped at step 0
    layer.td.set_num_updates(20)
    assert layer.td.rates == pytest.approx((0.8, 0.5))


def test_drop_fraction_is_measured():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(64, 64), nn.Linear(64, 64))
    apply_targeted_dropout(model, TDConfig(gamma=0.75, alpha=0.66), lambda n, m: True)
    model.train()
    fractions = []
    for _ in range(50):
        model(torch.randn(2, 64))
        fractions.append(drop_fraction(model).item())
    assert abs(sum(fractions) / len(fractions) - 0.75 * 0.66) < 0.01


def test_conv_weights_are_covered():
    torch.manual_seed(2)
    conv = nn.Conv2d(3, 8, 3)
    apply_targeted_dropout(conv, TDConfig(gamma=0.5, alpha=1.0), lambda n, m: True)
    conv.train()
    conv(torch.randn(1, 3, 8, 8)).sum().backward()
    targeted = targeted_weight_mask(conv._parameters["weight"], 0.5)
    assert (conv._parameters["weight"].grad[targeted] == 0).all()
    assert (conv._parameters["weight"].grad[~targeted] != 0).all()


@pytest.mark.parametrize("kw, message", [
    (dict(gamma=1.5), "gamma"), (dict(alpha=-0.1), "alpha"), (dict(gamma=math.nan), "gamma"),
    (dict(td_type="magic"), "td_type"), (dict(ramp_updates=-1), "ramp_updates"),
])
def test_config_validation(kw, message):
    with pytest.raises(ValueError, match=message):
        TDConfig(**kw)


def test_attach_twice_and_without_weight_is_refused():
    layer = linear_with_td()
    with pytest.raises(ValueError, match="already"):
        attach_view(layer, layer.td)
    with pytest.raises(ValueError, match="no weight"):
        attach_view(nn.ReLU(), layer.td)
    detach_view(layer)
    assert type(layer) is nn.Linear


def test_gamma_one_alpha_one_drops_everything():
    layer = linear_with_td(gamma=1.0, alpha=1.0)
    layer.train()
    assert (layer.weight == 0).all()
    assert torch.isfinite(layer(torch.randn(2, 20))).all()


def test_pattern_td_drops_exactly_the_pattern_set_and_ignores_gamma():
    layer = linear_with_td(pattern="2:4", gamma=0.9)
    raw = layer._parameters["weight"]
    targeted = targeted_pattern_mask(raw, (2, 4))
    assert layer.td.rates == (0.5, 1.0)
    layer.train()
    out = layer(torch.randn(8, 20))
    assert torch.equal(layer.weight == 0, targeted)
    assert follows_pattern(layer.weight, (2, 4))
    out.sum().backward()
    assert (raw.grad[targeted] == 0).all() and (raw.grad[~targeted] != 0).all()


def test_pattern_td_ramp_scales_alpha_and_eval_mask_leaves_the_pattern():
    layer = linear_with_td(pattern="1:4", alpha=0.5, ramp_updates=10, eval_mask=True)
    assert layer.td.rates == (0.75, 0.0)
    layer.train()
    assert layer.weight is layer._parameters["weight"]  # alpha 0 at update 0: nothing dropped
    layer.td.set_num_updates(10)
    assert layer.td.rates == pytest.approx((0.75, 0.25))
    layer.eval()
    assert follows_pattern(layer.weight, (1, 4))
    assert torch.equal(layer.weight == 0, targeted_pattern_mask(layer._parameters["weight"], (1, 4)))


def test_random_pattern_td_is_fixed_and_follows_the_groups():
    layer = linear_with_td(td_type="weight_random", pattern="2:4")
    layer.train()
    first = layer.weight == 0
    assert (first.view(12, 5, 4).sum(-1) == 2).all()
    with torch.no_grad():
        layer._parameters["weight"].mul_(-3.0)
    assert torch.equal(layer.weight == 0, first)


def test_pattern_needs_inputs_divisible_by_m():
    with pytest.raises(ValueError, match="multiple of M=8"):
        apply_targeted_dropout(nn.Linear(20, 4), TDConfig(pattern="2:8"), lambda n, m: True)


@pytest.mark.parametrize("kw, message", [
    (dict(pattern="4:2"), "N:M"), (dict(pattern="two"), "pattern"), (dict(td_type="unit", pattern="2:4"), "weight TD"),
    (dict(mask_interval=0), "mask_interval"), (dict(mask_interval=1.5), "mask_interval"),
])
def test_pattern_and_interval_validation(kw, message):
    with pytest.raises(ValueError, match=message):
        TDConfig(**kw)


def test_pattern_is_stored_canonically():
    assert TDConfig(pattern=(2, 4)).pattern == "2:4" and TDConfig().nm is None


def count_selections(layer, monkeypatch):
    calls = []
    select = layer.td.targeted
    monkeypatch.setattr(layer.td, "targeted", lambda *a, **k: calls.append(1) or select(*a, **k))
    return calls


def test_targeted_set_is_selected_once_per_update_and_drawn_fresh_per_read(monkeypatch):
    layer = linear_with_td(alpha=0.5)
    calls = count_selections(layer, monkeypatch)
    layer.train()
    first, second = layer.weight == 0, layer.weight == 0  # two reads of one update (gradient accumulation)
    assert len(calls) == 1 and not torch.equal(first, second)
    targeted = targeted_weight_mask(layer._parameters["weight"], 0.5)
    assert not (first & ~targeted).any() and not (second & ~targeted).any()
    layer.td.set_num_updates(1)
    layer.weight
    assert len(calls) == 2


def test_weight_edited_in_place_is_selected_again_within_an_update(monkeypatch):
    layer = linear_with_td()
    calls = count_selections(layer, monkeypatch)
    layer.train()
    layer.weight
    with torch.no_grad():
        layer._parameters["weight"].mul_(torch.linspace(0.1, 2, 20))  # re-ranks every row
    assert torch.equal(layer.weight == 0, targeted_weight_mask(layer._parameters["weight"], 0.5))
    assert len(calls) == 2


def test_mask_interval_keeps_the_set_for_k_updates_then_reselects():
    layer = linear_with_td(mask_interval=3)
    raw = layer._parameters["weight"]
    layer.train()
    kept = targeted_weight_mask(raw, 0.5)
    for update in range(6):
        layer.td.set_num_updates(update)
        if update == 3:
            kept = targeted_weight_mask(raw, 0.5)
        assert torch.equal(layer.weight == 0, kept), update  # alpha 1: the dropped set is the kept set
        assert (kept.sum(1) == 10).all()
        with torch.no_grad():
            raw.mul_(torch.rand(20) + 0.5)  # the optimizer moves the weights every update
    assert not torch.equal(kept, targeted_weight_mask(raw, 0.5))
