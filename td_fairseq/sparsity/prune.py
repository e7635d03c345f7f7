"""One-shot magnitude pruning, kept apart from TD: rank once, then mask at any level.

Modes: ``weight`` (by |w| or a given score) with scope ``unit`` (per output unit, the
paper's), ``layer`` or ``global`` (one threshold over all selected tensors); ``unit``
(whole units by L2 norm, per layer). The ranking is computed once per model, so a sweep
over sparsity levels only compares ranks with a count. Exactly floor(s * n) elements
are pruned per group; ties are broken by position, never by pruning extra.
"""
import torch

from .masks import targeted_count, unit_norms

MODES = ("weight", "unit")
SCOPES = ("unit", "layer", "global")


def _ranks(score: torch.Tensor) -> torch.Tensor:
    """Rank (0 = smallest) of each entry along the last axis."""
    order = score.argsort(dim=-1, stable=True)
    ranks = torch.empty_like(order)
    ranks.scatter_(-1, order, torch.arange(score.shape[-1], device=score.device).expand_as(order).contiguous())
    return ranks


def check_sparsity(sparsity: float) -> float:
    if not isinstance(sparsity, (int, float)) or not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity!r}")
    return float(sparsity)


class PruneRanking:
    """Pruning order of a set of named weight tensors; ``masks(s)`` is cheap per level.

    ``scores`` (optional, for some or all names) replaces |w|: e.g. a gate value or -log
    alpha, of the tensor's shape, or in unit mode one value per unit.
    """

    def __init__(self, tensors: dict, mode: str = "weight", scope: str = "unit", scores: dict = None):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        if scope not in SCOPES:
            raise ValueError(f"scope must be one of {', '.join(SCOPES)}, got {scope!r}")
        if not tensors:
            raise ValueError("no tensors selected for pruning")
        self.mode, self.scope = mode, scope
        self.shapes = {name: t.shape for name, t in tensors.items()}
        with torch.no_grad():
            given = scores or {}
            scores = {n: (given[n] if n in given else t.abs()).detach().float() for n, t in tensors.items()}
            if mode == "unit":
                self.ranks = {n: _ranks(unit_norms(s) if s.dim() > 1 else s) for n, s in scores.items()}
            elif scope == "unit":
                self.ranks = {n: _ranks(s.reshape(s.shape[0], -1)) for n, s in scores.items()}
            elif scope == "layer":
                self.ranks = {n: _ranks(s.flatten()) for n, s in scores.items()}
            else:
                names = list(scores)
                flat = _ranks(torch.cat([scores[n].flatten() for n in names]))
                self.ranks = dict(zip(names, flat.split([scores[n].numel() for n in names])))

    def masks(self, sparsity: float) -> dict:
        """{name: bool mask of the pruned entries}, each of its tensor's shape."""
        sparsity = check_sparsity(sparsity)
        total = sum(r.numel() for r in self.ranks.values())
        out = {}
        for name, ranks in self.ranks.items():
            group = total if (self.mode, self.scope) == ("weight", "global") else ranks.shape[-1]
            pruned = ranks < targeted_count(sparsity, group)
            shape = self.shapes[name]
            if self.mode == "unit":
                pruned = pruned.view((shape[0],) + (1,) * (len(shape) - 1)).expand(shape)
            out[name] = pruned.reshape(shape)
        return out

    def prune(self, tensors: dict, sparsity: float) -> dict:
        """New tensors with the pruned entries zeroed; the inputs are not modified."""
        masks = self.masks(sparsity)
        return {name: tensors[name].masked_fill(masks[name], 0) for name in masks}


def sparsity_report(tensors: dict) -> dict:
    """Global sparsity (total zeros over total weights) and each tensor's own."""
    per_tensor, zeros, total = {}, 0, 0
    for name, t in tensors.items():
        z = int((t == 0).sum())
        per_tensor[name] = z / max(1, t.numel())
        zeros, total = zeros + z, total + t.numel()
    return {"global": zeros / max(1, total), "zeros": zeros, "total": total, "per_tensor": per_tensor}
