"""Accuracy, and accuracy against one-shot pruning of the TD-target weights.

Pruning reads the raw weights (never the TD view), zeroes a copy with ``PruneRanking``
and evaluates the model with those weights and no TD mask; the original weights are
put back afterwards. So the 0 % row is the full-weight model.
"""
import torch
from torch import nn

from ..sparsity import PruneRanking, check_sparsity, sparsity_report
from .checkpoint import load_checkpoint
from .data import load_dataset
from .resnet import td_selector


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1000) -> float:
    """Top-1 accuracy in %, in eval mode (batch norm uses running statistics)."""
    was_training = model.training
    model.eval()
    correct = 0
    for first in range(0, len(y), batch_size):
        logits = model(x[first:first + batch_size])
        correct += int((logits.argmax(dim=1) == y[first:first + batch_size]).sum())
    model.train(was_training)
    return 100.0 * correct / max(1, len(y))


def selected_weights(model: nn.Module, select) -> dict:
    """{'<module>.weight': raw weight parameter} for every module ``select`` chooses.

    Reads ``_parameters`` so that a module with TD attached yields its raw weight.
    """
    out = {}
    for name, module in model.named_modules():
        weight = module._parameters.get("weight") if hasattr(module, "_parameters") else None
        if weight is not None and weight.dim() >= 2 and select(name, module):
            out[f"{name}.weight"] = weight
    if not out:
        raise ValueError("no weights selected for pruning")
    return out


def accuracy_vs_sparsity(model: nn.Module, x: torch.Tensor, y: torch.Tensor, select, levels,
                         mode: str = "weight", scope: str = "unit") -> list:
    """One row per sparsity level: requested and measured sparsity, accuracy (%), and
    the sparsity of each pruned tensor. The model is unchanged on return."""
    levels = [check_sparsity(s) for s in levels]
    weights = selected_weights(model, select)
    originals = {name: w.detach().clone() for name, w in weights.items()}
    ranking = PruneRanking(originals, mode, scope)
    rows = []
    try:
        for level in levels:
            pruned = ranking.prune(originals, level)
            with torch.no_grad():
                for name, w in weights.items():
                    w.copy_(pruned[name])
            report = sparsity_report(pruned)
            rows.append({"mode": mode, "scope": scope, "requested_sparsity": level,
                         "measured_sparsity": report["global"], "accuracy": accuracy(model, x, y),
                         "per_layer_sparsity": report["per_tensor"]})
    finally:
        with torch.no_grad():
            for name, w in weights.items():
                w.copy_(originals[name])
    return rows


def sweep_checkpoints(paths, labels, levels, mode: str = "weight", scope: str = "unit",
                      data_dir: str = None, download: bool = False) -> list:
    """accuracy_vs_sparsity for each checkpoint, on the test split of the data set it was
    trained on. Every checkpoint and level is checked before any evaluation starts."""
    if len(paths) != len(labels):
        raise ValueError(f"{len(paths)} checkpoints but {len(labels)} labels")
    levels = [check_sparsity(s) for s in levels]
    loaded = [load_checkpoint(p) for p in paths]
    datasets, rows = {}, []
    for path, label, (model, checkpoint) in zip(paths, labels, loaded):
        name = checkpoint["dataset"]
        if name not in datasets:
            datasets[name] = load_dataset(name, data_dir, download)
        data = datasets[name]
        for row in accuracy_vs_sparsity(model, data.test_x, data.test_y, td_selector, levels, mode, scope):
            rows.append({"label": label, "checkpoint": path, **row, "dataset": name, "td": checkpoint["td"],
                         "evaluation": "pruned raw weights, no TD mask (0 % = full weights)"})
    return rows
