"""One prune-evaluate loop for every domain: per level, prune, evaluate, restore.

A *pruner* ranks (or calibrates) once and returns pruned copies per level:
``pruner.prune(level, pattern) -> {name: tensor}`` (``MagnitudePruner`` here; Wanda and
SparseGPT in ``pruners``). An *evaluator* is any ``evaluate(level) -> dict`` that measures
the model as it stands (BLEU for translation, accuracy for vision). Rows go to ``on_row`` as
they are made; writing files is the caller's job, so a sweep never half-writes one.
"""
from dataclasses import dataclass
from typing import Optional

import torch

from .patterns import nm_mask, parse_pattern, pattern_name, pattern_sparsity
from .prune import MODES, SCOPES, PruneRanking, check_sparsity, sparsity_report


@dataclass(frozen=True)
class SweepConfig:
    """What is pruned and how; every field is part of a result row's identity."""
    levels: tuple
    mode: str = "weight"
    scope: str = "unit"
    pattern: Optional[tuple] = None  # (N, M) or None for unstructured
    pruner: str = "magnitude"

    def __post_init__(self):
        object.__setattr__(self, "levels", tuple(check_sparsity(s) for s in self.levels))
        object.__setattr__(self, "pattern", parse_pattern(self.pattern))
        if not self.levels:
            raise ValueError("give at least one sparsity level")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.scope not in SCOPES:
            raise ValueError(f"scope must be one of {', '.join(SCOPES)}, got {self.scope!r}")
        if self.pattern is not None and self.mode != "weight":
            raise ValueError("an N:M pattern prunes weights within rows: it needs weight mode")

    @property
    def pattern_name(self) -> str:
        return pattern_name(self.pattern)

    def level_of(self, level: float) -> float:
        """The sparsity an N:M pattern imposes, whatever level was asked (0 stays dense)."""
        if self.pattern is None or level == 0:
            return level
        return pattern_sparsity(self.pattern)


class MagnitudePruner:
    """The paper's pruning: rank once by |w| (or a given score), a cheap mask per level.
    With an N:M pattern, the M-N smallest of each group of M go instead."""

    name = "magnitude"

    def __init__(self, tensors: dict, mode: str = "weight", scope: str = "unit", scores: dict = None):
        # copies: given a model's parameters, a level copied into the model must not change the next
        self.tensors = {n: t.detach().clone() for n, t in tensors.items()}
        self.scores = {n: (scores or {}).get(n, t.abs()) for n, t in self.tensors.items()}
        self.ranking = PruneRanking(self.tensors, mode, scope, scores)
        self.info = {"pruner": self.name}

    def prune(self, level: float, pattern=None) -> dict:
        if pattern is None or level == 0:
            return self.ranking.prune(self.tensors, level)
        return {n: t.masked_fill(nm_mask(self.scores[n], pattern), 0) for n, t in self.tensors.items()}


def prune_evaluate(params: dict, pruner, levels, evaluate, pattern=None, on_row=None) -> list:
    """For each level: copy ``pruner.prune(level, pattern)`` into ``params`` (name ->
    parameter), ``evaluate(level)`` the model, and add the measured sparsity (global and per
    tensor). The parameters are restored afterwards, also on error or Ctrl-C."""
    originals = {name: p.detach().clone() for name, p in params.items()}
    rows = []
    try:
        for level in levels:
            pruned = pruner.prune(level, pattern)
            with torch.no_grad():
                for name, tensor in pruned.items():
                    params[name].copy_(tensor)
            report = sparsity_report({n: params[n].detach() for n in pruned})
            row = {"requested_sparsity": level, **evaluate(level),
                   "measured_sparsity": round(report["global"], 6), "per_layer_sparsity": report["per_tensor"]}
            rows.append(row)
            if on_row is not None:
                on_row(row)
    finally:
        with torch.no_grad():
            for name, p in params.items():
                p.copy_(originals[name])
    return rows
