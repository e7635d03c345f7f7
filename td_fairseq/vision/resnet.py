"""CIFAR ResNets (He et al. 2016) as in the paper's official code: ResNet-32 is 3 stages
of 5 basic blocks with 16/32/64 filters, and a 1x1 conv (plus batch norm) on the shortcut
wherever the shape changes. Depth and widths are parameters so that a small variant fits
the 8x8 digits.

Layout (the names matter: ``archs.td_selector`` chooses TD targets by them):
``stem`` (first 3x3 conv) -> ``stem_bn`` -> ``stages.S.B.{conv1,conv2,shortcut.conv}``
-> global average pool -> ``fc`` (the logits layer).
"""
from collections import OrderedDict

from torch import nn
from torch.nn import functional as F


def kaiming_init(model: nn.Module) -> None:
    """He et al.'s initialisation of every conv (fan out), as the reference ResNets do."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")


def conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    # No bias: every conv is followed by batch norm, whose shift plays that role.
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)


def projection_shortcut(in_channels: int, out_channels: int, stride: int = 1):
    """A 1x1 conv and batch norm where the shape changes (a TD target like any stage conv), else None."""
    if stride == 1 and in_channels == out_channels:
        return None
    return nn.Sequential(OrderedDict(conv=nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                                     bn=nn.BatchNorm2d(out_channels)))


class BasicBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        self.conv1 = conv3x3(in_channels, out_channels, stride)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = conv3x3(out_channels, out_channels)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut = projection_shortcut(in_channels, out_channels, stride)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + (x if self.shortcut is None else self.shortcut(x)))


class ResNet(nn.Module):
    """``blocks`` basic blocks per stage; stage i has ``widths[i]`` filters and, after
    the first stage, halves the resolution in its first block."""

    def __init__(self, blocks: int = 5, widths=(16, 32, 64), in_channels: int = 3, num_classes: int = 10):
        super().__init__()
        self.arch = self.canonical(blocks, widths, in_channels, num_classes)
        widths = self.arch["widths"]
        self.stem = conv3x3(in_channels, widths[0])
        self.stem_bn = nn.BatchNorm2d(widths[0])
        stages, channels = [], widths[0]
        for index, width in enumerate(widths):
            stage = []
            for block in range(blocks):
                stride = 2 if index > 0 and block == 0 else 1
                stage.append(BasicBlock(channels, width, stride))
                channels = width
            stages.append(nn.Sequential(*stage))
        self.stages = nn.Sequential(*stages)
        self.fc = nn.Linear(channels, num_classes)
        kaiming_init(self)

    @staticmethod
    def canonical(blocks: int = 5, widths=(16, 32, 64), in_channels: int = 3, num_classes: int = 10) -> dict:
        """The arch dict these arguments build, or ValueError: checks a shape without building it."""
        widths = [int(w) for w in widths]
        if blocks < 1 or not widths or min(widths) < 1:
            raise ValueError(f"need blocks >= 1 and positive widths, got blocks={blocks} widths={widths}")
        return {"name": "resnet32", "blocks": int(blocks), "widths": widths, "in_channels": int(in_channels),
                "num_classes": int(num_classes)}

    @staticmethod
    def depth_of(arch: dict) -> int:
        """6n + 2 layers with weights on the main path: ResNet-32 has n = 5."""
        return 2 * arch["blocks"] * len(arch["widths"]) + 2

    @property
    def depth(self) -> int:
        return self.depth_of(self.arch)

    def forward(self, x):
        x = F.relu(self.stem_bn(self.stem(x)))
        x = self.stages(x)
        return self.fc(x.mean(dim=(2, 3)))


def resnet32(in_channels: int = 3, num_classes: int = 10) -> ResNet:
    return ResNet(5, (16, 32, 64), in_channels, num_classes)
