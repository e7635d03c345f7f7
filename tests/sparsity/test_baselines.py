"""The baseline weight views (dropout, L1, L0, variational dropout, GMP, Smallify), pure torch."""
import math

import pytest
import torch
from torch import nn

from td_fairseq.sparsity import cubic_sparsity, drop_fraction, remove_views, targeted_count, views_of
from td_fairseq.sparsity.baselines import (BaselineConfig, GradualMagnitudePruning, L0Gate, Smallify,
                                           apply_baseline, fold_state_dict, gmp_mask_step)

W = torch.tensor([[1.0, -2.0, 0.0], [0.5, 0.0, -3.0]])


def layer_with(weight=W, **config):
    torch.manual_seed(0)
    layer = nn.Linear(weight.shape[1], weight.shape[0])
    with torch.no_grad():
        layer.weight.copy_(weight)
    views = apply_baseline(layer, BaselineConfig(**config), lambda name, m: True)
    return layer, views[""]


def test_l1_term_and_identity_view():
    layer, view = layer_with(method="l1", l1_coef=0.1)
    assert view.regularization_loss().item() == pytest.approx(0.1 * 6.5)
    assert torch.equal(layer.train().weight, W) and torch.equal(layer.eval().weight, W)
    view.regularization_loss().backward()
    assert torch.equal(layer._parameters["weight"].grad, 0.1 * W.sign())


def test_l0_gate_shapes_initial_values_and_saved_as_parameters():
    layer, view = layer_with(method="l0", l0_coef=1.0)
    assert view.log_alpha.shape == W.shape
    assert torch.allclose(view.log_alpha, torch.full(W.shape, math.log(9.0)))
    assert "td.log_alpha" in layer.state_dict() and any(p is view.log_alpha for p in layer.parameters())
    unit_layer, unit_view = layer_with(method="l0", l0_form="unit")
    assert unit_view.log_alpha.shape == (2, 1)
    assert list(unit_layer.state_dict()) == ["weight", "bias", "td.log_alpha"]


def test_l0_term_and_eval_gate_against_hand_values():
    layer, view = layer_with(method="l0", l0_coef=0.5)
    with torch.no_grad():
        view.log_alpha.copy_(torch.tensor([[0.0, 1.0, -20.0], [20.0, 0.0, 0.0]]))
    shift = -(2.0 / 3.0) * math.log(0.1 / 1.1)  # -beta * log(-gamma / zeta) = 1.5986
    sig = lambda x: 1.0 / (1.0 + math.exp(-x))  # noqa: E731
    expected = 0.5 * sum(sig(a + shift) for a in (0.0, 1.0, -20.0, 20.0, 0.0, 0.0))
    assert view.regularization_loss().item() == pytest.approx(expected, rel=1e-6)
    gate = torch.tensor([[0.5, sig(1.0) * 1.2 - 0.1, 0.0], [1.0, 0.5, 0.5]])
    assert torch.allclose(layer.eval().weight, W * gate, atol=1e-6)


def test_l0_training_samples_gates_with_gradient():
    layer, view = layer_with(weight=torch.ones(50, 40), method="l0", l0_coef=1.0)
    with torch.no_grad():
        view.log_alpha[0].fill_(-30.0)  # always closed
        view.log_alpha[1].fill_(30.0)  # always open
    layer.train()
    first, second = layer.weight, layer.weight
    assert (first[0] == 0).all() and (first[1] == 1).all()
    assert not torch.equal(first[2:], second[2:])  # fresh sample per read
    assert ((first >= 0) & (first <= 1)).all()
    first[2:].sum().backward()
    assert (view.log_alpha.grad[2:] != 0).any()
    assert drop_fraction(layer) >= 40 / 2000


def test_variational_shapes_initial_values_and_kl_against_hand_values():
    layer, view = layer_with(method="variational", vd_coef=2.0)
    assert view.log_sigma2.shape == W.shape and (view.log_sigma2 == -10.0).all()
    assert "td.log_sigma2" in layer.state_dict()
    weight = torch.tensor([[1.0, 1.0]])
    layer, view = layer_with(weight=weight, method="variational", vd_coef=2.0)
    with torch.no_grad():
        view.log_sigma2.copy_(torch.tensor([[0.0, 2.0]]))  # log alpha = 0 and 2
    k1, k2, k3 = 0.63576, 1.87320, 1.48695

    def kl(la):
        return -(k1 / (1 + math.exp(-(k2 + k3 * la))) - 0.5 * math.log(1 + math.exp(-la)) - k1)
    assert view.regularization_loss().item() == pytest.approx(2.0 * (kl(0.0) + kl(2.0)), rel=1e-5)
    assert kl(0.0) == pytest.approx(0.43122, abs=1e-4)


def test_variational_eval_removes_log_alpha_above_three_and_training_adds_noise():
    weight = torch.tensor([[1.0, 0.01, 0.3]])
    layer, view = layer_with(weight=weight, method="variational", vd_coef=1.0)
    with torch.no_grad():
        view.log_sigma2.fill_(0.0)  # log alpha = 0, 9.2, 2.4
    assert torch.equal(layer.eval().weight, torch.tensor([[1.0, 0.0, 0.3]]))
    layer.train()
    noisy = torch.stack([layer.weight for _ in range(4000)])
    assert noisy.std(0).mean().item() == pytest.approx(1.0, abs=0.05)  # sigma = exp(0 / 2)
    noisy[:, 0, 0].sum().backward()
    assert view.log_sigma2.grad[0, 0] != 0 and layer._parameters["weight"].grad[0, 0] == 4000


@pytest.mark.parametrize("rate", [0.2, 0.495])
def test_weight_dropout_rate_rescaled_survivors_and_eval_identity(rate):
    weight = torch.randn(200, 100)
    layer, view = layer_with(weight=weight, method="dropout", drop_rate=rate)
    seen = layer.train().weight
    dropped = seen == 0
    assert dropped.float().mean().item() == pytest.approx(rate, abs=0.015)
    assert torch.allclose(seen[~dropped], weight[~dropped] / (1 - rate))  # standard dropout scaling
    assert drop_fraction(layer).item() == pytest.approx(dropped.float().mean().item())
    assert view.rates == (1.0, rate)
    assert torch.equal(layer.eval().weight, weight)


def test_unit_dropout_drops_whole_rows():
    weight = torch.randn(4000, 3) + 5
    layer, _ = layer_with(weight=weight, method="unit_dropout", drop_rate=0.3)
    seen = layer.train().weight
    rows = (seen == 0).all(dim=1)
    assert ((seen == 0).any(dim=1) == rows).all()
    assert rows.float().mean().item() == pytest.approx(0.3, abs=0.03)
    assert torch.allclose(seen[~rows], weight[~rows] / 0.7)
    assert torch.equal(layer.eval().weight, weight)


def gmp_layer():
    torch.manual_seed(1)
    layer, view = layer_with(weight=torch.randn(10, 40), method="gmp", gmp_sparsity=0.8, gmp_start=2,
                             gmp_steps=4, gmp_interval=3)
    return layer.train(), view


def test_gmp_mask_follows_cubic_schedule_and_is_frozen_between_updates():
    layer, view = gmp_layer()
    masks = {}
    for step in range(0, 20):
        view.set_num_updates(step)
        with torch.no_grad():  # the weights move every step, as in training
            layer._parameters["weight"].add_(0.3 * torch.randn(10, 40))
        before = view.mask.clone()
        seen = layer.weight
        masks[step] = view.mask.clone()
        point = gmp_mask_step(step, 2, 4, 3)
        expected = targeted_count(cubic_sparsity(step, 0.8, start=2, steps=4, interval=3), 40)
        assert (masks[step].sum(dim=1) == expected).all(), step
        assert torch.equal(seen == 0, masks[step])
        if step not in (2, 5, 8, 11, 14):
            assert torch.equal(masks[step], before), f"mask changed at {step}, between updates"
        assert int(view.mask_step) == point
    assert masks[1].sum() == 0 and masks[14].sum() == 10 * 32
    assert [int(masks[s].sum(dim=1)[0]) for s in (2, 5, 8, 11)] == [0, 18, 28, 31]
    for a, b in ((5, 8), (8, 11), (11, 14)):
        assert (masks[a] <= masks[b]).all()  # nested: pruned weights stay pruned


def test_gmp_gradient_zero_on_mask_and_mask_survives_reload_and_eval():
    layer, view = gmp_layer()
    view.set_num_updates(9)
    layer(torch.randn(3, 40)).sum().backward()
    mask = view.mask.clone()
    assert mask.sum() == 10 * 28
    assert (layer._parameters["weight"].grad[mask] == 0).all()
    fresh, fresh_view = gmp_layer()
    with torch.no_grad():
        fresh._parameters["weight"].normal_()  # different weights: a recompute would differ
    fresh.load_state_dict(layer.state_dict())
    fresh_view.set_num_updates(10)  # same schedule point as 9: keep the saved mask
    fresh.train()(torch.randn(2, 40))
    assert torch.equal(fresh_view.mask, mask)
    fresh_view.set_num_updates(0)  # eval never recomputes, whatever the update count
    assert torch.equal(fresh.eval().weight == 0, mask)


def smallify_layer(switch, threshold=0.5):
    """A layer with one row per switch value (row i: i + 1 everywhere), Smallify attached."""
    weight = torch.arange(1.0, len(switch) + 1).unsqueeze(1).repeat(1, 3)
    layer, view = layer_with(weight=weight, method="smallify", smallify_coef=0.1, smallify_threshold=threshold)
    with torch.no_grad():
        view.switch.copy_(torch.tensor(switch).unsqueeze(1))
    return layer.train(), view


def test_smallify_switch_and_buffers_start_open_and_are_saved():
    layer, view = layer_with(method="smallify", smallify_coef=0.1)
    assert view.switch.shape == (2, 1) and torch.equal(view.switch, torch.ones(2, 1))
    assert any(p is view.switch for p in layer.parameters())
    assert torch.equal(view.sign_mean, torch.zeros(2, 1)) and view.sign_mean.dtype == torch.float32
    assert torch.equal(view.sign_var, torch.zeros(2, 1)) and view.sign_var.dtype == torch.float32
    assert view.pruned.dtype == torch.bool and not view.pruned.any()
    assert list(layer.state_dict()) == ["weight", "bias", "td.switch", "td.sign_mean", "td.sign_var", "td.pruned"]
    assert (view.coef, view.momentum, view.threshold) == (0.1, 0.9, 0.5) and view.rates == (0.0, 1.0)
    assert torch.equal(layer.train().weight, W) and torch.equal(layer.eval().weight, W)


def test_smallify_term_is_l1_of_the_live_switches():
    layer, view = smallify_layer([0.5, -2.0, 3.0])
    view.pruned[2] = True
    assert view.regularization_loss().item() == pytest.approx(0.1 * (0.5 + 2.0))
    view.regularization_loss().backward()
    assert torch.allclose(view.switch.grad, torch.tensor([[0.1], [-0.1], [0.0]]))


def test_smallify_sign_statistics_and_pruning_against_hand_values():
    layer, view = smallify_layer([0.5, 2.0, 0.0], threshold=0.15)
    view.set_num_updates(1)
    layer.weight
    # signs +1, +1, 0; mean = 0.1 s, var = 0.1 (s - mean)^2
    assert torch.allclose(view.sign_mean.view(-1), torch.tensor([0.1, 0.1, 0.0]))
    assert torch.allclose(view.sign_var.view(-1), torch.tensor([0.081, 0.081, 0.0]))
    assert not view.pruned.any()
    with torch.no_grad():
        view.switch[0] = -0.5  # the first unit's sign flips, the second stays steady
    view.set_num_updates(2)
    seen = layer.weight
    # flip: mean = .09 - .1, var = .0729 + .1 * (-1 + .01)^2; steady: .19, .0729 + .1 * .81^2
    assert torch.allclose(view.sign_mean.view(-1), torch.tensor([-0.01, 0.19, 0.0]))
    assert torch.allclose(view.sign_var.view(-1), torch.tensor([0.17091, 0.13851, 0.0]))
    assert view.pruned.view(-1).tolist() == [True, False, False]
    assert torch.equal(seen, torch.tensor([[0.0] * 3, [4.0] * 3, [0.0] * 3]))
    assert view.rates == (pytest.approx(1 / 3), 1.0) and drop_fraction(layer).item() == pytest.approx(1 / 3)


def test_smallify_oscillating_sign_is_pruned_for_good_at_the_default_threshold():
    layer, view = smallify_layer([1.0, 1.0])
    for step in range(1, 60):
        with torch.no_grad():
            view.switch[0] = (-1.0) ** step
        view.set_num_updates(step)
        layer.weight
    assert view.pruned.view(-1).tolist() == [True, False]
    assert view.sign_var[1].item() < 0.25  # a steady sign stays far below 0.5
    with torch.no_grad():
        view.switch[0] = 1.0
    assert view.pruned[0] and (layer.weight[0] == 0).all()


def test_smallify_statistics_move_once_per_update_and_never_in_eval_or_at_update_zero():
    layer, view = smallify_layer([0.5, -2.0])
    for _ in range(3):
        layer.weight  # update 0: nothing yet
    assert not view.sign_mean.any()
    view.set_num_updates(1)
    for _ in range(3):
        layer(torch.randn(2, 3))  # several reads per update (gradient accumulation)
    assert torch.allclose(view.sign_mean.view(-1), torch.tensor([0.1, -0.1]))
    state = {k: v.clone() for k, v in view.state_dict().items()}
    view.set_num_updates(2)
    layer.eval().weight
    assert all(torch.equal(v, state[k]) for k, v in view.state_dict().items())
    layer.train().weight
    assert torch.allclose(view.sign_mean.view(-1), torch.tensor([0.19, -0.19]))


def test_smallify_eval_is_weight_times_switch_and_pruned_rows_are_zero_without_gradient():
    layer, view = smallify_layer([2.0, -0.5, 0.25])
    view.pruned[1] = True
    expected = torch.tensor([[2.0] * 3, [0.0] * 3, [0.75] * 3])
    for mode in (layer.eval, layer.train):
        mode()
        layer.zero_grad()
        assert torch.equal(layer.weight, expected)
        layer(torch.randn(4, 3)).sum().backward()
        grad = layer._parameters["weight"].grad
        assert (grad[1] == 0).all() and (grad[0] != 0).all()
        assert view.switch.grad[1] == 0 and view.switch.grad[0] != 0


@pytest.mark.parametrize("method", ["l0", "variational", "gmp", "smallify"])
def test_fold_state_dict_matches_eval_output(method):
    torch.manual_seed(3)
    layer, view = layer_with(weight=torch.randn(12, 9), method=method, gmp_sparsity=0.5, gmp_steps=1,
                             gmp_interval=1)
    with torch.no_grad():
        if method == "l0":
            view.log_alpha.normal_(0.0, 3.0)
        elif method == "variational":
            view.log_sigma2.normal_(0.0, 3.0)
        elif method == "smallify":
            view.switch.normal_(0.0, 1.0)
            view.pruned[::3] = True
    view.set_num_updates(5)
    layer.train()(torch.randn(1, 9))
    state = layer.state_dict()
    folded = fold_state_dict(state)
    assert list(folded) == ["weight", "bias"]
    assert not torch.equal(folded["weight"], state["weight"])
    plain = nn.Linear(9, 12)
    plain.load_state_dict(folded)
    x = torch.randn(4, 9)
    assert torch.equal(layer.eval()(x), plain(x))
    assert (folded["weight"] == 0).any()


def test_shared_weight_gets_one_view_and_views_are_removable():
    embed = nn.Embedding(10, 4)
    proj = nn.Linear(4, 10, bias=False)
    proj.weight = embed.weight
    model = nn.ModuleDict({"embed": embed, "proj": proj})
    views = apply_baseline(model, BaselineConfig(method="l0"), lambda name, m: True)
    assert views["embed"] is views["proj"] and len(views_of(model)) == 2
    assert sum(1 for _ in model.parameters()) == 2  # the weight and one log_alpha
    remove_views(model)
    assert not views_of(model)


@pytest.mark.parametrize("bad", [dict(method="magic"), dict(method="l0", l0_form="row"),
                                 dict(method="dropout", drop_rate=1.5), dict(method="l1", l1_coef=-1.0),
                                 dict(method="gmp", gmp_interval=0), dict(method="vd", vd_coef=float("nan"))])
def test_bad_config_is_rejected(bad):
    with pytest.raises(ValueError):
        BaselineConfig(**bad)


@pytest.mark.parametrize("name, value", [("smallify_coef", -1.0), ("smallify_coef", float("nan")),
                                         ("smallify_momentum", 1.0), ("smallify_momentum", -0.1),
                                         ("smallify_threshold", 0.0), ("smallify_threshold", float("nan"))])
def test_bad_smallify_config_is_rejected_naming_the_field(name, value):
    with pytest.raises(ValueError, match=f"^{name} must be"):
        BaselineConfig(method="smallify", **{name: value})


def test_l0_gate_is_a_weight_view_module():
    assert isinstance(layer_with(method="l0")[1], L0Gate)
    assert isinstance(layer_with(method="gmp")[1], GradualMagnitudePruning)
    assert isinstance(layer_with(method="smallify")[1], Smallify)


@pytest.mark.parametrize("method", ["l1", "l0", "variational"])
def test_penalties_do_not_overflow_in_half_precision(method):
    layer, view = layer_with(weight=torch.ones(300, 300), method=method, l1_coef=1.0, l0_coef=1.0, vd_coef=1.0)
    layer.half()
    term = view.regularization_loss()
    assert term.dtype == torch.float32 and torch.isfinite(term) and term.item() > 65504
    assert layer.eval()(torch.ones(1, 300, dtype=torch.half)).isfinite().all()


def test_baselines_import_no_fairseq():
    import subprocess
    import sys
    code = "import sys, td_fairseq.sparsity.baselines; sys.exit(1 if 'fairseq' in sys.modules else 0)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
