"""Load a fairseq translation checkpoint: the file, read with one-line errors, and the model
for evaluation. Both export (``checkpoint``) and decoding (``translate``) load through here, so
neither needs the other.

Evaluation applies exactly the requested pruning to the trained weights and nothing else: the
views (targeted dropout and its eval mask included) are removed after loading, a baseline's view
being made permanent first (gates, log sigma^2, GMP masks, switches folded into the weights, as
export does), so its model is evaluated as trained. TD's eval scale (the targeted set times
1 - alpha) is folded the same way when asked for (``load_translation_model``'s ``td_eval_scale``).
"""
import glob
import os
from collections.abc import Mapping
from dataclasses import replace

from ..files import UserError, first_line, load_torch
from ..sparsity import TargetedDropout
from ..sparsity.baselines import fold_views
from ..sparsity.views import distinct_views, views_of
from ..transformer_archs import is_transformer_arch


def load_checkpoint(path: str) -> dict:
    """A fairseq translation checkpoint, or one line saying what the file is instead."""
    state = load_torch(path)
    if isinstance(state, dict) and "state_dict" in state and "arch" in state and "model" not in state:
        raise UserError(f"{path} is a vision checkpoint (td_fairseq.vision, arch {state.get('arch')}); "
                        "expected a fairseq translation checkpoint with 'model' and 'cfg' entries")
    if not isinstance(state, dict) or "model" not in state or not state.get("cfg"):
        raise UserError(f"{path} is not a fairseq checkpoint (no 'model' and 'cfg' entries)")
    return state


def model_config(state: dict) -> dict:
    """cfg.model as a dict, whether saved as a Namespace (legacy args), a dict (our stock
    export) or, once fairseq has loaded the state, an OmegaConf DictConfig (a Mapping)."""
    model = state["cfg"]["model"]
    return dict(model) if isinstance(model, Mapping) else dict(vars(model))


def arch_of(state: dict) -> str:
    return model_config(state).get("arch") or model_config(state).get("_name")


def not_td_error(path: str) -> UserError:
    return UserError(f"--td-eval-scale: {path} is not a targeted-dropout checkpoint (td_type none, a baseline "
                     "or a stock model): it has no targeted set to scale")


def check_data_bin(data_bin: str) -> None:
    if not os.path.isdir(data_bin):
        raise UserError(f"data-bin directory not found: {data_bin}")
    if not glob.glob(os.path.join(data_bin, "dict.*.txt")):
        inner = sorted(os.path.dirname(p) for p in glob.glob(os.path.join(data_bin, "*", "dict.*.txt")))
        hint = f" (did you mean {inner[0]}?)" if inner else ""
        raise UserError(f"{data_bin} is not a fairseq data-bin: it has no dict.*.txt{hint}")


def set_eval_scale(model, on: bool, path: str) -> None:
    """Evaluate a TD model as if trained with (``on``) or without --td-eval-scale: an evaluation-only
    option, so one checkpoint gives both evaluations without retraining."""
    views = [v for _, v in distinct_views(views_of(model))
             if isinstance(v, TargetedDropout) and v.config.td_type != "none"]
    if on and not views:
        raise not_td_error(path)
    for v in views:
        v.config = replace(v.config, eval_scale=on)


def load_translation_model(path: str, data_bin: str, td_eval_scale=None):
    """(model, task, state before folding) from a checkpoint, views folded and removed.
    ``td_eval_scale`` True/False overrides the checkpoint's --td-eval-scale (None: its own).
    fairseq's loader gives the views the saved update count, so a ramp's alpha_t is the last one."""
    from fairseq import checkpoint_utils

    import td_fairseq.models  # noqa: F401  (TD archs must be registered to load TD checkpoints)
    check_data_bin(data_bin)
    arch = arch_of(load_checkpoint(path))  # one-line errors for missing, truncated, foreign files
    if not is_transformer_arch(arch):
        raise UserError(f"checkpoint {path} has arch {arch!r}, not a Transformer this tool evaluates")
    overrides = {"data": data_bin}
    try:
        models, _, task = checkpoint_utils.load_model_ensemble_and_task([path], overrides)
    except FileNotFoundError as error:
        raise UserError(f"data-bin {data_bin} lacks a file the checkpoint's task needs: {error.filename or error}")
    except RuntimeError as error:
        if "size mismatch" in str(error):
            raise UserError(f"the dictionary in {data_bin} does not match checkpoint {path} (embedding sizes differ)")
        raise
    if td_eval_scale is not None:
        set_eval_scale(models[0], td_eval_scale, path)
    try:
        state = fold_views(models[0])
    except ValueError as error:  # a tied weight that a view scales for one of its readers only
        raise UserError(f"{path}: {first_line(error)}")
    models[0].autocast_dtype = None  # trained with --bf16 or not, evaluation chooses its own precision
    return models[0].eval(), task, state
