"""Vision checkpoints: only tensors and plain containers, so ``torch.load`` with its safe
default (``weights_only=True``) reads them with no allow-list.

Keys: version, arch (ResNet arguments), td (TDConfig fields), baseline (BaselineConfig
fields, None for TD models; absent from older checkpoints), train (TrainConfig fields),
dataset, state_dict (TD buffers such as a random-targeted ranking, and the baselines' view
state, included), history, metrics, command, commit.
"""
import io
import os
from dataclasses import asdict

import torch
from torch import nn

from ..files import atomic_write
from ..files import UserError
from ..sparsity import TDConfig, apply_targeted_dropout, remove_views
from ..sparsity.baselines import BaselineConfig, apply_baseline, fold_state_dict
from .resnet import ResNet, td_selector

VERSION = 1


class CheckpointError(UserError):
    """A checkpoint that is missing or unreadable; the message is one line."""


def build_model(arch: dict, td: TDConfig = None, baseline: BaselineConfig = None) -> nn.Module:
    """A ResNet with ``baseline``'s views on the TD targets if given, else with ``td``."""
    model = ResNet(arch["blocks"], arch["widths"], arch["in_channels"], arch["num_classes"])
    if baseline is not None:
        apply_baseline(model, baseline, td_selector)
    elif td is not None and td.td_type != "none":
        apply_targeted_dropout(model, td, td_selector)
    return model


def make_checkpoint(model: ResNet, td: TDConfig, train: dict, dataset: str, history: list,
                    metrics: dict, command: str, commit: str, baseline: BaselineConfig = None) -> dict:
    return {"version": VERSION, "arch": dict(model.arch), "td": asdict(td),
            "baseline": None if baseline is None else asdict(baseline), "train": dict(train),
            "dataset": dataset, "state_dict": {k: v.detach().clone() for k, v in model.state_dict().items()},
            "history": list(history), "metrics": dict(metrics), "command": command, "commit": commit}


def fold_views(model: nn.Module) -> nn.Module:
    """Make the baselines' views permanent in plain weights and detach every view."""
    folded = fold_state_dict({k: v.detach().clone() for k, v in model.state_dict().items()})
    remove_views(model)
    model.load_state_dict({k: folded[k] for k in model.state_dict()})
    return model


def save_checkpoint(path: str, checkpoint: dict) -> None:
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    atomic_write(path, buffer.getvalue())


def load_checkpoint(path: str, with_td: bool = False):
    """(model, checkpoint). The model has no TD or view attached unless ``with_td``: pruning
    sweeps evaluate raw weights. The TD buffers are then simply not loaded, while a
    baseline's views are folded into the weights first (``fold_state_dict``), so the sweep
    prunes what the method trained, as the Transformer sweep does."""
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        td = TDConfig(**checkpoint["td"])
        baseline = checkpoint.get("baseline")  # absent before the baselines came to vision
        if baseline is not None:
            model = build_model(checkpoint["arch"], baseline=BaselineConfig(**baseline))
            model.load_state_dict(checkpoint["state_dict"])  # strictly, view state included
            if not with_td:
                fold_views(model)
        else:
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
