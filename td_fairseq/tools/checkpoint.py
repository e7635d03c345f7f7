"""Export and prune fairseq checkpoints (read by ``loading.load_checkpoint``) as stock checkpoints.

A stock checkpoint has the TD machinery removed, the arch mapped to fairseq's own
``transformer*`` arch, the model config as a plain dict and no optimizer state: plain
``fairseq-generate`` loads it without ``--user-dir`` and without any environment variable.
Files are written in ``servable_state``'s form, which ``ct2-fairseq-converter`` loads too.
"""
import argparse
import os
from collections import OrderedDict

from ..files import UserError, check_out_dir, save_torch, write_json
from ..results import command_line, git_commit
from ..sparsity import follows_pattern, parse_kinds, sparsity_report
from ..sparsity.baselines import fold_state_dict
from ..sparsity.options import fill_defaults, option_keys, td_config
from ..sparsity.td import fold_eval_scale
from ..sparsity.patterns import check_pattern_shape, parse_pattern
from ..sparsity.selection import is_weight_matrix_key
from ..sparsity.sweep import MagnitudePruner, SweepConfig
from ..transformer_archs import STOCK_ARCH, is_transformer_arch
from .loading import arch_of, load_checkpoint, load_translation_model, model_config, not_td_error


def servable_state(state: dict) -> dict:
    """``state`` with cfg.model in the one form that stock ``fairseq-generate`` (torch's safe
    loader, no environment variable) and stock ``ct2-fairseq-converter`` (no
    ``--unsafe_deserialization``) both load: an OrderedDict that also holds its entries as
    attributes. The converter sets and reads attributes (``args.data = ...``), which a plain
    dict lacks; a Namespace or DictConfig has them but the safe loader refuses both. The safe
    loader allows OrderedDict and restores its attributes (kept for state dicts' _metadata)."""
    model = OrderedDict(model_config(state))
    model.__dict__.update({k: v for k, v in model.items() if not hasattr(OrderedDict, k)})  # never shadow a method
    return dict(state, cfg=dict(state["cfg"], model=model))


def update_count(state: dict) -> int:
    """The update count fairseq saved (and gives the model's schedules when it loads it)."""
    return (state.get("optimizer_history") or [{}])[-1].get("num_updates", 0)


def is_td_model(model: dict) -> bool:
    """Whether a model config trains with targeted dropout (not none, a baseline or a frozen mask)."""
    return (model.get("arch") or model.get("_name")) in STOCK_ARCH and model.get("td_type", "none") != "none" \
        and (model.get("sparsity_method") or "td") == "td" and not model.get("freeze_mask")


def eval_scaled_weights(state: dict, td_eval_scale=None, path: str = "the checkpoint") -> dict:
    """``state``'s model weights as its eval-mode TD views read them: with ``td_eval_scale``
    (True/False overrides the checkpoint's own option, an evaluation-only one) the targeted set
    of each TD weight scaled by 1 - alpha_t at the saved update count; else unchanged."""
    model = model_config(state)
    if td_eval_scale is None:
        td_eval_scale = bool(model.get("td_eval_scale"))
    if not td_eval_scale:
        return state["model"]
    if not is_td_model(model):
        raise not_td_error(path)
    kinds = parse_kinds(model.get("td_targets") or "attn,ffn")
    tied = model.get("share_all_embeddings") or model.get("share_decoder_input_output_embed")
    if tied and ("embed" in kinds) != ("output" in kinds):
        raise UserError(f"--td-eval-scale: {path} ties its embedding and output projection but targets one of "
                        "them: one tied weight cannot be both scaled and not")
    options = argparse.Namespace(**dict(model, td_eval_scale=True, td_eval_mask=False))
    fill_defaults(options)  # options newer than the checkpoint
    config = td_config(options)
    return fold_eval_scale(state["model"], config, update_count(state),
                           lambda key, tensor: is_weight_matrix_key(key, tensor, kinds))


def stock_checkpoint(state: dict, td_eval_scale=None, path: str = "the checkpoint") -> dict:
    """A copy of ``state`` that stock fairseq loads: no TD keys, args or optimizer state.

    Baseline views with state (L0 gates, variational dropout, GMP masks) are made
    permanent in the plain weights, as in eval mode, before their keys are dropped; so is
    TD's eval scale (``eval_scaled_weights``; ``td_eval_scale`` True/False overrides the
    checkpoint's option)."""
    arch = arch_of(state)
    if not is_transformer_arch(arch):
        raise UserError(f"checkpoint arch {arch!r} is not a Transformer this tool knows "
                        f"({', '.join(sorted(STOCK_ARCH))} or their stock counterparts)")
    stock = STOCK_ARCH.get(arch, arch)
    model = {k: v for k, v in model_config(state).items()
             if k not in option_keys()}
    model.update(_name=stock, arch=stock, user_dir=None)
    if model.get("criterion") == "label_smoothed_cross_entropy_td":
        model["criterion"] = "label_smoothed_cross_entropy"
    cfg = dict(state["cfg"], model=model)
    cfg["common"] = dict(cfg.get("common") or {}, user_dir=None)
    if (cfg.get("criterion") or {}).get("_name") == "label_smoothed_cross_entropy_td":
        cfg["criterion"] = dict(cfg["criterion"], _name="label_smoothed_cross_entropy")
    weights = fold_state_dict(eval_scaled_weights(state, td_eval_scale, path))
    return {
        "cfg": cfg,
        "args": None,
        # L0 gates, variational log alpha and GMP masks are folded into the weights first
        "model": {k: v for k, v in weights.items() if ".td." not in k},
        "optimizer_history": [{"criterion_name": "LabelSmoothedCrossEntropyCriterion", "optimizer_name": "none",
                               "lr_scheduler_state": {}, "num_updates": update_count(state)}],
        "extra_state": {},
    }


def prunable_weights(model_state: dict, kinds) -> dict:
    kinds = parse_kinds(kinds)
    return {k: v for k, v in model_state.items() if is_weight_matrix_key(k, v, kinds)}


def level_name(sparsity: float) -> str:
    return f"sparsity_{sparsity:.2f}.pt"


def check_pattern(weights: dict, pattern) -> None:
    """Every weight's rows must split into whole groups of M: say which one does not, up front."""
    for name, weight in weights.items():
        try:
            check_pattern_shape(weight.shape, parse_pattern(pattern), name)
        except ValueError as error:
            raise UserError(str(error))


def level_pruner(state: dict, path: str, kinds, mode: str, scope: str, pruner: str, data_bin=None,
                 calibration=(128, 1, "row"), pattern=None, td_eval_scale=None):
    """(pruner over the stock state's weights, calibration info). Wanda and SparseGPT run the
    model on calibration sentences of ``data_bin``'s training split."""
    weights = prunable_weights(state["model"], kinds)
    if not weights:
        raise UserError(f"--targets {','.join(kinds)} selects no weight of {path}")
    check_pattern(weights, pattern)
    if pruner == "magnitude":
        return MagnitudePruner(weights, mode, scope), {}
    if data_bin is None:
        raise UserError(f"--pruner {pruner} calibrates on training sentences: give --data-bin")
    if (mode, scope) != ("weight", "unit"):
        raise UserError(f"--pruner {pruner} prunes weights per output row: it needs --mode weight --scope unit")
    from .calibration import calibrated_pruner
    model, task, _ = load_translation_model(path, data_bin, td_eval_scale)
    params = {k: p for k, p in model.named_parameters() if k in weights}
    return calibrated_pruner(pruner, model, task, params, calibration)


def prune_checkpoint(path: str, sparsities, out_dir: str, mode="weight", scope="unit", kinds="attn,ffn",
                     command=None, pruner="magnitude", pattern=None, data_bin=None, calibration=(128, 1, "row"),
                     td_eval_scale=False) -> dict:
    """One stock pruned checkpoint per level in ``out_dir`` and a ``report.json``. With an N:M
    ``pattern`` the level is the pattern's, (M-N)/M. ``td_eval_scale``: prune a TD model's
    eval-scaled weights (as if trained with --td-eval-scale; False: its trained weights as they
    are, whatever its own option says, as the sweep evaluates them)."""
    try:
        config = SweepConfig(tuple(sparsities), mode, scope, pattern, pruner)
        kinds = parse_kinds(kinds)
    except ValueError as error:
        raise UserError(str(error))
    state = stock_checkpoint(load_checkpoint(path), td_eval_scale, path)
    out_dir = check_out_dir(out_dir, path, create=False)  # made before the first file: bad input leaves nothing
    level_pruner_, info = level_pruner(state, path, kinds, mode, scope, pruner, data_bin, calibration,
                                       config.pattern, td_eval_scale)
    os.makedirs(out_dir, exist_ok=True)
    report = {"checkpoint": os.path.abspath(path), "mode": mode, "scope": scope, "targets": ",".join(kinds),
              "pruner": pruner, "pattern": config.pattern_name, "td_eval_scale": td_eval_scale, **info,
              "calib_dtype": (calibration[3] if len(calibration) > 3 else "fp32") if pruner != "magnitude" else None,
              "command": command or command_line(), "commit": git_commit(), "levels": []}
    for sparsity in sorted(set(config.level_of(s) for s in config.levels)):
        pruned = level_pruner_.prune(sparsity, config.pattern)
        pruned = {k: v.detach().to(state["model"][k].dtype).cpu() for k, v in pruned.items()}
        save_torch(servable_state(dict(state, model={**state["model"], **pruned})),
                   os.path.join(out_dir, level_name(sparsity)))
        measured = sparsity_report(pruned)
        report["levels"].append({"requested_sparsity": sparsity, "file": level_name(sparsity),
                                 "measured_sparsity": measured["global"], "per_tensor": measured["per_tensor"],
                                 "pattern_holds": all(follows_pattern(t, config.pattern) for t in pruned.values())})
    write_json(os.path.join(out_dir, "report.json"), report)
    return report
