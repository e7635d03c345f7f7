import pytest
import torch

from td_fairseq.sparsity import TDConfig, apply_targeted_dropout
from td_fairseq.vision import (ResNet, TrainConfig, accuracy, accuracy_vs_sparsity, load_digits,
                               mlp_selector, one_hidden_layer_mlp, recalibrate_batch_norm, selected_weights,
                               step_lr, td_selector, train)


@pytest.fixture(scope="module")
def digits():
    return load_digits()


def test_step_lr_divides_at_the_milestones():
    lrs = [step_lr(s, 100, 0.4, (0.5, 0.75), 0.1) for s in (0, 49, 50, 74, 75, 99)]
    assert lrs == pytest.approx([0.4, 0.4, 0.04, 0.04, 0.004, 0.004])


def test_training_learns_and_ramps_td(digits):
    torch.manual_seed(0)  # the initial weights; 4 epochs reach 80 to 91 % depending on them
    model = one_hidden_layer_mlp(64, 10, 10)
    controllers = apply_targeted_dropout(model, TDConfig("weight", 0.5, 0.5, ramp_updates=20), mlp_selector)
    assert accuracy(model, digits.test_x, digits.test_y) < 40
    history = train(model, digits, TrainConfig(epochs=4, lr=0.1, label_smoothing=0.0))
    assert [h["epoch"] for h in history] == [1, 2, 3, 4]
    assert history[-1]["updates"] == 4 * 12  # ceil(1437 / 128) updates per epoch
    assert history[-1]["test_accuracy"] > 80
    assert controllers["hidden"].num_updates == 48  # the loop told the controller
    assert controllers["hidden"].rates == (0.5, 0.5)  # ramp done after 2R = 40 updates


class UpdateRecorder(torch.nn.Module):
    """Stands in for a TD controller: records every update count it is told."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def set_num_updates(self, num_updates):
        self.seen.append(num_updates)

    def forward(self, x):  # appended to the Sequential: passes the logits through
        return x


def test_every_step_tells_controllers_the_update_count(digits):
    model = one_hidden_layer_mlp(64, 10, 10)
    model.add_module("recorder", UpdateRecorder())
    train(model, digits, TrainConfig(epochs=2, batch_size=512))  # 3 updates per epoch
    assert model.recorder.seen == [0, 1, 2, 3, 3, 4, 5, 6]  # before each update, and after each epoch


def test_bad_training_settings_are_rejected():
    with pytest.raises(ValueError, match="epochs"):
        TrainConfig(epochs=0)
    with pytest.raises(ValueError, match="lr"):
        TrainConfig(lr=-1.0)


def test_accuracy_vs_sparsity_prunes_only_the_targets_and_restores(digits):
    torch.manual_seed(0)
    model = ResNet(blocks=1, widths=(4, 8, 8), in_channels=1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = digits.test_x[:50], digits.test_y[:50]
    rows = accuracy_vs_sparsity(model, x, y, td_selector, [0.0, 0.5, 0.9], "weight", "unit")
    assert [r["requested_sparsity"] for r in rows] == [0.0, 0.5, 0.9]
    assert rows[0]["accuracy"] == accuracy(model, x, y) and rows[0]["measured_sparsity"] == 0.0
    targets = selected_weights(model, td_selector)
    sizes = {name: w[0].numel() for name, w in targets.items()}  # weights per unit
    for row, s in zip(rows[1:], (0.5, 0.9)):
        expected = sum(int(s * n) * targets[name].shape[0] for name, n in sizes.items())
        total = sum(w.numel() for w in targets.values())
        assert row["measured_sparsity"] == pytest.approx(expected / total)
    assert "stem.weight" not in rows[1]["per_layer_sparsity"]
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_unit_pruning_removes_whole_filters(digits):
    torch.manual_seed(0)
    model = ResNet(blocks=1, widths=(4, 8, 8), in_channels=1)
    rows = accuracy_vs_sparsity(model, digits.test_x[:20], digits.test_y[:20], td_selector, [0.5], "unit", "layer")
    per_layer = rows[0]["per_layer_sparsity"]
    assert per_layer["stages.0.0.conv1.weight"] == 0.5  # 2 of 4 filters
    assert per_layer["stages.2.0.shortcut.conv.weight"] == 0.5  # 4 of 8 filters


def test_recalibration_sets_batch_statistics_and_the_sweep_restores_them(digits):
    torch.manual_seed(0)
    model = ResNet(blocks=1, widths=(4, 8, 8), in_channels=1).eval()
    x = digits.train_x[:100]
    with torch.no_grad():
        model.stem_bn.running_var.fill_(100.0)  # stale statistics, as after TD training
        stem_out = model.stem(x)
    stale = {k: v.clone() for k, v in model.state_dict().items()}
    recalibrate_batch_norm(model, x, batch_size=100)  # one batch: the statistics are exact
    assert not model.training and model.stem_bn.momentum == 0.1
    assert torch.allclose(model.stem_bn.running_mean, stem_out.mean(dim=(0, 2, 3)), atol=1e-5)
    assert torch.allclose(model.stem_bn.running_var, stem_out.var(dim=(0, 2, 3)), atol=1e-4)
    model.load_state_dict(stale)
    x_test, y_test = digits.test_x[:50], digits.test_y[:50]
    rows = accuracy_vs_sparsity(model, x_test, y_test, td_selector, [0.0], calibration_x=x)
    recalibrate_batch_norm(model, x)
    assert rows[0]["accuracy"] == accuracy(model, x_test, y_test)
    model.load_state_dict(stale)
    accuracy_vs_sparsity(model, x_test, y_test, td_selector, [0.0, 0.5], calibration_x=x)
    for key, value in model.state_dict().items():
        assert torch.equal(value, stale[key]), key  # buffers put back too


def test_sweep_refuses_a_model_with_td_attached(digits):
    model = ResNet(blocks=1, widths=(4, 8, 8), in_channels=1)
    apply_targeted_dropout(model, TDConfig("weight", 0.5, 0.5), td_selector)
    with pytest.raises(ValueError, match="remove targeted dropout"):
        accuracy_vs_sparsity(model, digits.test_x[:10], digits.test_y[:10], td_selector, [0.5])


def test_levels_in_any_order_each_prune_the_original_weights(digits):
    torch.manual_seed(0)
    model = ResNet(blocks=1, widths=(4, 8, 8), in_channels=1)
    x, y = digits.test_x[:30], digits.test_y[:30]
    down = accuracy_vs_sparsity(model, x, y, td_selector, [0.9, 0.0, 0.5])
    up = accuracy_vs_sparsity(model, x, y, td_selector, [0.0, 0.5, 0.9])
    assert [r["measured_sparsity"] for r in down] == [up[2]["measured_sparsity"], 0.0, up[1]["measured_sparsity"]]
    assert [r["accuracy"] for r in down] == [up[2]["accuracy"], up[0]["accuracy"], up[1]["accuracy"]]


def test_bf16_autocast_trains_on_the_cpu_with_fp32_weights(digits):
    from td_fairseq.vision import Runtime
    torch.manual_seed(0)
    model = one_hidden_layer_mlp(64, 10, 10)
    apply_targeted_dropout(model, TDConfig("weight", 0.5, 0.5), mlp_selector)
    history = train(model, digits, TrainConfig(epochs=4, lr=0.1, label_smoothing=0.0),
                    runtime=Runtime(device="cpu", amp="bf16"))
    assert history[-1]["test_accuracy"] > 80
    assert {p.dtype for p in model.parameters()} == {torch.float32}
