"""--td-rescale and --td-eval-scale through fairseq's parser, the hydra config and the Transformer."""
import copy

import pytest
import torch

from td_fairseq.sparsity import remove_views, targeted_weight_mask, views_of
from td_fairseq.tools.inprocess import build, parse_args, sample


def td_views(model):
    return [module.td for _, module in views_of(model)]


def test_defaults_leave_both_rules_off():
    model, _, _ = build()
    assert all(not v.config.rescale and not v.config.eval_scale for v in td_views(model))
    model, _, _ = build(extra=["--td-rescale", "--td-eval-scale"])
    assert all(v.config.rescale and v.config.eval_scale for v in td_views(model))


def test_eval_mask_with_eval_scale_is_refused_in_one_line(capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_args("transformer_td_tiny", ["--td-eval-mask", "--td-eval-scale"])
    assert exit_info.value.code == 1
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 1 and "error:" in errors[0] and "--td-eval-scale" in errors[0], errors


def test_hydra_config_has_both_options():
    from td_fairseq.models.transformer_td import TargetedDropoutConfig
    config = TargetedDropoutConfig()
    assert (config.td_rescale, config.td_eval_scale) == (False, False)


def test_eval_scaled_transformer_equals_a_stock_copy_with_the_targeted_set_scaled():
    """Every reader of .weight (attention fast path included) sees the scaled set in eval mode."""
    model, _, vocab = build(extra=["--td-gamma", "0.5", "--td-alpha", "0.4", "--td-eval-scale"])
    stock = remove_views(copy.deepcopy(model)).eval()
    with torch.no_grad():
        for name, module in views_of(model):
            raw = module._parameters["weight"]
            stock.get_submodule(name).weight.mul_(1 - 0.4 * targeted_weight_mask(raw, 0.5).float())
    model.eval()
    net_input = sample(vocab)["net_input"]
    with torch.no_grad():
        out, expected = model(**net_input)[0], stock(**net_input)[0]
        plain = remove_views(copy.deepcopy(model))(**net_input)[0]
    assert torch.allclose(out, expected, atol=1e-6)
    assert not torch.allclose(out, plain, atol=1e-3)  # the scale matters


def test_rescaled_training_read_in_the_transformer():
    model, _, _ = build(extra=["--td-gamma", "0.5", "--td-alpha", "0.25", "--td-rescale"])
    model.train()
    for name, module in views_of(model):
        raw = module._parameters["weight"]
        read = module.weight
        targeted = targeted_weight_mask(raw, 0.5)
        kept = targeted & (read != 0)
        assert torch.allclose(read[kept], raw[kept] / 0.75, rtol=1e-6, atol=0), name
        assert torch.equal(read[~targeted], raw[~targeted]), name
