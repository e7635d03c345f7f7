"""The paper's baselines as weight views, attached like targeted dropout.

Each view (in ``baseline_views``) is attached by ``views.attach_view``, so every reader of ``.weight`` (fairseq's attention fast path
included) sees ``view(raw_weight)``. Views that add a term to the objective expose
``regularization_loss()``, which the criterion's hook picks up. Views with state save
it under ``<module>.td.<name>``; ``fold_state_dict`` turns those into plain weights.

- ``dropout`` / ``unit_dropout``: every weight / unit dropped with probability ``rate``,
  fresh on each training read, survivors scaled by 1 / (1 - rate) (standard dropout).
- ``l1``: identity view, penalty ``coef * sum |w|``.
- ``l0``: hard-concrete gates (Louizos et al. 2018), one per weight or per unit.
- ``variational``: sparse variational dropout (Molchanov et al. 2017), additive noise.
- ``gmp``: gradual magnitude pruning (Zhu and Gupta 2017), mask frozen between updates.
- ``smallify``: a switch per unit under an L1 penalty (Leclerc et al. 2018); units whose
  switch sign oscillates (sign variance above a threshold) are removed for good.
"""
from dataclasses import dataclass

import torch
from torch import nn

from .views import attach_views, remove_views, view, views_of
# the views are re-exported: callers need one import for config, views and export
from .baseline_views import (VD_THRESHOLD, GradualMagnitudePruning, L0Gate, L1Penalty, RandomDropout,  # noqa: F401
                           Smallify, VariationalDropout, WeightView, gmp_mask_step, l0_eval_gate,
                           variational_log_alpha)

METHODS = ("dropout", "unit_dropout", "l1", "l0", "variational", "gmp", "smallify")
L0_FORMS = ("weight", "unit")


@dataclass(frozen=True)
class BaselineConfig:
    method: str
    drop_rate: float = 0.0
    l1_coef: float = 0.0
    l0_coef: float = 0.0
    l0_form: str = "weight"
    vd_coef: float = 0.0
    gmp_sparsity: float = 0.9
    gmp_start: int = 0
    gmp_steps: int = 100
    gmp_interval: int = 100
    smallify_coef: float = 0.0
    smallify_momentum: float = 0.9
    smallify_threshold: float = 0.5

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if self.l0_form not in L0_FORMS:
            raise ValueError(f"l0_form must be one of {', '.join(L0_FORMS)}, got {self.l0_form!r}")
        for name in ("drop_rate", "gmp_sparsity"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)!r}")
        for name in ("l1_coef", "l0_coef", "vd_coef", "smallify_coef"):
            if not getattr(self, name) >= 0.0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        if self.gmp_start < 0 or self.gmp_steps < 1 or self.gmp_interval < 1:
            raise ValueError("gmp_start must be >= 0, gmp_steps and gmp_interval >= 1")
        if not 0.0 <= self.smallify_momentum < 1.0:
            raise ValueError(f"smallify_momentum must be in [0, 1), got {self.smallify_momentum!r}")
        if not self.smallify_threshold > 0.0:
            raise ValueError(f"smallify_threshold must be > 0, got {self.smallify_threshold!r}")


def regularization_loss(model: nn.Module):
    """Sum of every submodule's ``regularization_loss()`` (None terms skipped), or None.
    Callers add it to the mean loss of a batch."""
    terms = [m.regularization_loss() for m in model.modules() if hasattr(m, "regularization_loss")]
    terms = [t for t in terms if t is not None]
    return sum(terms) if terms else None


def make_view(config: BaselineConfig, weight: torch.Tensor) -> WeightView:
    c = config
    builders = {
        "dropout": lambda: RandomDropout(weight, c.drop_rate),
        "unit_dropout": lambda: RandomDropout(weight, c.drop_rate, by_unit=True),
        "l1": lambda: L1Penalty(weight, c.l1_coef),
        "l0": lambda: L0Gate(weight, c.l0_coef, by_unit=c.l0_form == "unit"),
        "variational": lambda: VariationalDropout(weight, c.vd_coef),
        "gmp": lambda: GradualMagnitudePruning(weight, c.gmp_sparsity, c.gmp_start, c.gmp_steps, c.gmp_interval),
        "smallify": lambda: Smallify(weight, c.smallify_coef, c.smallify_momentum, c.smallify_threshold),
    }
    return builders[c.method]()


def apply_baseline(model: nn.Module, config: BaselineConfig, select) -> dict:
    """Attach ``make_view(config, weight)`` as ``apply_targeted_dropout`` attaches TD."""
    return attach_views(model, lambda weight: make_view(config, weight), select)


# the keys each view folds into its module's weight, and the state saved beside them
FOLDED = {"log_alpha": (), "log_sigma2": (), "mask": ("mask_step",), "switch": ("pruned", "sign_mean", "sign_var")}


def fold_state_dict(state: dict) -> dict:
    """A copy of a model state dict with the views made permanent in plain weights.

    ``<m>.td.log_alpha`` (L0) multiplies ``<m>.weight`` by the eval gate, ``<m>.td.log_sigma2``
    (variational) zeroes weights with log alpha > 3, ``<m>.td.mask`` (GMP) zeroes the mask,
    ``<m>.td.switch`` (Smallify) multiplies each row by its switch times ``not <m>.td.pruned``;
    those keys (and ``mask_step``, ``pruned``, ``sign_mean``, ``sign_var``) are dropped. A view
    has one folding key, so each weight is folded once. Other keys are returned unchanged.
    """
    out = dict(state)
    for key, value in state.items():
        prefix, sep, name = ("." + key).rpartition(".td.")
        owner = prefix[1:] + "." if prefix else ""  # "" for a view on the root module
        if not sep or f"{owner}weight" not in state or name not in FOLDED:
            continue
        weight = out[f"{owner}weight"]
        if name == "log_alpha":
            weight = weight * l0_eval_gate(value).to(weight.dtype)
        elif name == "log_sigma2":
            weight = weight.masked_fill(variational_log_alpha(weight, value) > VD_THRESHOLD, 0.0)
        elif name == "switch":
            weight = weight * (value * ~state[f"{owner}td.pruned"]).to(weight.dtype)
        else:
            weight = weight.masked_fill(value, 0.0)
        out[f"{owner}weight"] = weight
        for dropped in (name,) + FOLDED[name]:
            out.pop(f"{owner}td.{dropped}", None)
    return out


def fold_views(model: nn.Module) -> dict:
    """Make the views permanent in plain weights (``fold_state_dict``, then each view's
    ``folded``: TD's eval scale) and detach every view, targeted dropout's included. Returns
    the state dict as it was, for own-score rankings."""
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    folded = fold_state_dict(state)
    changed = set()
    for name, module in views_of(model):
        key = f"{name}.weight" if name else "weight"
        weight = view(module).folded(folded[key])
        if weight is not folded[key]:
            folded[key] = weight
            changed.add(key)
    _check_tied(model, changed)
    remove_views(model)
    model.load_state_dict({k: folded[k] for k in model.state_dict()})
    return state


def _check_tied(model: nn.Module, changed: set) -> None:
    """A weight shared by several modules is one tensor after folding: refuse one that a view
    changes for some of its readers only (a tied embedding targeted on one side)."""
    readers = {}
    for key, param in model.named_parameters(remove_duplicate=False):
        readers.setdefault(id(param), []).append(key)
    for keys in readers.values():
        plain = [k for k in keys if k not in changed]
        if plain and len(plain) < len(keys):
            raise ValueError(f"{plain[0]} shares its weight with {sorted(set(keys) - set(plain))[0]}, whose view "
                             "changes it in eval mode: one tied weight cannot hold both (target both sides)")
