"""Each baseline's own pruning score, read from a state dict before its views are folded.

The paper prunes L0 models by gate value and variational-dropout models by log alpha; a
sweep over levels needs a ranking, so the score is the quantity the method thresholds
(higher = kept): L0's log alpha (monotone in the gate, and free of the ties that clamped
gates have), variational dropout's -log alpha (unclamped), Smallify's live |switch|.
Per-unit scores (unit-form L0 gates, Smallify switches) only rank units; per-weight
scores (weight-form L0, variational) only rank weights. Where a method offers no score for
the pruning mode, the caller falls back to magnitude.
"""
import torch


def _l0(state, owner, mode):
    log_alpha = state[f"{owner}td.log_alpha"].float()
    per_unit = log_alpha.shape != state[f"{owner}weight"].shape
    if mode == "unit":
        return log_alpha.reshape(-1) if per_unit else None
    return None if per_unit else log_alpha


def _variational(state, owner, mode):
    if mode == "unit":
        return None
    weight = state[f"{owner}weight"].float()
    return torch.log(weight * weight + 1e-8) - state[f"{owner}td.log_sigma2"].float()


def _smallify(state, owner, mode):
    if mode != "unit":
        return None
    switch = state[f"{owner}td.switch"].float()
    pruned = state.get(f"{owner}td.pruned", torch.zeros(switch.shape, dtype=torch.bool))
    return switch.abs().masked_fill(pruned.reshape(switch.shape), 0.0).reshape(-1)


# state-dict name under <module>.td. -> (score name, function)
OWN_SCORES = {"log_alpha": ("l0_log_alpha", _l0), "log_sigma2": ("vd_neg_log_alpha", _variational),
              "switch": ("smallify_switch", _smallify)}


def own_scores(state: dict, mode: str) -> dict:
    """{weight key: (score name, score tensor)} for the views in ``state`` that score ``mode``.

    Weight mode: a tensor of the weight's shape; unit mode: one value per unit.
    """
    out = {}
    for key in state:
        prefix, sep, name = ("." + key).rpartition(".td.")
        owner = prefix[1:] + "." if prefix else ""
        if not sep or name not in OWN_SCORES or f"{owner}weight" not in state:
            continue
        label, score = OWN_SCORES[name]
        value = score(state, owner, mode)
        if value is not None:
            out[f"{owner}weight"] = (label, value)
    return out

