"""The targeted-dropout mechanism: a controller seen by every reader of ``.weight``.

``attach`` swaps a module's class for a subclass whose ``weight`` is a property
returning ``controller(raw_weight)``. The raw parameter stays in ``_parameters`` under
its own name, so state-dict keys, the optimizer and tied parameters are unchanged,
while anything that reads ``module.weight`` (``F.linear``, fairseq's attention fast
path, conv forward) sees the masked tensor. Masking is a ``masked_fill`` in the
forward graph, so dropped entries get zero gradient and ``.data`` is never edited.
"""
import math
from dataclasses import dataclass

import torch
from torch import nn

from .masks import dropped_mask, targeted_unit_mask, targeted_weight_mask_warm
from .schedules import td_rates

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


class TargetedDropout(nn.Module):
    """Maps a raw weight to its targeted-dropout view.

    Training: drops each targeted element with probability alpha_t, fresh on every read,
    no rescaling. Eval: the identity, or with ``eval_mask`` the deterministic removal of
    the whole targeted set (the official code's evaluation). The schedule follows the
    update count given to ``set_num_updates``, as fairseq does for every submodule.
    """

    def __init__(self, config: TDConfig, weight_shape):
        super().__init__()
        self.config = config
        self.num_updates = 0
        self._last_dropped = None
        self._threshold = None  # warm start for the next selection, never saved
        if config.random:
            # A fixed random ranking, saved with the model, so the random subset is the
            # same at every step and after a resume. Nested as gamma ramps up.
            shape = weight_shape[:1] if config.by_unit else weight_shape
            self.register_buffer("random_score", torch.rand(shape))
        else:
            self.random_score = None

    def set_num_updates(self, num_updates: int):
        self.num_updates = num_updates

    @property
    def rates(self):
        c = self.config
        return td_rates(self.num_updates, c.gamma, c.alpha, c.ramp_updates)

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

    def drop_stats(self, weight_numel: int):
        """(dropped, total) weights in the last training read; dropped is a tensor."""
        if self._last_dropped is None:
            return None
        dropped = self._last_dropped
        scale = weight_numel // dropped.numel()  # unit masks broadcast over a row
        return dropped.sum() * scale, weight_numel

    def extra_repr(self) -> str:
        c = self.config
        gamma, alpha = self.rates
        return (f"td_type={c.td_type}, gamma={c.gamma}, alpha={c.alpha}, ramp_updates={c.ramp_updates}, "
                f"eval_mask={c.eval_mask}, now gamma={gamma:.4g} alpha={alpha:.4g}")


_TD_CLASSES = {}


def _td_weight(module):
    return module.td(module._parameters["weight"])


def _td_class(cls):
    if cls not in _TD_CLASSES:
        _TD_CLASSES[cls] = type(f"TD{cls.__name__}", (cls,), {"weight": property(_td_weight), "_td_base": cls})
    return _TD_CLASSES[cls]


def attach(module: nn.Module, controller: TargetedDropout) -> nn.Module:
    """Route reads of ``module.weight`` through ``controller``. Keys stay unchanged."""
    if hasattr(type(module), "_td_base"):
        raise ValueError(f"{type(module).__name__} already has targeted dropout attached")
    if not isinstance(module._parameters.get("weight"), nn.Parameter):
        raise ValueError(f"{type(module).__name__} has no weight parameter to target")
    module.__class__ = _td_class(type(module))
    module.add_module("td", controller.train(module.training))
    return module


def detach(module: nn.Module) -> nn.Module:
    """Undo ``attach``: the module reads its raw weight again."""
    base = getattr(type(module), "_td_base", None)
    if base is not None:
        del module._modules["td"]
        module.__class__ = base
    return module


def attach_views(model: nn.Module, make_view, select) -> dict:
    """Attach ``make_view(weight)`` to every module whose weight (dim >= 2) satisfies
    ``select(name, module)``. A parameter shared by several modules (tied embeddings) gets
    one view, so it is seen the same wherever it is read. Returns {module name: view}."""
    by_param, attached = {}, {}
    for name, module in list(model.named_modules(remove_duplicate=False)):
        weight = module._parameters.get("weight") if hasattr(module, "_parameters") else None
        if weight is None or weight.dim() < 2 or hasattr(type(module), "_td_base"):
            continue
        if not select(name, module):
            continue
        view = by_param.get(id(weight))
        if view is None:
            view = by_param[id(weight)] = make_view(weight)
        attach(module, view)
        attached[name] = view
    return attached


def apply_targeted_dropout(model: nn.Module, config: TDConfig, select) -> dict:
    """Targeted dropout on every selected weight; returns {module name: controller}."""
    return attach_views(model, lambda weight: TargetedDropout(config, tuple(weight.shape)), select)


def td_modules(model: nn.Module):
    """(name, module) for every module with TD attached."""
    return [(n, m) for n, m in model.named_modules() if hasattr(type(m), "_td_base")]


def remove_targeted_dropout(model: nn.Module) -> nn.Module:
    for _, module in td_modules(model):
        detach(module)
    return model


def drop_fraction(model: nn.Module, modules=None):
    """Fraction of TD-covered weights dropped in the last training forward (a tensor).
    ``modules``: the result of ``td_modules(model)``, when the caller already has it."""
    seen, dropped, total = set(), 0, 0
    for _, module in td_modules(model) if modules is None else modules:
        if id(module.td) in seen:
            continue
        seen.add(id(module.td))
        stats = module.td.drop_stats(module._parameters["weight"].numel())
        if stats is not None:
            dropped, total = dropped + stats[0], total + stats[1]
    return None if total == 0 else dropped / total
