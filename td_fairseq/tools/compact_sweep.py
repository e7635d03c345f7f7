"""Masked against compact: the same FFN units removed, BLEU and decoding time side by side.

Per checkpoint the state is read and exported once; per level, ``plan_compaction`` picks the
units (fc1 row norms, every layer), the masked model (same units zeroed at full width) and the
compact one are written to a temporary folder, loaded, decoded on the same subset in turn, and
scored. Both should give the same hypotheses; the row says whether they did. Decoding time is
one pass each, on whatever else the machine is doing: for a careful speed figure use
benchmarks/compact_speed.py.
"""
import os
import tempfile

from ..files import UserError, check_out_dir, save_torch
from ..results import SWEEP_COLUMNS, command_line, git_commit, load_rows, machine, plot_curves, write_rows
from ..sparsity import check_sparsity
from .checkpoint import stock_checkpoint
from .compact import compact_state, masked_state, plan_compaction
from .loading import load_checkpoint, load_translation_model
from .sweep import check_labels
from .translate import DecodeConfig, TranslationEvaluator, load_spm, load_subset, read_reference, resolve_device

COMPACT_COLUMNS = SWEEP_COLUMNS + [
    "bleu", "compact_bleu", "identical_hypotheses", "decode_seconds", "compact_decode_seconds", "speedup",
    "parameters", "compact_parameters", "sentences", "beam", "subset", "device", "engine", "quantization", "command",
    "commit", "machine"]


def _decode(path, data_bin, decode, max_tokens, device, spm):
    model, task, _ = load_translation_model(path, data_bin)
    model.to(device)
    sentences = load_subset(task, data_bin, decode.subset)
    references = read_reference(decode.ref, sentences) if decode.ref else None
    if decode.engine == "ctranslate2":  # the file converted by CTranslate2's converter and decoded there
        from .ctranslate2_translate import CTranslate2Evaluator
        evaluate = CTranslate2Evaluator(model, task, path, data_bin, decode, max_tokens, device, spm, references)
    else:
        evaluate = TranslationEvaluator(model, task, decode, max_tokens, device, spm, references)
    row = evaluate(None)
    return evaluate.last_hypotheses, row, sum(p.numel() for p in model.parameters())


def run_compact_sweep(data_bin, checkpoints, labels, sparsities, out_dir, decode: DecodeConfig, max_tokens=4000,
                      command=None, device="auto"):
    """Rows of (masked, compact) BLEU and decode time per checkpoint and FFN unit sparsity; resumable."""
    try:
        levels = [check_sparsity(s) for s in sparsities]
    except ValueError as error:
        raise UserError(str(error))
    device = resolve_device(device)
    labels = check_labels(checkpoints, labels)
    spm = load_spm(decode.spm) if decode.spm else None
    out_dir = check_out_dir(out_dir, *checkpoints, create=False)  # made at the first row
    rows = load_rows(out_dir)
    for row in rows:  # one engine per folder, as in the sweep: speeds of two engines are not one curve
        made = (row.get("engine", "fairseq"), row.get("quantization"))
        if made != (decode.engine, decode.quantization):
            raise UserError(f"{out_dir} holds rows made with engine {made[0]} ({made[1] or 'no'} quantization), this "
                            f"run asks for {decode.engine} ({decode.quantization or 'no'} quantization): "
                            "choose another --out")
    done = {(r["label"], r["checkpoint"], r.get("beam"), r.get("subset"), round(float(r["requested_sparsity"]), 6))
            for r in rows}
    for path, label in zip(checkpoints, labels):
        key = (label, os.path.abspath(path), decode.beam, decode.subset)
        pending = [s for s in levels if key + (round(s, 6),) not in done]
        if not pending:
            continue
        state = stock_checkpoint(load_checkpoint(path))
        for sparsity in pending:
            plan = plan_compaction(state, sparsity)
            with tempfile.TemporaryDirectory() as tmp:
                masked, compact = os.path.join(tmp, "masked.pt"), os.path.join(tmp, "compact.pt")
                save_torch(masked_state(state, plan), masked)
                save_torch(compact_state(state, plan), compact)
                m_hyps, m_row, m_params = _decode(masked, data_bin, decode, max_tokens, device, spm)
                c_hyps, c_row, c_params = _decode(compact, data_bin, decode, max_tokens, device, spm)
            rows.append({"label": label, "checkpoint": os.path.abspath(path), "mode": "ffn_unit", "scope": "layer",
                         "requested_sparsity": sparsity, "measured_sparsity": round(1 - c_params / m_params, 6),
                         "bleu": m_row["bleu"], "compact_bleu": c_row["bleu"],
                         "identical_hypotheses": round(sum(a == b for a, b in zip(m_hyps, c_hyps)) / len(m_hyps), 4),
                         "decode_seconds": m_row["decode_seconds"], "compact_decode_seconds": c_row["decode_seconds"],
                         "speedup": round(m_row["decode_seconds"] / max(c_row["decode_seconds"], 1e-9), 3),
                         "parameters": m_params, "compact_parameters": c_params, "sentences": len(m_hyps),
                         "beam": decode.beam, "subset": decode.subset, "device": device, "engine": decode.engine,
                         "quantization": decode.quantization,
                         "command": command or command_line(), "commit": git_commit(), "machine": machine()})
            os.makedirs(out_dir, exist_ok=True)
            write_rows(out_dir, rows, COMPACT_COLUMNS)
            plot_curves([dict(r, measured_sparsity=r["requested_sparsity"]) for r in rows], "speedup",
                        os.path.join(out_dir, "speedup_vs_sparsity.png"), "decode speed-up, compact / masked",
                        "FFN units removed")
    return rows


def format_compact_table(rows) -> str:
    lines = ["| label | FFN units removed | BLEU masked | BLEU compact | same output | parameters | speed-up |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['label']} | {float(r['requested_sparsity']) * 100:.0f} % | {r['bleu']} | "
                     f"{r['compact_bleu']} | {float(r['identical_hypotheses']) * 100:.1f} % | "
                     f"{r['compact_parameters']} | {r['speedup']} |")
    return "\n".join(lines)
