"""Accuracy, and accuracy against one-shot pruning of the TD-target weights.

Pruning reads the raw weights (never the TD view), zeroes a copy with ``PruneRanking``
and evaluates the model with those weights and no TD mask; the original weights are
put back afterwards. So the 0 % row is the full-weight model. A baseline's checkpoint is
loaded with its views folded into the weights (``load_checkpoint``), so for it the raw
weights are the folded ones and the 0 % row is its eval-mode model.

Batch norm keeps running statistics gathered while TD was dropping weights, which do
not match the full or the pruned network (no rescaling makes the activations' scale
depend on what is dropped). The paper's protocol evaluates as is; optionally the
statistics are recomputed from training images before each evaluation (no gradient
step, no weight changes): ``calibration_x``.
"""
import torch
from torch import nn

from ..sparsity import PruneRanking, check_sparsity, sparsity_report, views_of
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


@torch.no_grad()
def recalibrate_batch_norm(model: nn.Module, x: torch.Tensor, batch_size: int = 256) -> None:
    """Replace every batch norm's running statistics by their average over ``x``."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over the batches, not an EMA
    was_training = model.training
    model.train()
    for first in range(0, len(x), batch_size):
        model(x[first:first + batch_size])
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    model.train(was_training)


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
                         mode: str = "weight", scope: str = "unit", calibration_x: torch.Tensor = None) -> list:
    """One row per sparsity level: requested and measured sparsity, accuracy (%), and
    the sparsity of each pruned tensor. With ``calibration_x``, batch-norm statistics
    are recomputed from those images at each level. The model is unchanged on return."""
    if views_of(model):
        # Calibration runs in train mode, where TD would drop weights; and the sweep
        # means to measure the pruned weights alone.
        raise ValueError("remove targeted dropout (remove_views) before a pruning sweep")
    levels = [check_sparsity(s) for s in levels]
    weights = selected_weights(model, select)
    originals = {name: w.detach().clone() for name, w in weights.items()}
    buffers = {name: b.clone() for name, b in model.named_buffers()}
    ranking = PruneRanking(originals, mode, scope)
    rows = []
    try:
        for level in levels:
            pruned = ranking.prune(originals, level)
            with torch.no_grad():
                for name, w in weights.items():
                    w.copy_(pruned[name])
            if calibration_x is not None:
                recalibrate_batch_norm(model, calibration_x)
            report = sparsity_report(pruned)
            rows.append({"mode": mode, "scope": scope, "requested_sparsity": level,
                         "measured_sparsity": report["global"], "accuracy": accuracy(model, x, y),
                         "per_layer_sparsity": report["per_tensor"]})
    finally:
        with torch.no_grad():
            for name, w in weights.items():
                w.copy_(originals[name])
            for name, b in model.named_buffers():
                b.copy_(buffers[name])
    return rows


def sweep_checkpoints(paths, labels, levels, mode: str = "weight", scope: str = "unit",
                      data_dir: str = None, download: bool = False, calibration_images: int = 0) -> list:
    """accuracy_vs_sparsity for each checkpoint, on the test split of the data set it was
    trained on. Every checkpoint and level is checked before any evaluation starts.
    ``calibration_images`` > 0 recomputes batch-norm statistics from that many
    training images (the first ones of the training split) at each level."""
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
        calibration_x = data.train_x[:calibration_images] if calibration_images > 0 else None
        for row in accuracy_vs_sparsity(model, data.test_x, data.test_y, td_selector, levels, mode, scope,
                                        calibration_x):
            baseline = checkpoint.get("baseline")
            rows.append({"label": label, "checkpoint": path, **row, "dataset": name, "td": checkpoint["td"],
                         "baseline": baseline,
                         "evaluation": "pruned raw weights, no TD mask (0 % = full weights)" if baseline is None
                         else "pruned folded weights, views removed (0 % = the baseline's eval-mode model)",
                         "bn_recalibration_images": 0 if calibration_x is None else len(calibration_x)})
    return rows
