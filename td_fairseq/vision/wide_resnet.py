"""Wide ResNets (Zagoruyko and Komodakis 2016), as in their reference code: WRN-d-k has
three groups of n = (d - 4) / 6 pre-activation basic blocks of 16k, 32k and 64k filters.

A block is BN-ReLU-conv3x3-BN-ReLU-(dropout)-conv3x3; where the shape changes, a 1x1 conv
on the pre-activated input is the shortcut. WRN-28-10 is ``WideResNet(4, (16, 32, 64), 10)``
(36.5M parameters for CIFAR-10). The layout follows ``resnet.ResNet``: ``stem``,
``stages.S.B.{conv1,conv2,shortcut}``, ``final_bn``, ``fc``, so the TD rule is the same.
"""
from torch import nn
from torch.nn import functional as F

from .resnet import conv3x3, kaiming_init


class WideBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, stride: int, dropout: float):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = conv3x3(in_channels, out_channels, stride)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.dropout = dropout
        self.conv2 = conv3x3(out_channels, out_channels)
        self.shortcut = None
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)

    def forward(self, x):
        activated = F.relu(self.bn1(x))
        out = self.conv1(activated)
        out = F.relu(self.bn2(out))
        if self.dropout > 0:
            out = F.dropout(out, self.dropout, self.training)
        out = self.conv2(out)
        return out + (x if self.shortcut is None else self.shortcut(activated))

    def extra_repr(self) -> str:
        return f"dropout={self.dropout}"


class WideResNet(nn.Module):
    """``blocks`` per group (depth 6 * blocks + 4), base widths times ``width_factor``."""

    def __init__(self, blocks: int = 4, widths=(16, 32, 64), width_factor: int = 10, dropout: float = 0.0,
                 in_channels: int = 3, num_classes: int = 10):
        super().__init__()
        self.arch = self.canonical(blocks, widths, width_factor, dropout, in_channels, num_classes)
        widths = self.arch["widths"]
        self.stem = conv3x3(in_channels, widths[0])  # 16 filters, not widened, as in the paper
        stages, channels = [], widths[0]
        for index, width in enumerate(widths):
            stage = []
            for block in range(blocks):
                stride = 2 if index > 0 and block == 0 else 1
                stage.append(WideBlock(channels, width * width_factor, stride, dropout))
                channels = width * width_factor
            stages.append(nn.Sequential(*stage))
        self.stages = nn.Sequential(*stages)
        self.final_bn = nn.BatchNorm2d(channels)
        self.fc = nn.Linear(channels, num_classes)
        kaiming_init(self)

    @staticmethod
    def canonical(blocks: int = 4, widths=(16, 32, 64), width_factor: int = 10, dropout: float = 0.0,
                  in_channels: int = 3, num_classes: int = 10) -> dict:
        """The arch dict these arguments build, or ValueError: checks a shape without building it."""
        widths = [int(w) for w in widths]
        if blocks < 1 or not widths or min(widths) < 1 or width_factor < 1 or not 0 <= dropout < 1:
            raise ValueError(f"need blocks >= 1, positive widths and width factor, dropout in [0, 1); got "
                             f"blocks={blocks} widths={widths} width_factor={width_factor} dropout={dropout}")
        return {"name": "wrn28_10", "blocks": int(blocks), "widths": widths, "width_factor": int(width_factor),
                "dropout": float(dropout), "in_channels": int(in_channels), "num_classes": int(num_classes)}

    @staticmethod
    def depth_of(arch: dict) -> int:
        return 2 * arch["blocks"] * len(arch["widths"]) + 4

    @property
    def depth(self) -> int:
        return self.depth_of(self.arch)

    def forward(self, x):
        x = self.stages(self.stem(x))
        x = F.relu(self.final_bn(x))
        return self.fc(x.mean(dim=(2, 3)))
