"""Vision checkpoints: only tensors and plain containers, so the safe loader
(``files.load_torch``, ``weights_only=True``) reads them with no allow-list.

Keys: version, arch (the network's arguments, ``archs.build_network``; no name before
version 2: a CIFAR ResNet), td (TDConfig fields), baseline (BaselineConfig fields, None for
TD models; absent from older checkpoints), train (TrainConfig fields), dataset (its name),
state_dict (TD buffers such as a random-targeted ranking, and the baselines' view state,
included; on the CPU), history, metrics, command, commit. Since version 2 also: data (how
to find the data again: ``describe()`` of the data set), runtime (device, processes, amp,
...) and resume (epoch, update count, optimizer and random state after the last epoch:
what ``--resume`` continues from).
"""
from dataclasses import asdict

from torch import nn

from ..files import UserError, first_line, load_torch
from ..sparsity import TDConfig, apply_targeted_dropout
from ..sparsity.baselines import BaselineConfig, apply_baseline, fold_views
from .archs import build_network, td_selector

VERSION = 2
REQUIRED_KEYS = ("arch", "td", "state_dict")
EXPECTED = "a vision checkpoint written by scripts/vision_train.py (keys arch, td, state_dict)"


def build_model(arch: dict, td: TDConfig = None, baseline: BaselineConfig = None) -> nn.Module:
    """The network ``arch`` describes, with ``baseline``'s views on the TD targets if given,
    else with ``td``."""
    model = build_network(arch)
    if baseline is not None:
        apply_baseline(model, baseline, td_selector)
    elif td is not None and td.td_type != "none":
        apply_targeted_dropout(model, td, td_selector)
    return model


def make_checkpoint(model: nn.Module, td: TDConfig, train: dict, dataset: str, history: list,
                    metrics: dict, command: str, commit: str, baseline: BaselineConfig = None,
                    extra: dict = None) -> dict:
    state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
    return {"version": VERSION, "arch": dict(model.arch), "td": asdict(td),
            "baseline": None if baseline is None else asdict(baseline), "train": dict(train),
            "dataset": dataset, "state_dict": state, "history": list(history), "metrics": dict(metrics),
            "command": command, "commit": commit, **(extra or {})}


def describe(content) -> str:
    """What a torch file holds, in a few words, for an error message."""
    if isinstance(content, dict) and "model" in content and ("cfg" in content or "args" in content):
        return "a fairseq translation checkpoint"
    if isinstance(content, dict):
        keys = sorted(str(k) for k in content)
        return f"a torch file with keys {', '.join(keys[:6])}{', ...' if len(keys) > 6 else ''}"
    return f"a torch file holding a {type(content).__name__}"


def read_checkpoint(path: str) -> dict:
    """The checkpoint dict, or one line saying what the file is instead."""
    content = load_torch(path)
    if not (isinstance(content, dict) and all(key in content for key in REQUIRED_KEYS)):
        raise UserError(f"cannot load checkpoint {path}: it is {describe(content)}; expected {EXPECTED}")
    return content


def load_checkpoint(path: str, with_td: bool = False):
    """(model, checkpoint). The model has no TD or view attached unless ``with_td``: pruning
    sweeps evaluate raw weights. The TD buffers are then simply not loaded, while a
    baseline's views are folded into the weights first (``fold_views``), so the sweep
    prunes what the method trained, as the Transformer sweep does."""
    checkpoint = read_checkpoint(path)
    try:
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
    except (KeyError, TypeError, ValueError, RuntimeError) as error:  # a damaged or hand-edited checkpoint
        raise UserError(f"cannot load checkpoint {path}: {type(error).__name__}: {first_line(error)}") from None
    return model, checkpoint
