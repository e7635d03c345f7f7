"""Targeted dropout: one weight view (``views``) among others.

Attached with ``views.attach_view``, it is seen by every reader of ``.weight``. Masking
is a multiply by the keep mask in the forward graph (``remove``), so dropped entries get
zero gradient and ``.data`` is never edited.
"""
import math
from dataclasses import dataclass

import torch
from torch import nn

from .masks import dropped_mask, targeted_pattern_mask, targeted_unit_mask, targeted_weight_mask_warm
from .patterns import UNSTRUCTURED, check_pattern_shape, parse_pattern, pattern_name, pattern_sparsity
from .schedules import td_rates
from .views import WeightView, attach_views

TD_TYPES = ("none", "weight", "unit", "weight_random", "unit_random")


@dataclass(frozen=True)
class TDConfig:
    """``pattern`` 'N:M' (weight TD only): the targeted set is the M-N smallest |w| of each
    group of M consecutive inputs of a row, a fixed fraction (M-N)/M that replaces gamma's
    set (gamma is not used); a ramp then scales alpha alone. ``mask_interval`` K: the targeted
    set is selected at every K-th update and kept in between (the drop is drawn fresh on
    every read all the same); K = 1 is the paper's rule. ``rescale`` (training): kept targeted
    elements are divided by 1 - alpha_t, as tensor2tensor's targeted_dropout does, so each keeps
    its value in expectation. ``eval_scale`` (eval mode): the targeted set is multiplied by
    1 - alpha_t, ordinary dropout's weight-scaling rule, the expectation of a plain training read.
    Both are off by default: the paper's rule neither rescales nor scales."""
    td_type: str = "weight"
    gamma: float = 0.75
    alpha: float = 0.66
    ramp_updates: int = 0
    eval_mask: bool = False
    pattern: str = UNSTRUCTURED
    mask_interval: int = 1
    rescale: bool = False
    eval_scale: bool = False

    def __post_init__(self):
        if self.td_type not in TD_TYPES:
            raise ValueError(f"td_type must be one of {', '.join(TD_TYPES)}, got {self.td_type!r}")
        for name in ("gamma", "alpha"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or math.isnan(value) or not 0 <= value <= 1:
                raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")
        if not isinstance(self.ramp_updates, int) or self.ramp_updates < 0:
            raise ValueError(f"ramp_updates must be a non-negative integer, got {self.ramp_updates!r}")
        if not isinstance(self.mask_interval, int) or self.mask_interval < 1:
            raise ValueError(f"mask_interval must be a positive integer, got {self.mask_interval!r}")
        nm = parse_pattern(self.pattern)
        object.__setattr__(self, "pattern", pattern_name(nm))  # canonical, checked
        object.__setattr__(self, "_nm", nm)  # parsed once: read on every weight read
        if self.nm is not None and self.by_unit:
            raise ValueError(f"pattern {self.pattern} applies to weight TD, not td_type {self.td_type!r}")

    @property
    def by_unit(self) -> bool:
        return self.td_type in ("unit", "unit_random")

    @property
    def random(self) -> bool:
        return self.td_type.endswith("_random")

    @property
    def nm(self):
        """(N, M), or None when unstructured."""
        return self._nm


def _autocast_copy(weight: torch.Tensor) -> torch.Tensor:
    """The weight in the autocast dtype when autocast is on (ranked on the fp32 weight before):
    the drop mask is then applied to the half-size copy that the product reads anyway, instead
    of to an fp32 copy that autocast casts again (measured: docs/RESULTS.md, bf16 TD overhead)."""
    device = weight.device.type
    if weight.dtype == torch.float32 and torch.is_autocast_enabled(device):
        return weight.to(torch.get_autocast_dtype(device))
    return weight


def remove(weight: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``weight`` with the ``mask`` entries zeroed, in the autograd graph: their gradient is zero.

    A multiply by the 0/1 keep mask, not ``masked_fill``: on CPU masked_fill branches on every
    element and a random drop mask mispredicts half of those branches (about ten times slower,
    forward and again backward). Kept entries are multiplied by exactly 1."""
    return weight * (~mask).view(torch.uint8)


def remove_rescaled(weight: torch.Tensor, dropped: torch.Tensor, targeted: torch.Tensor,
                    alpha: float) -> torch.Tensor:
    """``remove``, and the kept ``targeted`` entries divided by 1 - alpha (tensor2tensor's
    targeted_dropout): each targeted weight keeps its value in expectation. Dropped entries are
    multiplied by exactly 0 (zero gradient). alpha >= 1 drops every targeted entry, so none is
    left to rescale: plain ``remove``, no division by zero."""
    if alpha >= 1:
        return remove(weight, dropped)
    scale = 1 + targeted.to(weight.dtype) * (alpha / (1 - alpha))
    return weight * ((~dropped).view(torch.uint8) * scale)


def scale_targeted(weight: torch.Tensor, targeted: torch.Tensor, alpha: float) -> torch.Tensor:
    """``weight`` with the ``targeted`` entries multiplied by 1 - alpha: ordinary dropout's
    weight-scaling rule, the expectation of a training read that drops each w.p. alpha."""
    return weight * (1 - alpha * targeted.to(weight.dtype))


class TargetedDropout(WeightView):
    """Maps a raw weight to its targeted-dropout view.

    Training: drops each targeted element with probability alpha_t, fresh on every read,
    no rescaling (with ``rescale``: kept targeted elements divided by 1 - alpha_t). Eval: the
    identity, or with ``eval_mask`` the deterministic removal of the whole targeted set (the
    official code's evaluation; it wins over ``eval_scale``), or with ``eval_scale`` the targeted
    set multiplied by 1 - alpha_t (``folded`` is that weight for export). The schedule follows the
    update count given to ``set_num_updates``, as fairseq does for every submodule.

    The targeted set is selected once per update and reused by every training read of
    that update (gradient accumulation, a weight read twice): it depends only on the
    weight and gamma, and the weight is stepped between updates. A weight edited in place
    (an optimizer, ``load_state_dict``) bumps its version and is selected again; one
    edited through ``.data`` without a new update count is not (fairseq always moves the
    count with the step). With ``mask_interval`` K > 1 the set is kept for K updates.
    """

    log_prefix = "td"

    def __init__(self, config: TDConfig, weight_shape):
        super().__init__()
        self.config = config
        self._threshold = None  # warm start for the next selection, never saved
        self._cached = None  # (key, targeted set) of the last training selection, never saved
        check_pattern_shape(weight_shape, config.nm)
        if config.random:
            # A fixed random ranking, saved with the model, so the random subset is the
            # same at every step and after a resume. Nested as gamma ramps up.
            shape = weight_shape[:1] if config.by_unit else weight_shape
            self.register_buffer("random_score", torch.rand(shape))
        else:
            self.random_score = None

    @property
    def rates(self):
        c = self.config
        gamma, alpha = td_rates(self.num_updates, c.gamma, c.alpha, c.ramp_updates)
        if c.nm is not None:  # the pattern fixes the targeted fraction; a ramp scales alpha
            return pattern_sparsity(c.nm), alpha
        return gamma, alpha

    def log_values(self) -> dict:
        gamma, alpha = self.rates
        return {"td_gamma": gamma, "td_alpha": alpha}

    def targeted(self, weight: torch.Tensor, gamma: float = None) -> torch.Tensor:
        """The targeted set of ``weight`` now (a fresh selection, never cached)."""
        gamma = self.rates[0] if gamma is None else gamma
        with torch.no_grad():
            if self.config.by_unit:
                return targeted_unit_mask(weight, gamma, self.random_score)
            if self.config.nm is not None:
                return targeted_pattern_mask(weight, self.config.nm, self.random_score)
            mask, self._threshold = targeted_weight_mask_warm(weight, gamma, self.random_score, self._threshold)
            return mask

    def _training_targeted(self, weight: torch.Tensor, gamma: float) -> torch.Tensor:
        interval = self.config.mask_interval
        where = (weight.data_ptr(), weight.shape, weight.dtype, weight.device)
        # K = 1: exact for the weight and gamma as they are now; K > 1: kept for K updates,
        # selected at the gamma of the first of them
        key = (self.num_updates, gamma, weight._version, where) if interval == 1 else \
            (self.num_updates // interval, where)
        if self._cached is None or self._cached[0] != key:
            self._cached = (key, self.targeted(weight, gamma))
        return self._cached[1]

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        if self.config.td_type == "none":
            return weight
        gamma, alpha = self.rates
        if self.training:
            if gamma <= 0 or alpha <= 0:
                self._last_dropped = None
                return weight
            targeted = self._training_targeted(weight, gamma)
            dropped = dropped_mask(targeted, alpha)
            self._last_dropped = dropped
            if self.config.rescale:
                return remove_rescaled(weight, dropped, targeted, alpha)
            return remove(_autocast_copy(weight), dropped)
        if self.config.eval_mask and gamma > 0:
            return remove(weight, self.targeted(weight, gamma))
        if self.config.eval_scale:
            return self._eval_scaled(weight)
        return weight

    def _eval_scaled(self, weight: torch.Tensor) -> torch.Tensor:
        gamma, alpha = self.rates
        if gamma <= 0 or alpha <= 0:
            return weight
        return scale_targeted(weight, self.targeted(weight, gamma), alpha)

    def folded(self, weight: torch.Tensor) -> torch.Tensor:
        """The plain weight export writes: with ``eval_scale`` the eval-mode read, whatever the
        module's mode; otherwise the raw weight (the eval mask is an evaluation choice, never
        exported: pruning sweeps evaluate the trained weights)."""
        if not self.config.eval_scale or self.config.td_type == "none":
            return weight
        with torch.no_grad():
            return self._eval_scaled(weight)

    def extra_repr(self) -> str:
        c = self.config
        gamma, alpha = self.rates
        return (f"td_type={c.td_type}, gamma={c.gamma}, alpha={c.alpha}, ramp_updates={c.ramp_updates}, "
                f"eval_mask={c.eval_mask}, pattern={c.pattern}, mask_interval={c.mask_interval}, "
                f"rescale={c.rescale}, eval_scale={c.eval_scale}, "
                f"now gamma={gamma:.4g} alpha={alpha:.4g}")


def apply_targeted_dropout(model: nn.Module, config: TDConfig, select) -> dict:
    """Targeted dropout on every selected weight; returns {module name: controller}."""
    return attach_views(model, lambda weight: TargetedDropout(config, tuple(weight.shape)), select)


def fold_eval_scale(state: dict, config: TDConfig, num_updates: int, is_target) -> dict:
    """A copy of a model state dict with each weight that targeted dropout views
    (``is_target(key, tensor)``) replaced by its view's ``folded`` weight at update
    ``num_updates``; a random control's ranking is read from ``<module>.td.random_score``.
    The state-dict twin of folding a model's views: the identity unless ``config.eval_scale``."""
    out = dict(state)
    if not config.eval_scale or config.td_type == "none":
        return out
    for key, weight in state.items():
        if not is_target(key, weight):
            continue
        view = TargetedDropout(config, tuple(weight.shape))
        view.set_num_updates(num_updates)
        if view.random_score is not None:
            view.random_score = state[key[: -len("weight")] + "td.random_score"]
        out[key] = view.folded(weight)
    return out
