"""Read fairseq checkpoints with clear errors; export and prune them as stock checkpoints.

A stock checkpoint has the TD machinery removed, the arch mapped to fairseq's own
``transformer*`` arch, the model config as a plain dict and no optimizer state: plain
``fairseq-generate`` loads it without ``--user-dir`` and without any environment variable.
"""
import os
from collections.abc import Mapping

from ..files import UserError, check_out_dir, load_torch, save_torch, write_json
from ..results import command_line, git_commit
from ..sparsity import follows_pattern, parse_kinds, sparsity_report
from ..sparsity.baselines import fold_state_dict
from ..sparsity.options import option_keys
from ..sparsity.patterns import check_pattern_shape, parse_pattern
from ..sparsity.selection import is_weight_matrix_key
from ..sparsity.sweep import MagnitudePruner, SweepConfig
from .archs import STOCK_ARCH, is_transformer_arch

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


def stock_checkpoint(state: dict) -> dict:
    """A copy of ``state`` that stock fairseq loads: no TD keys, args or optimizer state.

    Baseline views with state (L0 gates, variational dropout, GMP masks) are made
    permanent in the plain weights, as in eval mode, before their keys are dropped."""
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
    history = (state.get("optimizer_history") or [{}])[-1]
    return {
        "cfg": cfg,
        "args": None,
        # L0 gates, variational log alpha and GMP masks are folded into the weights first
        "model": {k: v for k, v in fold_state_dict(state["model"]).items() if ".td." not in k},
        "optimizer_history": [{"criterion_name": "LabelSmoothedCrossEntropyCriterion", "optimizer_name": "none",
                               "lr_scheduler_state": {}, "num_updates": history.get("num_updates", 0)}],
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
                 calibration=(128, 1, "row"), pattern=None):
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
    from .translate import load_translation_model
    model, task, _ = load_translation_model(path, data_bin)
    params = {k: p for k, p in model.named_parameters() if k in weights}
    return calibrated_pruner(pruner, model, task, params, calibration)


def prune_checkpoint(path: str, sparsities, out_dir: str, mode="weight", scope="unit", kinds="attn,ffn",
                     command=None, pruner="magnitude", pattern=None, data_bin=None, calibration=(128, 1, "row")) -> dict:
    """One stock pruned checkpoint per level in ``out_dir`` and a ``report.json``. With an N:M
    ``pattern`` the level is the pattern's, (M-N)/M."""
    try:
        config = SweepConfig(tuple(sparsities), mode, scope, pattern, pruner)
        kinds = parse_kinds(kinds)
    except ValueError as error:
        raise UserError(str(error))
    state = stock_checkpoint(load_checkpoint(path))
    out_dir = check_out_dir(out_dir, path, create=False)  # made before the first file: bad input leaves nothing
    level_pruner_, info = level_pruner(state, path, kinds, mode, scope, pruner, data_bin, calibration,
                                       config.pattern)
    os.makedirs(out_dir, exist_ok=True)
    report = {"checkpoint": os.path.abspath(path), "mode": mode, "scope": scope, "targets": ",".join(kinds),
              "pruner": pruner, "pattern": config.pattern_name, **info,
              "command": command or command_line(), "commit": git_commit(), "levels": []}
    for sparsity in sorted(set(config.level_of(s) for s in config.levels)):
        pruned = level_pruner_.prune(sparsity, config.pattern)
        pruned = {k: v.detach().to(state["model"][k].dtype).cpu() for k, v in pruned.items()}
        save_torch(dict(state, model={**state["model"], **pruned}), os.path.join(out_dir, level_name(sparsity)))
        measured = sparsity_report(pruned)
        report["levels"].append({"requested_sparsity": sparsity, "file": level_name(sparsity),
                                 "measured_sparsity": measured["global"], "per_tensor": measured["per_tensor"],
                                 "pattern_holds": all(follows_pattern(t, config.pattern) for t in pruned.values())})
    write_json(os.path.join(out_dir, "report.json"), report)
    return report
