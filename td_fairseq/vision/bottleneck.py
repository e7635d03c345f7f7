"""ImageNet ResNets with bottleneck blocks (He et al. 2016): ResNet-50 is a 7x7 stride-2
stem conv, 3x3 stride-2 max pool, then stages of [3, 4, 6, 3] bottlenecks of base width
64/128/256/512 (output 4x the base width), global average pool and the logits layer.

A bottleneck is 1x1 -> 3x3 (carrying the stride, as torchvision's "v1.5") -> 1x1 convs,
each followed by batch norm; a 1x1 conv plus batch norm is the shortcut wherever the shape
changes. The layout follows ``resnet.ResNet`` (``stem``, ``stem_bn``,
``stages.S.B.{conv1,conv2,conv3,shortcut.conv}``, ``fc``), so the TD rule is the same.
"""

from torch import nn
from torch.nn import functional as F

from .resnet import conv3x3, kaiming_init, projection_shortcut

EXPANSION = 4


class Bottleneck(nn.Module):
    def __init__(self, in_channels: int, width: int, stride: int = 1):
        super().__init__()
        out_channels = width * EXPANSION
        self.conv1 = nn.Conv2d(in_channels, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = conv3x3(width, width, stride)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.shortcut = projection_shortcut(in_channels, out_channels, stride)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + (x if self.shortcut is None else self.shortcut(x)))


class BottleneckResNet(nn.Module):
    """``blocks[i]`` bottlenecks in stage i (one number: the same in every stage); stage i
    has base width ``widths[i]`` and, after the first stage, halves the resolution."""

    def __init__(self, blocks=(3, 4, 6, 3), widths=(64, 128, 256, 512), in_channels: int = 3,
                 num_classes: int = 1000):
        super().__init__()
        self.arch = self.canonical(blocks, widths, in_channels, num_classes)
        blocks, widths = self.arch["blocks"], self.arch["widths"]
        self.stem = nn.Conv2d(in_channels, widths[0], 7, stride=2, padding=3, bias=False)
        self.stem_bn = nn.BatchNorm2d(widths[0])
        stages, channels = [], widths[0]
        for index, (count, width) in enumerate(zip(blocks, widths)):
            stage = []
            for block in range(count):
                stride = 2 if index > 0 and block == 0 else 1
                stage.append(Bottleneck(channels, width, stride))
                channels = width * EXPANSION
            stages.append(nn.Sequential(*stage))
        self.stages = nn.Sequential(*stages)
        self.fc = nn.Linear(channels, num_classes)
        kaiming_init(self)

    @staticmethod
    def canonical(blocks=(3, 4, 6, 3), widths=(64, 128, 256, 512), in_channels: int = 3,
                  num_classes: int = 1000) -> dict:
        """The arch dict these arguments build, or ValueError: checks a shape without building it."""
        widths = [int(w) for w in widths]
        blocks = [int(b) for b in blocks] if isinstance(blocks, (list, tuple)) else [int(blocks)]
        if len(blocks) == 1:
            blocks = blocks * len(widths)
        if not widths or min(widths) < 1 or len(blocks) != len(widths) or min(blocks) < 1:
            raise ValueError(f"need positive widths and one positive block count per stage (or one for all); "
                             f"got blocks={blocks} widths={widths}")
        return {"name": "resnet50", "blocks": blocks, "widths": widths, "in_channels": int(in_channels),
                "num_classes": int(num_classes)}

    @staticmethod
    def depth_of(arch: dict) -> int:
        """3 convs per bottleneck, plus the stem and the logits layer: ResNet-50 has 50."""
        return 3 * sum(arch["blocks"]) + 2

    @property
    def depth(self) -> int:
        return self.depth_of(self.arch)

    def forward(self, x):
        x = F.relu(self.stem_bn(self.stem(x)))
        x = F.max_pool2d(x, 3, stride=2, padding=1)
        x = self.stages(x)
        return self.fc(x.mean(dim=(2, 3)))
