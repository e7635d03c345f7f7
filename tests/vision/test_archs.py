"""Wide ResNet and bottleneck ResNet: shapes by hand, the TD rule, unit TD, pruning, arch dicts."""
import pytest
import torch
from torch import nn

from td_fairseq.sparsity import TDConfig, apply_targeted_dropout, views_of
from td_fairseq.vision import (ARCHS, BottleneckResNet, WideResNet, accuracy_vs_sparsity, arch_config,
                               build_network, td_selector, title)

TINY = {
    "resnet32": dict(blocks=1, widths=[4, 8, 8]),
    "wrn28_10": dict(blocks=1, widths=[4, 8, 8], width_factor=1),  # WRN-10-1
    "resnet50": dict(blocks=1, widths=[2, 4, 4, 4]),  # one bottleneck per stage, outputs 8/16/16/16
}


def tiny(name, in_channels=3, num_classes=5):
    torch.manual_seed(0)
    return build_network(arch_config(name, in_channels, num_classes, **TINY[name]))


def conv(c_in, c_out, k):
    return c_in * c_out * k * k  # no conv has a bias: batch norm follows (or precedes) each


def bn(c):
    return 2 * c


def wrn_parameters(n=4, k=10, classes=10):
    total, c_in = conv(3, 16, 3), 16
    for width in (16 * k, 32 * k, 64 * k):
        for _ in range(n):
            total += bn(c_in) + conv(c_in, width, 3) + bn(width) + conv(width, width, 3)
            if c_in != width:
                total += conv(c_in, width, 1)  # 1x1 shortcut on the pre-activated input
            c_in = width
    return total + bn(c_in) + c_in * classes + classes


def resnet50_parameters(classes=1000):
    total, c_in = conv(3, 64, 7) + bn(64), 64
    for blocks, width in zip((3, 4, 6, 3), (64, 128, 256, 512)):
        for _ in range(blocks):
            total += conv(c_in, width, 1) + bn(width) + conv(width, width, 3) + bn(width)
            total += conv(width, 4 * width, 1) + bn(4 * width)
            if c_in != 4 * width:
                total += conv(c_in, 4 * width, 1) + bn(4 * width)
            c_in = 4 * width
    return total + c_in * classes + classes


def parameters(arch):
    return sum(p.numel() for p in build_network(arch).parameters())  # built at full size: about 1 s each


def test_full_sizes_match_the_papers():
    assert wrn_parameters() == 36479194  # WRN-28-10, as published (36.5M)
    assert resnet50_parameters() == 25557032  # ResNet-50, as torchvision's
    assert parameters(arch_config("wrn28_10", 3, 10)) == 36479194
    assert parameters(arch_config("resnet50", 3, 1000)) == 25557032
    assert [title(arch_config(name, 3, 10)) for name in ARCHS] == ["ResNet-32", "WRN-28-10", "ResNet-50"]


@pytest.mark.parametrize("name,size", [("resnet32", 8), ("wrn28_10", 8), ("resnet50", 32)])
def test_tiny_variants_run(name, size):
    model = tiny(name)
    assert model(torch.randn(2, 3, size, size)).shape == (2, 5)
    assert model.arch == build_network(model.arch).arch  # the arch dict rebuilds the network


@pytest.mark.parametrize("name", list(ARCHS))
def test_td_targets_every_stage_conv_and_nothing_else(name):
    model = tiny(name)
    convs = {n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    stage_convs = {n for n in convs if n.startswith("stages.")}
    attached = apply_targeted_dropout(model, TDConfig("weight", 0.5, 0.5), td_selector)
    assert set(attached) == stage_convs and convs - stage_convs == {"stem"}
    assert any("shortcut" in n for n in attached)  # 1x1 shortcuts included
    assert not hasattr(model.fc, "td")


@pytest.mark.parametrize("name,size", [("wrn28_10", 8), ("resnet50", 32)])
def test_td_reaches_every_conv_forward(name, size):
    x = torch.randn(3, 3, size, size)
    dense = tiny(name).eval()(x)
    outputs = []
    for eval_mask in (False, True):
        model = tiny(name)
        apply_targeted_dropout(model, TDConfig("weight", 0.9, 1.0, eval_mask=eval_mask), td_selector)
        outputs.append(model.eval()(x))
    assert torch.equal(outputs[0], dense) and not torch.allclose(outputs[1], dense)
    model = tiny(name)
    apply_targeted_dropout(model, TDConfig("weight", 0.5, 1.0), td_selector)
    model.train()(x).sum().backward()
    for module_name, module in views_of(model):
        grad = module._parameters["weight"].grad
        assert grad is not None and (grad == 0).any(), module_name  # dropped weights get no gradient


def test_unit_td_targets_whole_output_channels():
    model = tiny("wrn28_10")
    apply_targeted_dropout(model, TDConfig("unit", 0.5, 1.0), td_selector)
    for name, module in views_of(model):
        rows = module.td.targeted(module._parameters["weight"]).flatten(1)  # one row per output channel
        assert (rows.all(dim=1) | ~rows.any(dim=1)).all(), name
        assert int(rows.all(dim=1).sum()) == module.out_channels // 2, name


@pytest.mark.parametrize("name,size", [("wrn28_10", 8), ("resnet50", 32)])
def test_pruning_sweep_on_each_arch(name, size):
    model = tiny(name)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = torch.randn(6, 3, size, size), torch.randint(0, 5, (6,))
    weight_rows = accuracy_vs_sparsity(model, x, y, td_selector, [0.0, 0.5], "weight", "unit")
    unit_rows = accuracy_vs_sparsity(model, x, y, td_selector, [0.5], "unit", "layer")
    assert weight_rows[0]["measured_sparsity"] == 0 and 0.4 < weight_rows[1]["measured_sparsity"] <= 0.5
    per_layer = unit_rows[0]["per_layer_sparsity"]
    assert "stem.weight" not in per_layer and all(v == pytest.approx(0.5, abs=0.26) for v in per_layer.values())
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_wrn_dropout_acts_in_training_only():
    model = build_network(arch_config("wrn28_10", 3, 5, **dict(TINY["wrn28_10"], dropout=0.5)))
    assert isinstance(model, WideResNet) and model.stages[0][0].dropout == 0.5
    x = torch.randn(2, 3, 8, 8)
    model.eval()
    assert torch.equal(model(x), model(x))
    model.train()
    torch.manual_seed(1)
    first = model(x)
    torch.manual_seed(2)
    assert not torch.allclose(first, model(x))


def test_arch_options_that_do_not_apply_are_refused():
    with pytest.raises(ValueError, match="--width-factor does not apply to --arch resnet32"):
        arch_config("resnet32", 3, 10, width_factor=2)
    with pytest.raises(ValueError, match="one --blocks value"):
        arch_config("wrn28_10", 3, 10, blocks=[1, 2])
    with pytest.raises(ValueError, match="one positive block count per stage"):
        arch_config("resnet50", 3, 10, blocks=[1, 2], widths=[2, 2, 2])
    bottleneck = build_network(arch_config("resnet50", 3, 10, blocks=[1, 2, 1], widths=[2, 2, 2]))
    assert isinstance(bottleneck, BottleneckResNet) and [len(s) for s in bottleneck.stages] == [1, 2, 1]


def test_arch_without_a_name_is_a_cifar_resnet():
    old = {"blocks": 1, "widths": [4, 8, 8], "in_channels": 1, "num_classes": 10}  # version-1 checkpoints
    assert build_network(old).arch == dict(old, name="resnet32")
