"""Post-training pruners behind one interface: magnitude, Wanda and SparseGPT.

``make_pruner(kind, model, weights, feed, mask_groups, info)`` returns an object with ``name``,
``info`` (settings for result rows) and ``prune(level, pattern) -> {weight name: new tensor}``
(magnitude: the sweep's own ``sweep.MagnitudePruner``, per output row).
Every level is computed from the weights as they were when the pruner was made, and the
model is left exactly as it was found, so a sweep can copy each level's tensors into the model,
evaluate, and ask for the next level.

A level is the fraction pruned per output row (floor(level * in) weights: TD's targeted set
shape; SparseGPT with ``mask_groups="block"``: per block of rows x B columns, as in the paper),
or an N:M pattern; with a pattern the level must be its own sparsity (M-N)/M or None, or 0
for the dense weights.
"""
import torch

from .calibration import collect, forward_groups, loaded, weight_modules
from .masks import bottom_k_rows, targeted_count
from .patterns import check_pattern_shape, nm_mask, parse_pattern, pattern_name, pattern_sparsity
from .prune import check_sparsity
from .sparsegpt import MASK_GROUPS, sparsegpt_prune
from .sweep import MagnitudePruner

KINDS = ("magnitude", "wanda", "sparsegpt")


def check_level(level, pattern):
    """(level, pattern) validated: pattern None or (N, M); level in [0, 1)."""
    pattern = parse_pattern(pattern)
    if pattern is None:
        return check_sparsity(level), None
    own = pattern_sparsity(pattern)
    level = own if level is None else check_sparsity(level)
    if level != 0 and abs(level - own) > 1e-9:
        raise ValueError(f"pattern {pattern_name(pattern)} prunes {own:g}; level {level:g} asks otherwise")
    return level, (pattern if level else None)


def wanda_scores(weight: torch.Tensor, input_square_sum: torch.Tensor) -> torch.Tensor:
    """Wanda's importance |w_ij| * ||x_j||_2 (x_j: input feature j over calibration tokens)."""
    return weight.detach().float().abs() * input_square_sum.float().sqrt()[None, :]


def wanda_mask(weight: torch.Tensor, input_square_sum: torch.Tensor, level: float, pattern=None) -> torch.Tensor:
    """Bool mask of the pruned entries: per output row the floor(level * in) lowest scores, or
    the M-N lowest of each group of M inputs (Wanda compares within a row, never across)."""
    score = wanda_scores(weight, input_square_sum)
    if pattern is not None:
        return nm_mask(score, pattern)
    return bottom_k_rows(score, targeted_count(level, score.shape[1]))


class _CalibratedPruner:
    """Shared parts of Wanda and SparseGPT: the original weights and the level checks."""

    name = None

    def __init__(self, weights: dict, info: dict = None):
        if not weights:
            raise ValueError("no weights selected for pruning")
        self.params = weights
        self.originals = {name: p.detach().clone() for name, p in weights.items()}
        self.info = dict(info or {}, pruner=self.name)

    def prune(self, level, pattern=None) -> dict:
        level, pattern = check_level(level, pattern)
        for name, tensor in self.originals.items():
            check_pattern_shape(tensor.shape, pattern, name)
        if level == 0:
            return {name: tensor.clone() for name, tensor in self.originals.items()}
        return self._prune(level, pattern)


class WandaPruner(_CalibratedPruner):
    """Wanda: statistics from one pass of the dense model over the calibration data (the
    paper prunes block by block with pruned earlier blocks; one dense pass lets every level
    reuse the same statistics). Collected at the first ``prune``."""

    name = "wanda"

    def __init__(self, model, weights: dict, feed, info: dict = None):
        super().__init__(weights, info)
        self.modules = weight_modules(model, weights)
        self.feed, self.square_sums = feed, None
        self.info.update(calibration="one dense pass")

    def _prune(self, level, pattern):
        if self.square_sums is None:
            with loaded(self.params, self.originals):
                stats = collect(self.modules, self.feed, "square")
            self.square_sums = {name: entry.total for name, entry in stats.items()}
        return {name: w.masked_fill(wanda_mask(w, self.square_sums[name].to(w.device), level, pattern), 0)
                for name, w in self.originals.items()}


class SparseGPTPruner(_CalibratedPruner):
    """SparseGPT, sequential: modules are pruned in forward order, and each group of modules
    that reads the same input (q, k, v) is calibrated with all earlier modules already pruned,
    one pass of ``feed`` per group and level (the first group's, on the dense model, is kept
    for later levels). One more pass, at the first level, finds the order and the groups.
    Memory: the Hessians of one group at a time."""

    name = "sparsegpt"

    def __init__(self, model, weights: dict, feed, mask_groups: str = "row", info: dict = None,
                 blocksize: int = 128, percdamp: float = 0.01):
        if mask_groups not in MASK_GROUPS:
            raise ValueError(f"mask_groups must be one of {', '.join(MASK_GROUPS)}, got {mask_groups!r}")
        super().__init__(weights, info)
        self.modules = weight_modules(model, weights)
        self.feed, self.groups, self.first = feed, None, None
        self.options = dict(mask_groups=mask_groups, blocksize=blocksize, percdamp=percdamp)
        self.info.update(self.options, calibration="sequential by input group")

    def _prune(self, level, pattern):
        new = {}
        with loaded(self.params, self.originals):
            if self.groups is None:
                self.groups = forward_groups(collect(self.modules, self.feed, "order"))
                self.info.update(passes=len(self.groups))
            for index, group in enumerate(self.groups):
                if index == 0 and self.first is not None:
                    hessians = self.first
                else:
                    stats = collect({name: self.modules[name] for name in group}, self.feed, "gram")
                    hessians = {name: entry.mean() for name, entry in stats.items()}
                    if index == 0:  # nothing before it is pruned: the same at every level
                        self.first = hessians
                for name in group:
                    new[name], _ = sparsegpt_prune(self.originals[name], hessians[name], level, pattern,
                                                   **self.options)
                    with torch.no_grad():
                        self.params[name].copy_(new[name])
        return new


def make_pruner(kind: str, model=None, weights: dict = None, feed=None, mask_groups: str = "row",
                info: dict = None, **options):
    """One of ``KINDS`` over ``weights`` ({name: parameter of ``model``}). ``feed()`` runs the
    calibration batches through ``model`` (not needed by magnitude). Magnitude and Wanda
    compare weights within a row only, so they take ``mask_groups="row"`` only."""
    if kind not in KINDS:
        raise ValueError(f"pruner must be one of {', '.join(KINDS)}, got {kind!r}")
    if kind == "sparsegpt":
        return SparseGPTPruner(model, weights, feed, mask_groups, info, **options)
    if mask_groups != "row":
        raise ValueError(f"the {kind} pruner compares weights within a row: mask_groups must be 'row'")
    if options:
        raise ValueError(f"the {kind} pruner takes no options, got {sorted(options)}")
    if kind == "magnitude":  # the sweep's own, per output row; on copies, not views of the model
        pruner = MagnitudePruner({name: p.detach().clone() for name, p in weights.items()})
        pruner.info.update(info or {}, pruner=pruner.name)
        return pruner
    return WandaPruner(model, weights, feed, info)
