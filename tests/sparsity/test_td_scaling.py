"""TD's two dense-gap rules: ``rescale`` (training, tensor2tensor's) and ``eval_scale``
(eval mode, ordinary dropout's weight-scaling rule), their fold into plain weights, and the
option table's entries for them."""
import argparse
import copy

import pytest
import torch
from torch import nn

from td_fairseq.sparsity import TDConfig, apply_targeted_dropout, targeted_unit_mask, targeted_weight_mask
from td_fairseq.sparsity import options
from td_fairseq.sparsity.baselines import fold_views
from td_fairseq.sparsity.masks import targeted_pattern_mask
from td_fairseq.sparsity.td import fold_eval_scale

READS = 4000


def linear_with_td(shape=(20, 12), **kw):
    torch.manual_seed(0)
    layer = nn.Linear(*shape)
    apply_targeted_dropout(layer, TDConfig(**{"td_type": "weight", "gamma": 0.5, "alpha": 0.5, **kw}),
                           lambda name, m: True)
    return layer


def mean_training_read(layer, reads=READS):
    layer.train()
    with torch.no_grad():
        return torch.stack([layer.weight for _ in range(reads)]).double().mean(0)


def test_defaults_are_off_and_training_reads_keep_the_raw_values():
    config = TDConfig()
    assert (config.rescale, config.eval_scale) == (False, False)
    assert (options.DEFAULTS["td_rescale"], options.DEFAULTS["td_eval_scale"]) == (False, False)
    layer = linear_with_td()
    raw = layer._parameters["weight"]
    layer.train()
    read = layer.weight
    kept = read != 0
    assert torch.equal(read[kept], raw[kept])  # the paper's rule: no rescaling
    layer.eval()
    assert layer.weight is raw


@pytest.mark.parametrize("td_type", ["weight", "unit"])
def test_rescale_keeps_each_targeted_weight_in_expectation(td_type):
    layer = linear_with_td(td_type=td_type, rescale=True)
    raw = layer._parameters["weight"].detach()
    targeted = (targeted_unit_mask(raw, 0.5) if td_type == "unit" else targeted_weight_mask(raw, 0.5)).expand_as(raw)
    layer.train()
    for _ in range(20):  # every read: untargeted exact, kept targeted exactly w / (1 - alpha), dropped 0
        read = layer.weight.detach()
        assert torch.equal(read[~targeted], raw[~targeted])
        kept = targeted & (read != 0)
        assert torch.allclose(read[kept], raw[kept] / 0.5, rtol=1e-6, atol=0)
    ratio = (mean_training_read(layer) / raw.double())[targeted]
    assert ratio.mean().item() == pytest.approx(1.0, abs=0.01)  # without the rescale it would be 0.5
    assert (ratio - 1).abs().max().item() < 0.15  # per weight: about 5 standard deviations at 4000 reads


def test_rescale_ramp_divides_by_the_current_alpha():
    layer = linear_with_td(gamma=0.8, alpha=0.6, ramp_updates=10, rescale=True)
    layer.td.set_num_updates(5)
    gamma_t, alpha_t = layer.td.rates
    assert alpha_t == pytest.approx(0.15) and gamma_t < 0.8
    raw = layer._parameters["weight"].detach()
    targeted = targeted_weight_mask(raw, gamma_t)
    layer.train()
    read = layer.weight.detach()
    kept = targeted & (read != 0)
    assert kept.any()
    assert torch.allclose(read[kept], raw[kept] / (1 - alpha_t), rtol=1e-6, atol=0)
    assert torch.equal(read[~targeted], raw[~targeted])
    layer.td.set_num_updates(0)  # alpha_t 0: nothing dropped, nothing rescaled
    assert layer.weight is layer._parameters["weight"]


def test_rescale_gives_dropped_weights_exactly_zero_gradient():
    layer = linear_with_td(rescale=True)
    raw = layer._parameters["weight"]
    layer.train()
    layer(torch.randn(8, 20)).sum().backward()
    dropped = layer.td._last_dropped
    targeted = targeted_weight_mask(raw, 0.5)
    assert dropped.any() and (dropped <= targeted).all()
    assert (raw.grad[dropped] == 0).all()
    assert (raw.grad[~dropped] != 0).all()


def test_rescale_with_alpha_one_drops_the_whole_set_and_divides_by_nothing():
    layer = linear_with_td(alpha=1.0, rescale=True)
    raw = layer._parameters["weight"]
    targeted = targeted_weight_mask(raw, 0.5)
    layer.train()
    read = layer.weight
    assert torch.isfinite(read).all()
    assert torch.equal(read == 0, targeted) and torch.equal(read[~targeted], raw[~targeted])
    read.sum().backward()
    assert (raw.grad[targeted] == 0).all()


@pytest.mark.parametrize("kw", [dict(), dict(td_type="unit"), dict(pattern="2:4", gamma=0.9)])
def test_eval_scale_equals_the_mean_of_plain_training_reads(kw):
    layer = linear_with_td(eval_scale=True, **kw)
    raw = layer._parameters["weight"].detach()
    if "pattern" in kw:  # the pattern's set, not gamma's
        targeted = targeted_pattern_mask(raw, (2, 4))
    elif kw.get("td_type") == "unit":
        targeted = targeted_unit_mask(raw, 0.5).expand_as(raw)
    else:
        targeted = targeted_weight_mask(raw, 0.5)
    layer.eval()
    scaled = layer.weight.detach()
    assert torch.equal(scaled[~targeted], raw[~targeted])
    assert torch.allclose(scaled[targeted], raw[targeted] * 0.5, rtol=1e-6, atol=0)
    ratio = (mean_training_read(layer) / scaled.double())[targeted]  # rescale off: E[read] = w (1 - alpha)
    assert ratio.mean().item() == pytest.approx(1.0, abs=0.01)
    assert (ratio - 1).abs().max().item() < 0.15
    layer.eval()
    assert torch.equal(layer.weight, scaled)  # deterministic


def test_eval_scale_ramp_uses_the_current_rates_and_mask_wins():
    layer = linear_with_td(gamma=0.8, alpha=0.6, ramp_updates=10, eval_scale=True)
    layer.eval()
    assert layer.weight is layer._parameters["weight"]  # update 0: gamma_t = alpha_t = 0
    layer.td.set_num_updates(15)
    gamma_t, alpha_t = layer.td.rates
    raw = layer._parameters["weight"].detach()
    targeted = targeted_weight_mask(raw, gamma_t)
    assert torch.allclose(layer.weight[targeted], raw[targeted] * (1 - alpha_t), rtol=1e-6, atol=0)
    assert alpha_t == pytest.approx(0.45)
    layer.td.config = TDConfig(gamma=0.8, alpha=0.6, ramp_updates=10, eval_scale=True, eval_mask=True)
    assert torch.equal(layer.weight == 0, targeted)  # a direct caller giving both: the mask removes


def test_fold_is_exact_for_views_and_state_dicts():
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 8))
    config = TDConfig(td_type="weight_random", gamma=0.6, alpha=0.5, ramp_updates=4, eval_scale=True)
    apply_targeted_dropout(model, config, lambda name, m: True)
    for module in (model[0], model[2]):
        module.td.set_num_updates(6)
    x = torch.randn(5, 16)
    model.eval()
    with torch.no_grad():
        expected = model(x)
        viewed = {k: model.get_submodule(k[: -len(".weight")]).weight.clone() for k in ("0.weight", "2.weight")}
    state = model.state_dict()
    folded = fold_eval_scale(state, config, 6, lambda key, t: key.endswith("weight") and t.dim() == 2)
    assert all(torch.equal(folded[k], viewed[k]) for k in viewed)
    assert fold_eval_scale(state, TDConfig(td_type="weight_random"), 6, lambda k, t: True) == state  # off: as is
    plain = copy.deepcopy(model)
    fold_views(plain)  # what export and the sweep do
    assert type(plain[0]) is nn.Linear
    with torch.no_grad():
        assert torch.equal(plain(x), expected)
    assert not torch.equal(plain[0].weight, state["0.weight"])  # the fold changed something


def test_fold_refuses_a_tied_weight_scaled_for_one_reader_only():
    embed, proj = nn.Embedding(10, 8), nn.Linear(8, 10, bias=False)
    proj.weight = embed.weight
    model = nn.ModuleDict({"embed_tokens": embed, "output_projection": proj})
    apply_targeted_dropout(model, TDConfig(eval_scale=True), lambda name, m: name == "embed_tokens")
    with pytest.raises(ValueError, match="output_projection.weight shares its weight with embed_tokens.weight"):
        fold_views(model)
    both = nn.ModuleDict({"embed_tokens": nn.Embedding(10, 8), "output_projection": nn.Linear(8, 10, bias=False)})
    both.output_projection.weight = both.embed_tokens.weight
    apply_targeted_dropout(both, TDConfig(eval_scale=True), lambda name, m: True)
    fold_views(both)  # one view for both readers: folded once
    assert both.output_projection.weight is both.embed_tokens.weight


def test_option_table_parses_both_and_refuses_them_with_the_eval_mask_in_one_line():
    parser = argparse.ArgumentParser()
    options.add_arguments(parser)
    args = parser.parse_args(["--td-rescale", "--td-eval-scale"])
    config = options.td_config(args)
    assert (config.rescale, config.eval_scale, config.eval_mask) == (True, True, False)
    options.check_combination(args)
    args.td_eval_mask = True
    with pytest.raises(ValueError) as error:
        options.check_combination(args)
    assert "--td-eval-mask" in str(error.value) and "--td-eval-scale" in str(error.value)
    assert len(str(error.value).splitlines()) == 1
    assert {"td_rescale", "td_eval_scale"} <= set(options.option_keys())  # dropped on export
