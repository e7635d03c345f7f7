"""A small training loop with the official ResNet-32 recipe: SGD with momentum, a step
learning-rate schedule, label smoothing and weight decay.

TD needs nothing from the loop except the update count: every module with a
``set_num_updates`` method (the TD controllers, the baselines' views) is told the number
of finished updates before each step, as fairseq does, so ramping schedules, GMP's masks
and Smallify's statistics follow the step. The baselines' penalties are added to the mean
cross entropy as the Transformer's criterion adds them: every ``regularization_loss()``.
"""
import math
import time
from dataclasses import asdict, dataclass, replace

import torch
from torch import nn
from torch.nn import functional as F

from ..sparsity import TDConfig, apply_targeted_dropout
from ..sparsity.options import OPTIONS
# (name, default) of the baseline options, for the vision script's parser
BASELINE_DEFAULTS = tuple((o.name, o.default) for o in OPTIONS if o.group == "sparsity baselines" and o.name != "drop_rate")
from ..sparsity.baselines import BaselineConfig, apply_baseline, regularization_loss
from .checkpoint import make_checkpoint
from .data import Dataset
from .evaluate import accuracy
from .resnet import ResNet, td_selector


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 30
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 2e-4
    label_smoothing: float = 0.1
    # The official schedule divides by 10 at 40k/60k/80k; here at fractions of the run,
    # so a short run keeps the shape of a long one.
    lr_milestones: tuple = (0.5, 0.75)
    lr_factor: float = 0.1
    seed: int = 0

    def __post_init__(self):
        checks = {
            "epochs": isinstance(self.epochs, int) and self.epochs >= 1,
            "batch_size": isinstance(self.batch_size, int) and self.batch_size >= 1,
            "lr": self.lr > 0 and math.isfinite(self.lr),
            "momentum": 0 <= self.momentum < 1,
            "weight_decay": self.weight_decay >= 0,
            "label_smoothing": 0 <= self.label_smoothing < 1,
            "lr_milestones": all(0 < m < 1 for m in self.lr_milestones),
            "lr_factor": 0 < self.lr_factor <= 1,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"bad training setting {bad[0]}={getattr(self, bad[0])!r}")

    def to_dict(self) -> dict:
        out = asdict(self)
        out["lr_milestones"] = list(self.lr_milestones)
        return out


def step_lr(step: int, total_steps: int, base_lr: float, milestones=(0.5, 0.75), factor: float = 0.1) -> float:
    """Learning rate at update ``step``: ``base_lr`` times ``factor`` per milestone passed."""
    passed = sum(step >= int(m * total_steps) for m in milestones)
    return base_lr * factor ** passed


def set_num_updates(model: nn.Module, num_updates: int) -> None:
    for module in model.modules():
        if module is not model and hasattr(module, "set_num_updates"):
            module.set_num_updates(num_updates)


def random_crop_flip(x: torch.Tensor, generator: torch.Generator, pad: int = 4) -> torch.Tensor:
    """The standard CIFAR augmentation: zero-pad by ``pad``, crop back at a random
    offset, and flip half of the images horizontally."""
    n, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    offsets = torch.randint(0, 2 * pad + 1, (n, 2), generator=generator).tolist()
    out = torch.stack([padded[i, :, dy:dy + h, dx:dx + w] for i, (dy, dx) in enumerate(offsets)])
    flip = torch.rand(n, generator=generator) < 0.5
    out[flip] = out[flip].flip(3)
    return out


def decay_groups(model: nn.Module, weight_decay: float) -> list:
    """Weight decay on weight tensors only, not on biases or batch-norm scales, nor on the
    views' parameters (L0 log alphas, variational log sigma^2, Smallify switches): decay
    would pull them towards 0, a prior none of those methods has."""
    def decayed(name, p):
        return p.dim() >= 2 and "td" not in name.split(".")[:-1]
    named = list(model.named_parameters())
    decay = [p for name, p in named if decayed(name, p)]
    rest = [p for name, p in named if not decayed(name, p)]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]


def train(model: nn.Module, data: Dataset, config: TrainConfig, log=None) -> list:
    """Train ``model`` in place; returns one history entry per epoch.

    The per-epoch test accuracy is for monitoring only (no model is selected on it):
    the final model is the one after the last epoch.
    """
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    optimizer = torch.optim.SGD(decay_groups(model, config.weight_decay), lr=config.lr,
                                momentum=config.momentum)
    n = len(data.train_y)
    steps_per_epoch = math.ceil(n / config.batch_size)
    total = config.epochs * steps_per_epoch
    step, history = 0, []
    for epoch in range(1, config.epochs + 1):
        model.train()
        start, loss_sum, reg_sum = time.time(), 0.0, 0.0
        order = torch.randperm(n, generator=generator)
        for first in range(0, n, config.batch_size):
            index = order[first:first + config.batch_size]
            x, y = data.train_x[index], data.train_y[index]
            if data.augment:
                x = random_crop_flip(x, generator)
            set_num_updates(model, step)
            lr = step_lr(step, total, config.lr, config.lr_milestones, config.lr_factor)
            for group in optimizer.param_groups:
                group["lr"] = lr
            loss = F.cross_entropy(model(x), y, label_smoothing=config.label_smoothing)
            extra = regularization_loss(model)
            if extra is not None:
                loss = loss + extra
                reg_sum += float(extra.detach()) * len(y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += float(loss.detach()) * len(y)
            step += 1
        set_num_updates(model, step)  # evaluation sees the rates after the last update
        entry = {"epoch": epoch, "updates": step, "lr": lr, "train_loss": loss_sum / n, "reg_loss": reg_sum / n,
                 "test_accuracy": accuracy(model, data.test_x, data.test_y), "seconds": time.time() - start}
        history.append(entry)
        if log is not None:
            log(entry)
    return history


def train_resnet(data: Dataset, td: TDConfig, config: TrainConfig, blocks: int = 5, widths=(16, 32, 64),
                 log=None, command: str = "", commit: str = "", baseline: BaselineConfig = None) -> dict:
    """Build a ResNet for ``data``, attach TD to its targets, train it, and return a
    checkpoint dict. Final test accuracy is reported with full weights and, for TD
    models, also with the whole targeted set removed (the official evaluation).

    With ``baseline``, its views go on the TD targets instead of TD, and the test accuracy
    is the views' eval mode (equal to the folded model's). The checkpoint then records
    ``td`` with td_type none: no TD was attached (gamma and alpha are kept, as the script's
    default drop rate derives from them)."""
    torch.manual_seed(config.seed)
    model = ResNet(blocks, widths, data.in_channels, data.num_classes)
    if baseline is not None:
        td = replace(td, td_type="none")
        views = apply_baseline(model, baseline, td_selector)
        history = train(model, data, config, log)
        metrics = {"sparsity_method": baseline.method, "td_modules": sorted(views),
                   "test_accuracy": accuracy(model, data.test_x, data.test_y), "test_accuracy_eval_mask": None}
        metrics["test_accuracy_as_configured"] = metrics["test_accuracy"]
        return make_checkpoint(model, td, config.to_dict(), data.name, history, metrics, command, commit, baseline)
    controllers = apply_targeted_dropout(model, td, td_selector) if td.td_type != "none" else {}
    history = train(model, data, config, log)
    metrics = {"sparsity_method": "td", "test_accuracy_eval_mask": None, "td_modules": sorted(controllers)}
    for eval_mask in ([False, True] if controllers else [False]):
        for controller in controllers.values():
            controller.config = replace(td, eval_mask=eval_mask)
        key = "test_accuracy_eval_mask" if eval_mask else "test_accuracy"
        metrics[key] = accuracy(model, data.test_x, data.test_y)
    for controller in controllers.values():
        controller.config = td
    metrics["test_accuracy_as_configured"] = metrics["test_accuracy_eval_mask" if td.eval_mask else "test_accuracy"]
    return make_checkpoint(model, td, config.to_dict(), data.name, history, metrics, command, commit)
