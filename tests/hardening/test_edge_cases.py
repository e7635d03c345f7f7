"""Edge cases of TD inside fairseq's Transformer, defined and tested.

- gamma 1, alpha 1: every covered weight is targeted and dropped; the model still runs (biases,
  embeddings and layer norms carry it; the decoder then ignores the source) and its loss and
  gradients are finite.
- gamma * n rounds down to 0 (tiny layers), gamma 0, alpha 0, or a ramp at update 0: nothing is
  targeted or dropped and TD is exactly the identity, forward and backward.
- A few training steps: no NaN or inf in loss or gradients wherever the stock model has none.
- train/eval switching: training masks, eval is the identity (or the eval mask), back and forth,
  and the stored weights never change.
"""
import copy
import re

import pytest
import torch

from td_fairseq.sparsity import drop_fraction, remove_views, targeted_weight_mask, views_of
from td_fairseq.tools.inprocess import build, sample

from ..conftest import TRAIN_ARGS, run_cli

NO_DROPOUT = ["--dropout", "0", "--attention-dropout", "0", "--activation-dropout", "0"]
# embed 4, ffn 8, one head: 0.1 of any row (4 or 8 weights) or of any layer's units is below one
TINY_LAYERS = ["--encoder-embed-dim", "4", "--decoder-embed-dim", "4", "--encoder-ffn-embed-dim", "8",
               "--decoder-ffn-embed-dim", "8", "--encoder-attention-heads", "1", "--decoder-attention-heads", "1"]


def raw_weights(model):
    return {n: m._parameters["weight"].detach().clone() for n, m in views_of(model)}


def finite_grads(model):
    return all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_gamma_one_alpha_one_drops_everything_and_the_model_still_trains():
    model, criterion, vocab = build(extra=["--td-gamma", "1", "--td-alpha", "1"])
    model.train()
    before = raw_weights(model)
    loss, _, log = criterion(model, sample(vocab))
    assert torch.isfinite(loss) and log["td_drop"] == 1.0
    assert all((m.weight == 0).all() for _, m in views_of(model))
    loss.backward()
    assert finite_grads(model)
    for name, module in views_of(model):
        assert (module._parameters["weight"].grad == 0).all(), name  # dropped: no gradient at all
    # the rest still learns: the decoder through its residual stream and biases. The source is
    # ignored (encoder-attention keys and values are biases only): no gradient reaches it.
    assert model.decoder.embed_tokens.weight.grad.abs().sum() > 0
    assert model.encoder.embed_tokens.weight.grad.abs().sum() == 0
    assert all(torch.equal(before[n], m._parameters["weight"]) for n, m in views_of(model))


def test_gamma_one_alpha_one_through_fairseq_train(data_bin, tmp_path):
    result = run_cli("fairseq-train", data_bin, *TRAIN_ARGS, "--td-gamma", "1", "--td-alpha", "1",
                     "--max-update", "3", "--save-dir", tmp_path)
    lines = [line for line in result.stdout.splitlines() if "train_inner" in line]
    assert len(lines) == 3
    for line in lines:
        fields = dict(re.findall(r"(\w+)=([-\w.]+)", line))
        assert float(fields["td_drop"]) == 1.0
        assert all(v not in ("nan", "inf") for v in (fields["loss"], fields["gnorm"])), line


IDENTITY = {
    "tiny layers, gamma 0.1 (weight)": TINY_LAYERS + ["--td-type", "weight", "--td-gamma", "0.1", "--td-alpha", "1"],
    "tiny layers, gamma 0.1 (unit)": TINY_LAYERS + ["--td-type", "unit", "--td-gamma", "0.1", "--td-alpha", "1"],
    "tiny layers, gamma 0.1 (weight_random)": TINY_LAYERS + ["--td-type", "weight_random", "--td-gamma", "0.1",
                                                             "--td-alpha", "1"],
    "gamma 0": ["--td-gamma", "0", "--td-alpha", "1"],
    "alpha 0": ["--td-gamma", "0.9", "--td-alpha", "0"],
    "ramp at update 0": ["--td-gamma", "0.9", "--td-alpha", "1", "--td-ramp-updates", "10"],
}


@pytest.mark.parametrize("case", list(IDENTITY))
def test_nothing_targeted_means_td_is_the_identity(case):
    model, criterion, vocab = build(extra=IDENTITY[case] + NO_DROPOUT)
    assert views_of(model), "TD must be attached for this test to mean anything"
    stock = remove_views(copy.deepcopy(model))
    model.train()
    stock.train()
    batch = sample(vocab)
    loss, _, log = criterion(model, batch)
    stock_loss = criterion(stock, batch)[0]
    assert torch.equal(loss, stock_loss)
    assert log["td_drop"] == 0.0
    loss.backward()
    stock_loss.backward()
    stock_params = dict(stock.named_parameters())
    for name, p in model.named_parameters():
        assert torch.equal(p.grad, stock_params[name].grad), name
    for name, module in views_of(model):
        assert module.weight is module._parameters["weight"] or torch.equal(module.weight, module._parameters["weight"])


CONFIGS = {
    "stock (td none)": ["--td-type", "none"],
    "weight .75/.66": ["--td-type", "weight", "--td-gamma", "0.75", "--td-alpha", "0.66"],
    "unit .5/.5": ["--td-type", "unit", "--td-gamma", "0.5", "--td-alpha", "0.5"],
    "weight_random .75/.66": ["--td-type", "weight_random", "--td-gamma", "0.75", "--td-alpha", "0.66"],
    "unit_random .5/.5": ["--td-type", "unit_random", "--td-gamma", "0.5", "--td-alpha", "0.5"],
    "ramp 2, .95/.99, eval mask": ["--td-gamma", "0.95", "--td-alpha", "0.99", "--td-ramp-updates", "2",
                                   "--td-eval-mask"],
    "gamma 1 alpha 1, all targets": ["--td-gamma", "1", "--td-alpha", "1", "--td-targets", "attn,ffn,embed,output",
                                     "--share-all-embeddings"],
}


@pytest.mark.parametrize("config", list(CONFIGS))
def test_a_few_training_steps_stay_finite(config):
    torch.manual_seed(0)
    model, criterion, vocab = build(extra=CONFIGS[config] + ["--dropout", "0.1"])
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for step in range(6):
        model.set_num_updates(step)  # what fairseq's task does before each update
        optimizer.zero_grad()
        loss, _, _ = criterion(model, sample(vocab, seed=step))
        loss.backward()
        assert torch.isfinite(loss), (config, step)
        assert finite_grads(model), (config, step)
        optimizer.step()
    model.eval()
    with torch.no_grad():
        assert torch.isfinite(criterion(model, sample(vocab, seed=99))[0])


def test_train_eval_switching_back_and_forth():
    model, criterion, vocab = build(extra=["--td-gamma", "0.5", "--td-alpha", "1"] + NO_DROPOUT)
    stock = remove_views(copy.deepcopy(model)).eval()
    before = raw_weights(model)
    net_input = sample(vocab)["net_input"]
    with torch.no_grad():
        reference = stock(**net_input)[0]
        for _ in range(2):
            model.train()
            assert all(m.td.training for _, m in views_of(model))
            trained = model(**net_input)[0]
            assert drop_fraction(model) == pytest.approx(0.5)
            assert not torch.allclose(trained, reference, atol=1e-3), "training mode must mask"
            model.eval()
            assert not any(m.td.training for _, m in views_of(model))
            assert torch.equal(model(**net_input)[0], reference), "eval mode is the identity"
    assert all(torch.equal(before[n], m._parameters["weight"]) for n, m in views_of(model))


def test_eval_mask_switching_back_and_forth():
    model, _, vocab = build(extra=["--td-gamma", "0.5", "--td-alpha", "0.3", "--td-eval-mask"] + NO_DROPOUT)
    net_input = sample(vocab)["net_input"]
    zeroed = remove_views(copy.deepcopy(model)).eval()
    with torch.no_grad():
        for name, module in views_of(model):
            raw = module._parameters["weight"]
            zeroed.get_submodule(name).weight.masked_fill_(targeted_weight_mask(raw, 0.5), 0)
        reference = zeroed(**net_input)[0]
        outputs = []
        for _ in range(2):
            model.train()
            model(**net_input)
            model.eval()
            outputs.append(model(**net_input)[0])
    assert torch.allclose(outputs[0], reference, atol=1e-6)
    assert torch.equal(outputs[0], outputs[1]), "eval with the mask is deterministic"
