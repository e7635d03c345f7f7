"""BLEU against sparsity: load each checkpoint once, rank (or calibrate) once, then for each level
prune in memory, translate and score (the core's ``prune_evaluate`` with ``TranslationEvaluator``).

Reruns into an existing folder add only missing rows. A folder holds one set of *settings* (data,
subset, reference, detokenizer, decoding, targets, engine and its quantization): a rerun whose
settings differ is refused with a line naming the setting, so the table, the plot and results.csv
never mix numbers made differently. Rows of different pruning (mode, scope, score, pruner, pattern, calibration) live
side by side; each is keyed by all of those, its label, and its checkpoint's path, size and mtime.
So do rows with and without TD's eval scale (``td_eval_scale``: the targeted set times 1 - alpha,
decided by the sweep for every TD checkpoint, whatever the checkpoint's own option).
"""
import os
import time

from ..files import UserError, check_out_dir
from ..results import SWEEP_COLUMNS, command_line, git_commit, load_rows, machine, plot_curves, write_rows
from ..sparsity import parse_kinds
from ..sparsity.scores import own_scores
from ..sparsity.selection import is_weight_matrix_key
from ..sparsity.sweep import MagnitudePruner, SweepConfig, prune_evaluate
from .checkpoint import check_pattern
from .loading import load_translation_model
from .translate import (DecodeConfig, TranslationEvaluator, check_max_tokens, load_spm, load_subset, read_reference,
                        resolve_device)

SCORES = ("magnitude", "own")
PRUNERS = ("magnitude", "wanda", "sparsegpt")
MASK_GROUPS = ("row", "block")
SETTINGS = ("data_bin", "subset", "ref", "spm", "beam", "lenpen", "max_len_a", "max_len_b", "targets", "engine",
            "quantization", "dtype")
# rows written before the engine and the decoding dtype were recorded
SETTING_DEFAULTS = {"engine": "fairseq", "quantization": None, "dtype": "fp32"}
ROW_KEY = ("label", "checkpoint", "checkpoint_size", "checkpoint_mtime", "mode", "scope", "score", "pruner",
           "pattern", "mask_groups", "calib_sentences", "calib_seed", "td_eval_scale")
KEY_DEFAULTS = {"td_eval_scale": False}  # rows written before the column
COLUMNS = SWEEP_COLUMNS + [
    "score", "ranked_by", "pruner", "pattern", "td_eval_scale", "mask_groups", "calib_sentences", "calib_seed",
    "calib_split", "prune_seconds", "bleu", "chrf", "retention", "signature", "decode_seconds", "sentences", "beam",
    "lenpen", "max_len_a", "max_len_b", "targets", "subset", "data_bin", "ref", "spm", "device", "checkpoint_size",
    "checkpoint_mtime", "engine", "quantization", "dtype", "convert_seconds", "command", "commit", "machine"]
CHECKPOINT_FILES = ("checkpoint_last", "checkpoint_best")


def default_labels(checkpoints) -> list:
    """The file name, or its folder's for fairseq's own names (checkpoint_last.pt, checkpoint12.pt)."""
    labels = []
    for path in checkpoints:
        stem = os.path.splitext(os.path.basename(path))[0]
        fairseq_name = stem in CHECKPOINT_FILES or (stem.startswith("checkpoint") and stem[10:].isdigit())
        labels.append(os.path.basename(os.path.dirname(os.path.abspath(path))) if fairseq_name else stem)
    return labels


def check_labels(checkpoints, labels) -> list:
    labels = list(labels) if labels else default_labels(checkpoints)
    if len(labels) != len(checkpoints):
        raise UserError(f"{len(checkpoints)} checkpoints but {len(labels)} labels")
    for label in set(labels):
        paths = {os.path.abspath(c) for c, l in zip(checkpoints, labels) if l == label}
        if labels.count(label) > 1:
            raise UserError(f"label {label!r} is given to {len(paths)} checkpoints ({', '.join(sorted(paths))}); "
                            "labels must be unique: give one --label per checkpoint")
    return labels


def settings_of(data_bin, decode: DecodeConfig, kinds) -> dict:
    return {"data_bin": os.path.abspath(data_bin), "subset": decode.subset,
            "ref": decode.ref and os.path.abspath(decode.ref), "spm": decode.spm and os.path.abspath(decode.spm),
            "beam": decode.beam, "lenpen": decode.lenpen, "max_len_a": decode.max_len_a,
            "max_len_b": decode.max_len_b, "targets": ",".join(kinds), "engine": decode.engine,
            "quantization": decode.quantization, "dtype": decode.dtype}


def check_settings(rows, settings, out_dir) -> None:
    """Refuse a folder whose rows were made with other settings (naming the first that differs)."""
    for row in rows:
        row = dict(SETTING_DEFAULTS, **row)
        for name in SETTINGS:
            if name not in row:
                raise UserError(f"{out_dir} holds rows of an older td_fairseq that does not record '{name}'; "
                                "choose another --out")
            if row[name] != settings[name]:
                raise UserError(f"{out_dir} holds rows made with {name} = {row[name]!r}, this run asks for "
                                f"{settings[name]!r}: choose another --out (one folder, one set of settings)")


def check_label_owners(rows, checkpoints, labels, out_dir) -> None:
    for path, label in zip(checkpoints, labels):
        owners = {r["checkpoint"] for r in rows if r["label"] == label} - {os.path.abspath(path)}
        if owners:
            raise UserError(f"label {label!r} in {out_dir} belongs to {owners.pop()}, not {os.path.abspath(path)}: "
                            "give another --label")


def row_key(row) -> tuple:
    return tuple(row.get(k, KEY_DEFAULTS.get(k)) for k in ROW_KEY) + (round(float(row["requested_sparsity"]), 6),)


def series(row) -> str:
    """A row's curve: its label, plus how it was pruned when that is not the paper's default."""
    parts = [row.get("pruner", "magnitude")] if row.get("pruner", "magnitude") != "magnitude" else []
    if row.get("mode", "weight") != "weight":
        parts.append(f"{row['mode']} pruning")
    if row.get("pattern", "unstructured") != "unstructured":
        parts.append(row["pattern"])
    if row.get("score", "magnitude") != "magnitude":
        parts.append(f"{row['score']} score")
    if row.get("mask_groups") == "block":
        parts.append("block masks")
    if row.get("td_eval_scale"):
        parts.append("eval-scaled")
    return row["label"] + (f" [{', '.join(parts)}]" if parts else "")


def add_retention(rows, reference_label):
    if reference_label is None:
        return
    dense = [r["bleu"] for r in rows if r["label"] == reference_label and float(r["requested_sparsity"]) == 0]
    for r in rows:
        r["retention"] = round(r["bleu"] / dense[0], 4) if dense and dense[0] > 0 else ""


def ranking_scores(state, originals, mode, score):
    """(scores for the ranking or None, what was ranked by: the 'ranked_by' column)."""
    if score == "magnitude":
        return None, "magnitude"
    own = {k: v for k, v in own_scores(state, mode).items() if k in originals}
    names = sorted({label for label, _ in own.values()})
    if len(own) < len(originals):
        names.append("magnitude")
    return {k: value for k, (_, value) in own.items()}, "+".join(names)


def make_pruner(config: SweepConfig, model, task, params, originals, state, score, calibration):
    """(pruner, its row fields): magnitude ranks once; Wanda and SparseGPT calibrate first."""
    if config.pruner == "magnitude":
        scores, ranked_by = ranking_scores(state, originals, config.mode, score)
        return MagnitudePruner(originals, config.mode, config.scope, scores), {"ranked_by": ranked_by}
    if config.mode != "weight" or config.scope != "unit" or score != "magnitude":
        raise UserError(f"--pruner {config.pruner} prunes weights per output row: it needs --mode weight "
                        "--scope unit --score magnitude")
    from .calibration import calibrated_pruner
    pruner, info = calibrated_pruner(config.pruner, model, task, params, calibration)
    return pruner, {"ranked_by": config.pruner, **info}


def run_sweep(data_bin, checkpoints, labels, config: SweepConfig, decode: DecodeConfig, out_dir,
              kinds="attn,ffn", max_tokens=4000, reference_label=None, command=None, progress=True,
              score="magnitude", device="auto", calibration=(128, 1, "row"), td_eval_scale=False):
    """Run (or resume) the sweep; rows are written after every level. Returns all rows.
    ``calibration``: (sentences, seed, mask groups) for Wanda and SparseGPT."""
    try:
        kinds = parse_kinds(kinds)
    except ValueError as error:
        raise UserError(str(error))
    device = resolve_device(device)
    labels = check_labels(checkpoints, labels)
    spm = load_spm(decode.spm) if decode.spm is not None else None
    # made at the first row, so that bad input found later leaves nothing
    out_dir = check_out_dir(out_dir, *checkpoints, create=False)
    rows = load_rows(out_dir)
    # the reference may be swept in this call or be in the folder already (one model per call)
    known = sorted(set(labels) | {r["label"] for r in rows})
    if reference_label is not None and reference_label not in known:
        raise UserError(f"--reference-label {reference_label!r} is not one of the labels {known} "
                        f"(this call's or {out_dir}'s)")
    settings = settings_of(data_bin, decode, kinds)
    check_settings(rows, settings, out_dir)
    check_label_owners(rows, checkpoints, labels, out_dir)
    done = {row_key(r) for r in rows}
    calibrated = config.pruner != "magnitude"
    from tqdm import tqdm
    # closing the bar ends its line, so an error message starts on a line of its own
    with tqdm(total=len(checkpoints) * len(config.levels), desc="sweep", disable=not progress, unit="level") as bar:
        for path, label in zip(checkpoints, labels):
            stat = os.stat(path) if os.path.isfile(path) else None
            base = {"label": label, "checkpoint": os.path.abspath(path), "mode": config.mode, "scope": config.scope,
                    "score": score, "pruner": config.pruner, "pattern": config.pattern_name,
                    "td_eval_scale": bool(td_eval_scale),
                    "mask_groups": calibration[2] if calibrated else "row",
                    "calib_sentences": calibration[0] if calibrated else 0,
                    "calib_seed": calibration[1] if calibrated else "", "calib_split": "",
                    "checkpoint_size": stat and stat.st_size, "checkpoint_mtime": stat and int(stat.st_mtime),
                    **settings}
            pending = [s for s in config.levels if row_key(dict(base, requested_sparsity=s)) not in done]
            bar.update(len(config.levels) - len(pending))
            if not pending:
                continue
            model, task, state = load_translation_model(path, data_bin, bool(td_eval_scale))
            model.to(device)
            sentences = load_subset(task, data_bin, decode.subset)
            check_max_tokens(task, decode.subset, max_tokens)
            references = read_reference(decode.ref, sentences) if decode.ref else None
            params = {k: p for k, p in model.named_parameters() if is_weight_matrix_key(k, p, kinds)}
            if not params:
                raise UserError(f"--targets {','.join(kinds)} selects no weight of {path} "
                                f"(a tied output projection is the embedding: use --targets embed)")
            # ranked and pruned on the CPU, copied into the model wherever it runs
            originals = {k: p.detach().cpu().clone() for k, p in params.items()}
            check_pattern(originals, config.pattern)
            start = time.perf_counter()
            pruner, fields = make_pruner(config, model, task, params, originals, state, score,
                                         tuple(calibration[:3]) + (decode.dtype,))
            base.update(fields, prune_seconds=round(time.perf_counter() - start, 2))
            if decode.engine == "ctranslate2":  # the level's weights converted and decoded where they are served
                from .ctranslate2_translate import CTranslate2Evaluator
                evaluate = CTranslate2Evaluator(model, task, path, data_bin, decode, max_tokens, device, spm, references)
            else:
                evaluate = TranslationEvaluator(model, task, decode, max_tokens, device, spm, references)
            timed = _Timed(pruner, config)

            def on_row(row):
                row.pop("per_layer_sparsity")
                row["prune_seconds"] = round(base["prune_seconds"] + timed.seconds, 2)
                rows.append(dict(base, **row, device=device, command=command or command_line(),
                                 commit=git_commit(), machine=machine()))
                add_retention(rows, reference_label)
                os.makedirs(out_dir, exist_ok=True)
                write_rows(out_dir, rows, COLUMNS)
                plot_curves([dict(r, label=series(r)) for r in rows], "bleu",
                            os.path.join(out_dir, "bleu_vs_sparsity.png"), "BLEU (sacreBLEU)",
                            f"pruned {','.join(kinds)} weights")
                bar.update(1)

            prune_evaluate(params, timed, pending, evaluate, config.pattern, on_row)
    return rows


class _Timed:
    """The pruner at the level a pattern imposes, its seconds added to the row (each row reports
    its pruner's cost: calibration once, plus this level's pruning)."""

    def __init__(self, pruner, config: SweepConfig):
        self.pruner, self.config, self.seconds = pruner, config, 0.0

    def prune(self, level, pattern=None):
        start = time.perf_counter()
        out = self.pruner.prune(self.config.level_of(level), pattern)
        self.seconds = time.perf_counter() - start
        return out


def format_table(rows, field: str = "bleu") -> str:
    """BLEU (or another ``field``) per sparsity level (rows) and curve (columns)."""
    names = list(dict.fromkeys(series(r) for r in rows))
    levels = sorted({float(r["requested_sparsity"]) for r in rows})
    cell = {(series(r), float(r["requested_sparsity"])): r for r in rows}
    lines = ["| pruned | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for s in levels:
        values = [f"{cell[(n, s)][field]:.2f}" if (n, s) in cell else "" for n in names]
        lines.append(f"| {s * 100:.0f} % | " + " | ".join(values) + " |")
    return "\n".join(lines)


def format_seconds(rows) -> str:
    """Decoding seconds per level and curve, with the engine that decoded them."""
    engine = rows[0].get("engine", "fairseq") if rows else "fairseq"
    quantization = f" {rows[0]['quantization']}" if rows and rows[0].get("quantization") else ""
    return f"decode seconds ({engine}{quantization}):\n" + format_table(rows, "decode_seconds")
