"""Weight views: a module that maps a raw weight to the weight every reader sees.

``attach_view`` swaps a module's class for a subclass whose ``weight`` is a property
returning ``view(raw_weight)``. The raw parameter stays in ``_parameters`` under its own
name, so state-dict keys, the optimizer and tied parameters are unchanged, while anything
that reads ``module.weight`` (``F.linear``, fairseq's attention fast path, conv forward)
sees the view. Views mask or scale inside the forward graph, so autograd is right and
``.data`` is never edited. Targeted dropout is one view; the baselines (``baselines``) and
the frozen pruning mask are others.

The view is registered as the submodule ``td``: every checkpoint written so far stores view
state under ``<module>.td.<name>``, and keeping that key keeps them loading unchanged.
"""
from typing import Optional

import torch
from torch import nn

VIEW_KEY = "td"  # submodule name of a view; part of the checkpoint format (see above)
_VIEWED_CLASSES = {}


class WeightView(nn.Module):
    """Base of every view: the identity, plus the hooks the criterion and trainers call.

    ``set_num_updates`` gives the schedule its step (fairseq calls it on every submodule);
    ``log_values`` are scalars logged per step; ``drop_stats`` feeds the logged fraction of
    weights the view zeroed in the last training read; ``regularization_loss`` is a term
    the criterion adds to the objective. The raw weight is kept by reference, never
    registered, so keys stay unchanged.
    """

    log_prefix = "view"

    def __init__(self, weight: Optional[torch.Tensor] = None):
        super().__init__()
        self._raw = [weight]
        self.num_updates = 0
        self._last_dropped = None

    @property
    def raw_weight(self) -> torch.Tensor:
        return self._raw[0]

    def set_num_updates(self, num_updates: int):
        self.num_updates = num_updates

    @property
    def rates(self):
        """(fraction of weights the view may remove, probability of removing one)."""
        return 0.0, 0.0

    def log_values(self) -> dict:
        return {}

    def drop_stats(self, weight_numel: int):
        """(dropped, total) weights in the last training read; dropped is a tensor."""
        if self._last_dropped is None:
            return None
        dropped = self._last_dropped
        return dropped.sum() * (weight_numel // dropped.numel()), weight_numel  # unit masks broadcast

    def regularization_loss(self) -> Optional[torch.Tensor]:
        return None

    def folded(self, weight: torch.Tensor) -> torch.Tensor:
        """The plain weight export writes for what the view's *config* changes in eval mode
        (TD's ``eval_scale``); view *state* is folded from its keys (``baselines.fold_state_dict``)."""
        return weight

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight


def _viewed_weight(module):
    return getattr(module, VIEW_KEY)(module._parameters["weight"])


def _viewed_class(cls):
    if cls not in _VIEWED_CLASSES:
        _VIEWED_CLASSES[cls] = type(f"Viewed{cls.__name__}", (cls,),
                                    {"weight": property(_viewed_weight), "_view_base": cls})
    return _VIEWED_CLASSES[cls]


def has_view(module: nn.Module) -> bool:
    return hasattr(type(module), "_view_base")


def attach_view(module: nn.Module, view: nn.Module) -> nn.Module:
    """Route reads of ``module.weight`` through ``view``. Keys stay unchanged."""
    if has_view(module):
        raise ValueError(f"{type(module).__name__} already has a weight view attached")
    if not isinstance(module._parameters.get("weight"), nn.Parameter):
        raise ValueError(f"{type(module).__name__} has no weight parameter to view")
    module.__class__ = _viewed_class(type(module))
    module.add_module(VIEW_KEY, view.train(module.training))
    return module


def detach_view(module: nn.Module) -> nn.Module:
    """Undo ``attach_view``: the module reads its raw weight again."""
    base = getattr(type(module), "_view_base", None)
    if base is not None:
        del module._modules[VIEW_KEY]
        module.__class__ = base
    return module


def attach_views(model: nn.Module, make_view, select) -> dict:
    """Attach ``make_view(weight)`` to every module whose weight (dim >= 2) satisfies
    ``select(name, module)``. A parameter shared by several modules (tied embeddings) gets
    one view, so it is seen the same wherever it is read. Returns {module name: view}."""
    by_param, attached = {}, {}
    for name, module in list(model.named_modules(remove_duplicate=False)):
        weight = module._parameters.get("weight") if hasattr(module, "_parameters") else None
        if weight is None or weight.dim() < 2 or has_view(module) or not select(name, module):
            continue
        view = by_param.get(id(weight))
        if view is None:
            view = by_param[id(weight)] = make_view(weight)
        attach_view(module, view)
        attached[name] = view
    return attached


def views_of(model: nn.Module) -> list:
    """(name, module) for every module with a view attached."""
    return [(n, m) for n, m in model.named_modules() if has_view(m)]


def view(module: nn.Module) -> nn.Module:
    return getattr(module, VIEW_KEY)


def remove_views(model: nn.Module) -> nn.Module:
    for _, module in views_of(model):
        detach_view(module)
    return model


def set_num_updates(model: nn.Module, num_updates: int) -> None:
    """Tell every submodule the update count, as fairseq's trainer does."""
    for module in model.modules():
        if module is not model and hasattr(module, "set_num_updates"):
            module.set_num_updates(num_updates)


def distinct_views(modules) -> list:
    """The views of (name, module) pairs, each once (a tied weight has one view)."""
    seen, out = set(), []
    for _, module in modules:
        v = view(module)
        if id(v) not in seen:
            seen.add(id(v))
            out.append((module, v))
    return out


def drop_fraction(model: nn.Module, modules=None):
    """Fraction of viewed weights zeroed in the last training forward (a tensor), or None.
    ``modules``: the result of ``views_of(model)``, when the caller already has it."""
    dropped, total = 0, 0
    for module, v in distinct_views(views_of(model) if modules is None else modules):
        stats = v.drop_stats(module._parameters["weight"].numel())
        if stats is not None:
            dropped, total = dropped + stats[0], total + stats[1]
    return None if total == 0 else dropped / total
