"""Targeted dropout: one weight view (``views``) among others.

Attached with ``views.attach_view``, it is seen by every reader of ``.weight``. Masking
is a ``masked_fill`` in the forward graph, so dropped entries get zero gradient and
``.data`` is never edited.
"""
import math
from dataclasses import dataclass

import torch
from torch import nn

from .masks import dropped_mask, targeted_unit_mask, targeted_weight_mask_warm
from .schedules import td_rates
from .views import WeightView, attach_views

TD_TYPES = ("none", "weight", "unit", "weight_random", "unit_random")


@dataclass(frozen=True)
class TDConfig:
    td_type: str = "weight"
    gamma: float = 0.75
    alpha: float = 0.66
    ramp_updates: int = 0
    eval_mask: bool = False

    def __post_init__(self):
        if self.td_type not in TD_TYPES:
            raise ValueError(f"td_type must be one of {', '.join(TD_TYPES)}, got {self.td_type!r}")
        for name in ("gamma", "alpha"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or math.isnan(value) or not 0 <= value <= 1:
                raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")
        if not isinstance(self.ramp_updates, int) or self.ramp_updates < 0:
            raise ValueError(f"ramp_updates must be a non-negative integer, got {self.ramp_updates!r}")

    @property
    def by_unit(self) -> bool:
        return self.td_type in ("unit", "unit_random")

    @property
    def random(self) -> bool:
        return self.td_type.endswith("_random")


class TargetedDropout(WeightView):
    """Maps a raw weight to its targeted-dropout view.

    Training: drops each targeted element with probability alpha_t, fresh on every read,
    no rescaling. Eval: the identity, or with ``eval_mask`` the deterministic removal of
    the whole targeted set (the official code's evaluation). The schedule follows the
    update count given to ``set_num_updates``, as fairseq does for every submodule.
    """

    log_prefix = "td"

    def __init__(self, config: TDConfig, weight_shape):
        super().__init__()
        self.config = config
        self._threshold = None  # warm start for the next selection, never saved
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
        return td_rates(self.num_updates, c.gamma, c.alpha, c.ramp_updates)

    def log_values(self) -> dict:
        gamma, alpha = self.rates
        return {"td_gamma": gamma, "td_alpha": alpha}

    def targeted(self, weight: torch.Tensor, gamma: float = None) -> torch.Tensor:
        gamma = self.rates[0] if gamma is None else gamma
        with torch.no_grad():
            if self.config.by_unit:
                return targeted_unit_mask(weight, gamma, self.random_score)
            mask, self._threshold = targeted_weight_mask_warm(weight, gamma, self.random_score, self._threshold)
            return mask

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        if self.config.td_type == "none":
            return weight
        gamma, alpha = self.rates
        if self.training:
            if gamma <= 0 or alpha <= 0:
                self._last_dropped = None
                return weight
            dropped = dropped_mask(self.targeted(weight, gamma), alpha)
            self._last_dropped = dropped
            return weight.masked_fill(dropped, 0.0)
        if self.config.eval_mask and gamma > 0:
            return weight.masked_fill(self.targeted(weight, gamma), 0.0)
        return weight

    def extra_repr(self) -> str:
        c = self.config
        gamma, alpha = self.rates
        return (f"td_type={c.td_type}, gamma={c.gamma}, alpha={c.alpha}, ramp_updates={c.ramp_updates}, "
                f"eval_mask={c.eval_mask}, now gamma={gamma:.4g} alpha={alpha:.4g}")


def apply_targeted_dropout(model: nn.Module, config: TDConfig, select) -> dict:
    """Targeted dropout on every selected weight; returns {module name: controller}."""
    return attach_views(model, lambda weight: TargetedDropout(config, tuple(weight.shape)), select)
