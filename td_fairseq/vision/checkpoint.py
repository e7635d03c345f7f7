"""Vision checkpoints: only tensors and plain containers, so ``torch.load`` with its safe
default (``weights_only=True``) reads them with no allow-list.

Keys: version, arch (ResNet arguments), td (TDConfig fields), train (TrainConfig fields),
dataset, state_dict (TD buffers such as a random-targeted ranking included), history,
metrics, command, commit.
"""
import io
import os
from dataclasses import asdict

import torch
from torch import nn

from ..results import atomic_write
from ..cli import UserError
from ..sparsity import TDConfig, apply_targeted_dropout
from .resnet import ResNet, td_selector

VERSION = 1


class CheckpointError(UserError):
    """A checkpoint that is missing or unreadable; the message is one line."""


def build_model(arch: dict, td: TDConfig = None) -> nn.Module:
    model = ResNet(arch["blocks"], arch["widths"], arch["in_channels"], arch["num_classes"])
    if td is not None and td.td_type != "none":
        apply_targeted_dropout(model, td, td_selector)
    return model


def make_checkpoint(model: ResNet, td: TDConfig, train: dict, dataset: str, history: list,
                    metrics: dict, command: str, commit: str) -> dict:
    return {"version": VERSION, "arch": dict(model.arch), "td": asdict(td), "train": dict(train),
            "dataset": dataset, "state_dict": {k: v.detach().clone() for k, v in model.state_dict().items()},
            "history": list(history), "metrics": dict(metrics), "command": command, "commit": commit}


def save_checkpoint(path: str, checkpoint: dict) -> None:
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    atomic_write(path, buffer.getvalue())


def load_checkpoint(path: str, with_td: bool = False):
    """(model, checkpoint). The model has no TD attached unless ``with_td``: pruning
    sweeps evaluate raw weights. The TD buffers are then simply not loaded."""
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        td = TDConfig(**checkpoint["td"])
        model = build_model(checkpoint["arch"], td if with_td else None)
        state = checkpoint["state_dict"]
        if not with_td:
            state = {k: v for k, v in state.items() if ".td." not in k}
        model.load_state_dict(state)
    except CheckpointError:
        raise
    except Exception as e:  # any unreadable file is one user-facing line, not a traceback
        message = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise CheckpointError(f"cannot load checkpoint {path}: {type(e).__name__}: {message}") from None
    return model, checkpoint
