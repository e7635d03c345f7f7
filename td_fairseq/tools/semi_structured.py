"""Serve 2:4 weights as semi-structured sparse tensors (cuSPARSELt or CUTLASS on NVIDIA GPUs).

``torch.sparse.to_sparse_semi_structured`` stores a 2:4 matrix in half the values plus metadata,
and ``F.linear`` with it runs a sparse kernel: fp16/bf16, compute capability >= 8.0, each side a
multiple of the backend's block. Every attention and FFN ``nn.Linear`` whose weight follows 2:4 is
converted; a layer that cannot be (not 2:4, shape, dtype, a kernel that fails or disagrees on a
trial input) stays dense and is counted by reason, never silently.

fairseq's ``MultiheadAttention`` fast path hands ``q_proj.weight`` and friends straight to
``F.multi_head_attention_forward``, which would see the sparse tensor outside ``F.linear``.
``disable_attention_fast_path`` sets ``skip_embed_dim_check`` on each attention module: it then
calls its projection modules, the same math (the slow path that incremental decoding always takes).
Nothing here imports fairseq.
"""
from collections import defaultdict

import torch
import torch.nn.functional as F
from torch import nn

from ..sparsity.patterns import follows_pattern, nm_mask
from ..sparsity.selection import transformer_selector

TWO_FOUR = (2, 4)
HALF_TYPES = (torch.float16, torch.bfloat16)


def support(device, dtype) -> str:
    """'' when this device and dtype can run semi-structured kernels, else why not (one line)."""
    device = torch.device(device) if device is not None else torch.device("cpu")
    if device.type != "cuda" or not torch.cuda.is_available():
        return f"device {device} is not a CUDA GPU"
    if not hasattr(torch.sparse, "to_sparse_semi_structured"):
        return f"torch {torch.__version__} has no torch.sparse.to_sparse_semi_structured"
    capability = torch.cuda.get_device_capability(device)
    if capability < (8, 0):
        return f"{torch.cuda.get_device_name(device)} has compute capability {capability[0]}.{capability[1]} < 8.0"
    if dtype not in HALF_TYPES:
        return f"dtype {dtype} is not float16 or bfloat16"
    return ""


def backend() -> str:
    """The backend ``to_sparse_semi_structured`` picks now (``_FORCE_CUTLASS`` switches it)."""
    forced = getattr(torch.sparse.SparseSemiStructuredTensor, "_FORCE_CUTLASS", False)
    return "cutlass" if forced else "cusparselt"


def shape_problem(weight: torch.Tensor) -> str:
    """'' if the backend's minimum block sizes divide ``weight``'s shape, else why not."""
    cls = (torch.sparse.SparseSemiStructuredTensorCUTLASS if backend() == "cutlass"
           else torch.sparse.SparseSemiStructuredTensorCUSPARSELT)
    limits = cls._DTYPE_SHAPE_CONSTRAINTS.get(weight.dtype)
    if limits is None:
        return f"dtype {weight.dtype} unsupported by {backend()}"
    rows, cols = weight.shape
    if rows % limits.sparse_min_rows or cols % limits.sparse_min_cols:
        return f"shape {tuple(weight.shape)} not a multiple of ({limits.sparse_min_rows}, {limits.sparse_min_cols})"
    return ""


def disable_attention_fast_path(model: nn.Module) -> int:
    """Route every fairseq attention module through its projection modules; returns how many."""
    count = 0
    for module in model.modules():
        if hasattr(module, "skip_embed_dim_check"):
            module.skip_embed_dim_check = True
            count += 1
    return count


@torch.no_grad()
def _trial_error(linear: nn.Linear, sparse: torch.Tensor) -> float:
    """Relative difference of the sparse and dense layer on a random input of 64 rows."""
    x = torch.randn(64, linear.in_features, device=sparse.device, dtype=sparse.dtype)
    dense = F.linear(x, linear.weight, linear.bias).float()
    return float((F.linear(x, sparse, linear.bias).float() - dense).norm() / dense.norm().clamp_min(1e-12))


def _contiguous_input(module, args):
    """The sparse ``F.linear`` views its input as 2-D, which a non-contiguous input refuses."""
    return tuple(a.contiguous() if isinstance(a, torch.Tensor) else a for a in args)


def convert_linears(model: nn.Module, targets: str = "attn,ffn", convert=None, tolerance: float = 2e-2) -> dict:
    """Make each selected 2:4 ``nn.Linear`` weight semi-structured sparse, in place.

    Returns {"converted": [names], "dense": {reason: [names]}, "backend": name}. ``convert``
    (tests) replaces ``torch.sparse.to_sparse_semi_structured``; a trial input checks each
    converted layer against its dense self (bf16 rounding is about 1e-2 of the output norm).
    """
    convert = convert or torch.sparse.to_sparse_semi_structured
    select = transformer_selector(targets)
    report = {"converted": [], "dense": defaultdict(list), "backend": backend()}
    for name, module in model.named_modules():
        if not isinstance(module, nn.Linear) or not select(name, module):
            continue
        weight = module.weight.detach()
        why = ("weight does not follow 2:4" if not follows_pattern(weight, TWO_FOUR)
               else f"dtype {weight.dtype}" if weight.dtype not in HALF_TYPES else shape_problem(weight))
        if not why:
            try:
                sparse = convert(weight.contiguous())
                error = _trial_error(module, sparse)
                why = f"trial output differs by {error:.2g}" if not error <= tolerance else ""
            except (RuntimeError, NotImplementedError, ValueError) as failure:
                why = f"{type(failure).__name__}: {str(failure).splitlines()[0][:80]}"
        if why:
            report["dense"][why].append(name)
            continue
        module.weight = nn.Parameter(sparse, requires_grad=False)
        module.register_forward_pre_hook(_contiguous_input)
        report["converted"].append(name)
    report["dense"] = dict(report["dense"])
    return report


def prune_to_two_four(model: nn.Module, targets: str = "attn,ffn") -> int:
    """Zero the 2 smallest |w| of every 4 in each selected linear (the dense masked twin); returns
    how many weights were pruned."""
    select = transformer_selector(targets)
    pruned = 0
    with torch.no_grad():
        for name, module in model.named_modules():
            if isinstance(module, nn.Linear) and select(name, module):
                mask = nm_mask(module.weight.abs(), TWO_FOUR)
                module.weight.masked_fill_(mask, 0)
                pruned += int(mask.sum())
    return pruned


def summary(report: dict) -> str:
    """One line: how many linears were converted and why the rest stayed dense."""
    total = len(report["converted"]) + sum(len(v) for v in report["dense"].values())
    reasons = "; ".join(f"{len(names)}: {why}" for why, names in report["dense"].items())
    return (f"semi-structured 2:4 ({report['backend']}): {len(report['converted'])} of {total} attention/FFN "
            f"linears converted" + (f", dense: {reasons}" if reasons else ""))
