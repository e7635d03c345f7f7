"""Accuracy, and accuracy against one-shot pruning of the TD-target weights.

The sweep is the core's one prune-evaluate loop (``sparsity.sweep.prune_evaluate``) with
accuracy as its evaluator. Pruning reads the raw weights (never a view), so the 0 % row is
the full-weight model. A baseline's checkpoint is loaded with its views folded into the
weights (``load_checkpoint``), so for it the raw weights are the folded ones and the 0 %
row is its eval-mode model.

Batch norm keeps running statistics gathered while TD was dropping weights, which do
not match the full or the pruned network (no rescaling makes the activations' scale
depend on what is dropped). The paper's protocol evaluates as is; optionally the
statistics are recomputed from training images before each evaluation (no gradient
step, no weight changes): ``calibration_x``. The sweep puts weights and buffers back.
"""
import torch
from torch import nn

from ..files import UserError
from ..sparsity import views_of
from ..sparsity.sweep import MagnitudePruner, SweepConfig, prune_evaluate
from .archs import td_selector
from .training_state import load_checkpoint
from .data import load_dataset
from .train import Runtime, check_bad, loader, loader_accuracy


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


def batch_norms(model: nn.Module) -> list:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@torch.no_grad()
def recalibrate_batch_norm(model: nn.Module, x: torch.Tensor, batch_size: int = 256) -> None:
    """Replace every batch norm's running statistics by their average over ``x``."""
    recalibrate_from(model, (x[first:first + batch_size] for first in range(0, len(x), batch_size)))


@torch.no_grad()
def recalibrate_from(model: nn.Module, batches) -> None:
    """Batch-norm running statistics as the cumulative average over ``batches`` (inputs)."""
    norms = batch_norms(model)
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over the batches, not an EMA
    was_training = model.training
    model.train()
    try:
        for x in batches:
            model(x)
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
        model.train(was_training)


def selected_weights(model: nn.Module, select) -> dict:
    """{'<module>.weight': raw weight parameter} for every module ``select`` chooses.

    Reads ``_parameters`` so that a module with a view attached yields its raw weight.
    """
    out = {}
    for name, module in model.named_modules():
        weight = module._parameters.get("weight") if hasattr(module, "_parameters") else None
        if weight is not None and weight.dim() >= 2 and select(name, module):
            out[f"{name}.weight"] = weight
    if not out:
        raise ValueError("no weights selected for pruning")
    return out


def prune_sweep(model: nn.Module, select, config: SweepConfig, measure, recalibrate=None) -> list:
    """One row per level of ``config``: requested and measured sparsity, ``measure()`` as
    accuracy (%), and each pruned tensor's sparsity. ``recalibrate()`` (optional) runs
    before each measurement. Weights and buffers are as they were on return."""
    if views_of(model):
        # Calibration runs in train mode, where TD would drop weights; and the sweep
        # means to measure the pruned weights alone.
        raise ValueError("remove targeted dropout (remove_views) before a pruning sweep")
    params = selected_weights(model, select)
    pruner = MagnitudePruner(params, config.mode, config.scope)
    buffers = {name: b.clone() for name, b in model.named_buffers()}

    def evaluate(level):
        if recalibrate is not None:
            recalibrate()
        return {"mode": config.mode, "scope": config.scope, "accuracy": measure()}

    try:
        return prune_evaluate(params, pruner, config.levels, evaluate, config.pattern)
    finally:
        with torch.no_grad():
            for name, b in model.named_buffers():
                b.copy_(buffers[name])


def accuracy_vs_sparsity(model: nn.Module, x: torch.Tensor, y: torch.Tensor, select, levels,
                         mode: str = "weight", scope: str = "unit", calibration_x: torch.Tensor = None) -> list:
    """``prune_sweep`` on in-memory test tensors; with ``calibration_x``, batch-norm
    statistics are recomputed from those images at each level."""
    config = SweepConfig(tuple(levels), mode, scope)
    recalibrate = None if calibration_x is None else (lambda: recalibrate_batch_norm(model, calibration_x))
    return prune_sweep(model, select, config, lambda: accuracy(model, x, y), recalibrate)


def data_of(checkpoint: dict, data_dir: str = None, download: bool = False):
    """The data set a checkpoint was trained on (an image folder at ``data_dir``, checked to
    have the checkpoint's classes in the same order)."""
    described = checkpoint.get("data") or {"name": checkpoint["dataset"]}
    data = load_dataset(described["name"], data_dir, download, described.get("image_size"))
    classes = described.get("classes")
    if classes is not None and list(classes) != list(data.classes):
        raise UserError(f"{data_dir} has classes {', '.join(data.classes[:4])}, ... but the checkpoint was "
                        f"trained on {', '.join(classes[:4])}, ...; give the folder it was trained on")
    return data


def calibration_batches(data, images: int, runtime: Runtime, batch_size: int):
    """Prepared input batches of ``images`` training images (evaluation transform)."""
    dataset = data.calibration_set(images)
    keys = [(0, i) for i in range(len(dataset))]
    for x, _, bad in loader(dataset, [keys[i:i + batch_size] for i in range(0, len(keys), batch_size)], runtime):
        check_bad(bad, runtime)
        if len(x):
            yield data.prepare(x, runtime.device, runtime.memory_format)


def sweep_checkpoints(paths, labels, levels, mode: str = "weight", scope: str = "unit", data_dir: str = None,
                      download: bool = False, calibration_images: int = 0, runtime: Runtime = Runtime(),
                      batch_size: int = 256) -> list:
    """``prune_sweep`` for each checkpoint, on the test (val) split of the data set it was
    trained on. Every checkpoint and level is checked before any evaluation starts.
    ``calibration_images`` > 0 recomputes batch-norm statistics from that many training
    images (in-memory data: the first ones; folders: a fixed random choice) at each level."""
    if len(paths) != len(labels):
        raise ValueError(f"{len(paths)} checkpoints but {len(labels)} labels")
    config = SweepConfig(tuple(levels), mode, scope)
    loaded = [load_checkpoint(p) for p in paths]
    datasets, rows = {}, []
    for path, label, (model, checkpoint) in zip(paths, labels, loaded):
        key = repr(checkpoint.get("data") or checkpoint["dataset"])
        if key not in datasets:
            datasets[key] = data_of(checkpoint, data_dir, download)
        data = datasets[key]
        model.to(device=runtime.device, memory_format=runtime.memory_format)
        recalibrate, calibrated = None, 0
        if calibration_images > 0:
            calibrated = len(data.calibration_set(calibration_images))
            recalibrate = (lambda: recalibrate_from(model, calibration_batches(data, calibration_images, runtime,
                                                                               batch_size)))
        baseline = checkpoint.get("baseline")
        measure = (lambda: loader_accuracy(model, data, runtime, batch_size)["accuracy"])
        for row in prune_sweep(model, td_selector, config, measure, recalibrate):
            rows.append({"label": label, "checkpoint": path, **row, "dataset": data.name, "td": checkpoint["td"],
                         "baseline": baseline, "arch": checkpoint["arch"],
                         "evaluation": "pruned raw weights, no TD mask (0 % = full weights)" if baseline is None
                         else "pruned folded weights, views removed (0 % = the baseline's eval-mode model)",
                         "bn_recalibration_images": calibrated})
    return rows
