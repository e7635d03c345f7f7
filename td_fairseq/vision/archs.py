"""The three architectures by name, the one TD rule for all of them, and arch dicts.

A network records its constructor arguments in ``.arch`` (``name`` included); a checkpoint
stores that dict and ``build_network`` rebuilds the network from it. Checkpoints written
before the name existed hold a CIFAR ResNet, so a missing name means ``resnet32``.
"""
from torch import nn

from .bottleneck import BottleneckResNet
from .resnet import ResNet
from .wide_resnet import WideResNet

# name: (class, defaults of the shape options); depth and widths stay parameters, so that tests
# and small data sets use tiny variants of each
ARCHS = {
    "resnet32": (ResNet, {"blocks": 5, "widths": [16, 32, 64]}),
    "wrn28_10": (WideResNet, {"blocks": 4, "widths": [16, 32, 64], "width_factor": 10, "dropout": 0.0}),
    "resnet50": (BottleneckResNet, {"blocks": [3, 4, 6, 3], "widths": [64, 128, 256, 512]}),
}


def td_selector(name: str, module: nn.Module) -> bool:
    """The paper's ResNet targets: every conv in the residual stages, 1x1 shortcuts
    included; not the stem conv (it sees raw pixels) and not the logits layer ``fc``.
    Every architecture here keeps its residual convs under ``stages``."""
    return isinstance(module, nn.Conv2d) and name.split(".")[0] == "stages"


def arch_config(name: str, in_channels: int, num_classes: int, blocks=None, widths=None,
                width_factor=None, dropout=None) -> dict:
    """The arch dict of ``name`` with the given shape options (None: the arch's default).
    An option that the architecture does not have is refused, not ignored."""
    if name not in ARCHS:
        raise ValueError(f"arch must be one of {', '.join(ARCHS)}, got {name!r}")
    _, defaults = ARCHS[name]
    given = {"blocks": blocks, "widths": widths, "width_factor": width_factor, "dropout": dropout}
    for option, value in given.items():
        if value is not None and option not in defaults:
            raise ValueError(f"--{option.replace('_', '-')} does not apply to --arch {name}")
    arch = {"name": name, **defaults, **{k: v for k, v in given.items() if v is not None},
            "in_channels": int(in_channels), "num_classes": int(num_classes)}
    if isinstance(arch["blocks"], (list, tuple)) and not isinstance(defaults["blocks"], list):
        if len(arch["blocks"]) != 1:
            raise ValueError(f"--arch {name} takes one --blocks value (blocks per stage), got {arch['blocks']}")
        arch["blocks"] = arch["blocks"][0]
    return canonical_arch(arch)  # checked now, before any data is read


def canonical_arch(arch: dict) -> dict:
    """The arch dict the network would record (e.g. resnet50's blocks [1] -> [1, 1, 1, 1]),
    or ValueError; builds nothing."""
    arch = dict(arch)
    cls, _ = ARCHS[arch.pop("name", "resnet32")]
    return cls.canonical(**arch)


def build_network(arch: dict) -> nn.Module:
    arch = dict(arch)
    cls, _ = ARCHS[arch.pop("name", "resnet32")]
    return cls(**arch)


def title(arch: dict) -> str:
    """A short human name: ResNet-32, WRN-28-10, ResNet-50 (or the tiny variant's)."""
    arch = canonical_arch(arch)
    cls, _ = ARCHS[arch["name"]]
    if cls is WideResNet:
        return f"WRN-{cls.depth_of(arch)}-{arch['width_factor']}"
    return f"ResNet-{cls.depth_of(arch)}"
