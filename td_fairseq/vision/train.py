"""The training loop, with the official ResNet-32 recipe: SGD with momentum, a step
learning-rate schedule, label smoothing and weight decay; one process or several.

TD needs nothing from the loop except the update count: every module with a
``set_num_updates`` method (the TD controllers, the baselines' views) is told the number
of finished updates before each step, as fairseq does, so ramping schedules, GMP's masks
and Smallify's statistics follow the step, after a resume too. The baselines' penalties are
added to the mean cross entropy as the Transformer's criterion adds them.

Several processes (``distributed``): DistributedDataParallel averages gradients; the batch
size is per process; every rank seeds torch alike, so TD draws the same dropped set on every
rank, exactly as one process with the whole batch would.
"""
import math
import time
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, DistributedSampler

from ..sparsity import set_num_updates
from ..sparsity.baselines import regularization_loss
from . import distributed
from .data import as_is
from .errors import DataError

AMP = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}
BAD_IMAGES = ("stop", "skip")


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 30
    batch_size: int = 128  # per process
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


@dataclass(frozen=True)
class Runtime:
    """How a run executes; none of it changes the recipe (amp changes rounding only)."""
    device: str = "cpu"  # resolved: cpu, cuda or cuda:N
    workers: int = 0
    amp: str = "none"
    channels_last: bool = False
    sync_bn: bool = False
    bad_images: str = "stop"

    def __post_init__(self):
        if self.amp not in AMP:
            raise ValueError(f"--amp must be one of {', '.join(AMP)}, got {self.amp!r}")
        # a CPU autocasts to bf16 only (fp16 there is emulated and needs a GPU's grad scaler)
        if self.amp == "fp16" and torch.device(self.device).type != "cuda":
            raise ValueError(f"--amp fp16 is for CUDA devices; this run is on {self.device}: use --amp bf16 or none")
        if self.bad_images not in BAD_IMAGES:
            raise ValueError(f"--bad-images must be one of {', '.join(BAD_IMAGES)}, got {self.bad_images!r}")
        if not isinstance(self.workers, int) or self.workers < 0:
            raise ValueError(f"--workers must be >= 0, got {self.workers!r}")

    @property
    def memory_format(self):
        return torch.channels_last if self.channels_last else torch.contiguous_format


def step_lr(step: int, total_steps: int, base_lr: float, milestones=(0.5, 0.75), factor: float = 0.1) -> float:
    """Learning rate at update ``step``: ``base_lr`` times ``factor`` per milestone passed."""
    passed = sum(step >= int(m * total_steps) for m in milestones)
    return base_lr * factor ** passed


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


class EpochBatches:
    """This rank's batches of (epoch, index) keys, in DistributedSampler's order: rank r of
    N takes every N-th sample of the epoch's permutation, so batch i of all ranks together is
    batch i of one process with N times the batch size."""

    def __init__(self, n: int, batch_size: int, ranks: distributed.Ranks, seed: int):
        self.sampler = DistributedSampler(range(n), ranks.world, ranks.rank, shuffle=True, seed=seed)
        self.batch_size, self.epoch = batch_size, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.sampler.set_epoch(epoch)

    def __iter__(self):
        keys = [(self.epoch, i) for i in self.sampler]
        return iter([keys[i:i + self.batch_size] for i in range(0, len(keys), self.batch_size)])

    def __len__(self):
        return math.ceil(len(self.sampler) / self.batch_size)


def loader(dataset, batch_sampler, runtime: Runtime, persistent: bool = False) -> DataLoader:
    return DataLoader(dataset, batch_sampler=batch_sampler, collate_fn=as_is, num_workers=runtime.workers,
                      pin_memory=torch.device(runtime.device).type == "cuda",
                      persistent_workers=persistent and runtime.workers > 0,
                      generator=torch.Generator())  # workers' seeds never touch the global RNG


def check_bad(bad: list, runtime: Runtime) -> None:
    if bad and runtime.bad_images == "stop":
        path, reason = bad[0]
        raise DataError(f"cannot read image {path} ({reason}); --bad-images skip skips and counts such images")


def autocast(runtime: Runtime):
    device = torch.device(runtime.device)
    return torch.autocast(device.type, dtype=AMP[runtime.amp], enabled=runtime.amp != "none")


@torch.no_grad()
def loader_accuracy(model: nn.Module, data, runtime: Runtime, batch_size: int = 256, dataset=None) -> dict:
    """Top-1 accuracy (%) on ``data``'s test split (or ``dataset``), in eval mode, each rank
    taking every N-th image; skipped unreadable images are counted, not scored."""
    dataset = data.test_set() if dataset is None else dataset
    ranks = distributed.ranks()
    keys = [(0, i) for i in range(ranks.rank, len(dataset), ranks.world)]
    batches = [keys[i:i + batch_size] for i in range(0, len(keys), batch_size)]
    was_training = model.training
    model.eval()
    correct, total, skipped = 0, 0, 0
    for x, y, bad in loader(dataset, batches, runtime):
        check_bad(bad, runtime)
        skipped += len(bad)
        if len(y):
            with autocast(runtime):
                logits = model(data.prepare(x, runtime.device, runtime.memory_format))
            correct += int((logits.argmax(dim=1).cpu() == y).sum())
            total += len(y)
    model.train(was_training)
    correct, total, skipped = distributed.all_sum([correct, total, skipped], runtime.device)
    return {"accuracy": 100.0 * correct / max(1, total), "images": int(total), "skipped_images": int(skipped)}


def train_step(net: nn.Module, model: nn.Module, optimizer, scaler, x, y, step: int, lr: float,
               label_smoothing: float, runtime: Runtime):
    """One update: tell the views the step, forward (autocast), cross entropy plus the views'
    penalties, backward, SGD. ``net`` is ``model`` or its DDP wrapper. Returns the loss and
    the penalty as device tensors (no host sync)."""
    set_num_updates(model, step)
    for group in optimizer.param_groups:
        group["lr"] = lr
    with autocast(runtime):
        logits = net(x)
    loss = F.cross_entropy(logits.float(), y, label_smoothing=label_smoothing)
    extra = regularization_loss(model)
    if extra is not None:
        loss = loss + extra
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    return loss.detach(), (torch.zeros((), device=loss.device) if extra is None else extra.detach())


def resume_state(epoch: int, step: int, optimizer, scaler, history: list, device) -> dict:
    """What a resumed run needs beyond the weights: tensors and plain containers only."""
    state = {"epoch": epoch, "updates": step, "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(),
             "rng": torch.get_rng_state(), "history": list(history)}
    if torch.device(device).type == "cuda":
        state["cuda_rng"] = torch.cuda.get_rng_state(torch.device(device))
    return state


def train(model: nn.Module, data, config: TrainConfig, log=None, runtime: Runtime = Runtime(), state: dict = None,
          on_epoch=None, progress=None) -> list:
    """Train ``model`` in place (moved to ``runtime.device``); returns one history entry
    per epoch. ``state``: a ``resume_state`` to continue from (the weights already loaded).
    ``on_epoch(entry, state)`` runs after each epoch on every rank; ``log(entry)`` on rank 0;
    ``progress(iterable, total, epoch)`` wraps the batches (a progress bar).

    The per-epoch test accuracy is for monitoring only (no model is selected on it):
    the final model is the one after the last epoch.
    """
    ranks = distributed.ranks()
    device = torch.device(runtime.device)
    torch.manual_seed(config.seed)  # TD's and dropout's draws: the same on every rank
    model.to(device=device, memory_format=runtime.memory_format)
    if runtime.sync_bn and ranks.world > 1:
        distributed.synchronise_batch_norm(model)
    net = model
    if ranks.world > 1:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    optimizer = torch.optim.SGD(decay_groups(model, config.weight_decay), lr=config.lr, momentum=config.momentum)
    scaler = torch.amp.GradScaler(device.type, enabled=runtime.amp == "fp16")
    train_set = data.train_set(config.seed)
    batches = EpochBatches(len(train_set), config.batch_size, ranks, config.seed)
    batch_loader = loader(train_set, batches, runtime, persistent=True)
    total = config.epochs * len(batches)
    step, first_epoch, history = 0, 1, []
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        step, first_epoch, history = state["updates"], state["epoch"] + 1, list(state["history"])
        torch.set_rng_state(state["rng"])
        if "cuda_rng" in state and device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda_rng"], device)
    lr = step_lr(step, total, config.lr, config.lr_milestones, config.lr_factor)
    for epoch in range(first_epoch, config.epochs + 1):
        net.train()
        batches.set_epoch(epoch)
        start = time.perf_counter()
        loss_sum = torch.zeros((), device=device)  # summed on the device: no host sync per step
        reg_sum = torch.zeros((), device=device)
        seen, skipped = 0, 0
        for x, y, bad in (batch_loader if progress is None else progress(batch_loader, len(batches), epoch)):
            check_bad(bad, runtime)
            skipped += len(bad)
            if not len(y):
                raise DataError(f"every image of a batch was unreadable (first: {bad[0][0]})")
            x = data.prepare(x, device, runtime.memory_format)
            y = y.to(device, non_blocking=True)
            lr = step_lr(step, total, config.lr, config.lr_milestones, config.lr_factor)
            loss, extra = train_step(net, model, optimizer, scaler, x, y, step, lr, config.label_smoothing, runtime)
            loss_sum += loss * len(y)
            reg_sum += extra * len(y)
            seen += len(y)
            step += 1
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - start
        set_num_updates(model, step)  # evaluation sees the rates after the last update
        loss_total, reg_total, seen, skipped = distributed.all_sum(
            [loss_sum.item(), reg_sum.item(), seen, skipped], device)
        test = loader_accuracy(model, data, runtime, max(config.batch_size, 256))
        history.append({"epoch": epoch, "updates": step, "lr": lr, "train_loss": loss_total / seen,
                        "reg_loss": reg_total / seen, "test_accuracy": test["accuracy"], "seconds": seconds,
                        "images_per_second": seen / seconds,
                        "skipped_images": int(skipped) + test["skipped_images"]})
        if on_epoch is not None:
            on_epoch(history[-1], resume_state(epoch, step, optimizer, scaler, history, device))
        if log is not None and ranks.is_main:
            log(history[-1])
    return history
