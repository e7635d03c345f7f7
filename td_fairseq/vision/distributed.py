"""Several training processes, launched by ``torchrun``: ranks, devices and batch norm.

``torchrun --nproc_per_node N scripts/vision_train.py ...`` sets RANK, WORLD_SIZE and
LOCAL_RANK; ``setup`` joins the process group (gloo on the CPU, nccl on GPUs) and picks the
device. Without those variables everything here is the single-process identity.

Batch norm: each process normalises with its own batch's statistics unless ``--sync-bn``
swaps every batch norm's class for ``GlobalBatchNorm2d``, whose statistics are those of the
whole global batch. torch's ``SyncBatchNorm`` refuses CPU tensors; this one uses two
differentiable all-reduces (sum, then centred sum of squares), so it runs on gloo and nccl
alike, and N processes with batch B compute what one process with batch N*B computes.
"""
import hashlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from ..files import UserError


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def ranks() -> Ranks:
    if dist.is_available() and dist.is_initialized():
        return Ranks(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
    return Ranks()


def pick_device(choice: str, local_rank: int = 0) -> torch.device:
    """``auto``: this process's GPU if torch sees one, else the CPU."""
    if choice not in ("auto", "cpu", "cuda"):
        raise UserError(f"--device must be auto, cpu or cuda, got {choice!r}")
    if choice == "cpu" or (choice == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise UserError("--device cuda, but torch sees no CUDA device here")
    if local_rank >= torch.cuda.device_count():
        raise UserError(f"local rank {local_rank} has no GPU: {torch.cuda.device_count()} visible")
    return torch.device("cuda", local_rank)


def setup(device_choice: str = "auto"):
    """(Ranks, device). Joins the process group when launched by torchrun with N > 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(device_choice, local_rank)
    if world > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return ranks(), device


def teardown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def all_sum(values, device) -> list:
    """Python numbers summed over ranks (as float64), in order."""
    tensor = torch.tensor([float(v) for v in values], dtype=torch.float64, device=device)
    if ranks().world > 1:
        dist.all_reduce(tensor)
    return tensor.tolist()


def all_agree(text: str) -> bool:
    """Whether every rank passed the same ``text`` (a fingerprint)."""
    if ranks().world == 1:
        return True
    gathered = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, text)
    return len(set(gathered)) == 1


def fingerprint(tensors) -> str:
    """A sha256 over tensors' bytes: equal on two ranks only if every bit is."""
    digest = hashlib.sha256()
    for t in tensors:
        digest.update(t.detach().cpu().reshape(-1).contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


class _AllReduceSum(torch.autograd.Function):
    """Sum over ranks whose gradient is the sum of the ranks' gradients: each rank's loss
    depends on every rank's input through the sum."""

    @staticmethod
    def forward(ctx, tensor):
        out = tensor.clone()
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx, grad):
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """A differentiable all-reduce (torch.distributed.nn's is deprecated)."""
    return _AllReduceSum.apply(tensor)


class GlobalBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics are those of the batch of all ranks.

    Gradients reach every rank's inputs through the all-reduces' backward (a sum), so with
    DDP's gradient average the result equals one process on the whole batch. The running
    variance uses the unbiased variance of the global batch, as ``nn.BatchNorm2d`` would.
    """

    def forward(self, x):
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        channels = x.shape[1]
        count = torch.full((1,), x.numel() // channels, dtype=torch.float32, device=x.device)
        sums = all_reduce_sum(torch.cat([x.float().sum(dim=(0, 2, 3)), count]))
        n = sums[-1]
        mean = sums[:-1] / n
        centred = x.float() - mean.view(1, -1, 1, 1)
        var = all_reduce_sum(centred.pow(2).sum(dim=(0, 2, 3))) / n
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked += 1
                momentum = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                self.running_mean.lerp_(mean.to(self.running_mean.dtype), momentum)
                unbiased = var * n / (n - 1).clamp_min(1)
                self.running_var.lerp_(unbiased.to(self.running_var.dtype), momentum)
        out = centred * torch.rsqrt(var + self.eps).view(1, -1, 1, 1)
        if self.affine:
            out = out * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)
        return out.to(x.dtype)


def synchronise_batch_norm(model: nn.Module) -> int:
    """Swap every BatchNorm2d's class for ``GlobalBatchNorm2d`` (state and keys unchanged);
    returns how many. Outside training, or in one process, they behave as before."""
    count = 0
    for module in model.modules():
        if type(module) is nn.BatchNorm2d:
            module.__class__ = GlobalBatchNorm2d
            count += 1
    return count
