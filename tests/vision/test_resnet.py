import torch

from td_fairseq.sparsity import TDConfig, apply_targeted_dropout
from td_fairseq.vision import ResNet, resnet32, td_selector


def conv(c_in, c_out, k):
    return c_in * c_out * k * k  # convs have no bias: batch norm follows each


def bn(c):
    return 2 * c  # scale and shift; running statistics are buffers, not parameters


def expected_resnet32_parameters():
    stem = conv(3, 16, 3) + bn(16)
    total, c_in = stem, 16
    for width in (16, 32, 64):
        for block in range(5):
            total += conv(c_in, width, 3) + bn(width) + conv(width, width, 3) + bn(width)
            if c_in != width:
                total += conv(c_in, width, 1) + bn(width)  # 1x1 shortcut where the shape changes
            c_in = width
    return total + 64 * 10 + 10  # classifier


def test_resnet32_parameter_count_by_hand():
    assert expected_resnet32_parameters() == 466906
    model = resnet32()
    assert sum(p.numel() for p in model.parameters()) == 466906
    assert model.depth == 32


def test_output_shapes():
    assert resnet32()(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    small = ResNet(blocks=1, widths=(4, 8, 8), in_channels=1, num_classes=7)
    assert small(torch.randn(3, 1, 8, 8)).shape == (3, 7)
    assert small.depth == 8


def test_td_targets_exactly_the_block_convs_and_shortcuts():
    model = resnet32()
    attached = apply_targeted_dropout(model, TDConfig("weight", 0.5, 0.5), td_selector)
    expected = {f"stages.{s}.{b}.conv{i}" for s in range(3) for b in range(5) for i in (1, 2)}
    expected |= {"stages.1.0.shortcut.conv", "stages.2.0.shortcut.conv"}
    assert set(attached) == expected
    assert model.stages[1][0].shortcut.conv.kernel_size == (1, 1)
    assert stage_one_has_no_shortcut(model)
    # The stem conv and the classifier are left alone.
    assert "stem" not in attached and "fc" not in attached
    assert not hasattr(model.stem, "td") and not hasattr(model.fc, "td")


def stage_one_has_no_shortcut(model):
    return all(block.shortcut is None for block in model.stages[0])


def test_td_keeps_state_dict_keys():
    plain = set(resnet32().state_dict())
    model = resnet32()
    apply_targeted_dropout(model, TDConfig("weight", 0.5, 0.5), td_selector)
    assert set(model.state_dict()) == plain


def test_td_reaches_the_conv_forward():
    x = torch.randn(5, 1, 8, 8)
    outputs = []
    for config in (None, TDConfig("weight", 0.9, 1.0), TDConfig("weight", 0.9, 1.0, eval_mask=True)):
        torch.manual_seed(0)
        model = ResNet(blocks=1, widths=(4, 8, 8), in_channels=1)
        if config is not None:
            apply_targeted_dropout(model, config, td_selector)
        outputs.append(model.eval()(x))  # eval() after attaching: controllers start in train mode
    dense, td_full_weights, td_masked = outputs
    assert torch.equal(td_full_weights, dense)  # eval without the mask: the identity
    assert not torch.allclose(td_masked, dense)  # the convs read the masked weight
