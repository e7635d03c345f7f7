"""BLEU and decoding time of compact models beside their masked twins, per FFN unit sparsity.

For each level the checkpoint is compacted exactly as ``compact_checkpoint.py`` does (FFN units
ranked per layer by fc1 row norm, removed from every layer); the masked model (same units
zeroed at full width) and the compact one are loaded from their files, decoded on the same
subset in turn, and scored. Both should give the same hypotheses; the row says whether they did.
Decoding time is one pass each, on whatever else the machine is doing: for a careful speed
figure use benchmarks/compact_speed.py.
"""
import os
import tempfile

from ..files import UserError, check_out_dir
from ..results import SWEEP_COLUMNS, command_line, git_commit, load_rows, machine, plot_curves, write_rows
from ..sparsity import check_sparsity
from .compact import compact_checkpoint
from .sweep import bleu_chrf, load_subset, load_translation_model, read_reference, resolve_device, translate

COMPACT_COLUMNS = SWEEP_COLUMNS + [
    "bleu", "compact_bleu", "identical_hypotheses", "decode_seconds", "compact_decode_seconds", "speedup",
    "parameters", "compact_parameters", "sentences", "beam", "device", "command", "commit", "machine"]


def _decode(path, data_bin, subset, device, generation, spm, references):
    model, task, _ = load_translation_model(path, data_bin)
    model.to(device)
    sentences = load_subset(task, data_bin, subset)
    refs_given = read_reference(references, sentences) if references else None
    hyps, refs, seconds = translate(model, task, subset, *generation, spm, device)
    bleu = bleu_chrf(hyps, refs_given or refs)[0]
    return hyps, bleu, seconds, sum(p.numel() for p in model.parameters())


def run_compact_sweep(data_bin, checkpoints, labels, sparsities, out_dir, subset="test", beam=5, lenpen=1.0,
                      max_len_a=1.2, max_len_b=10, max_tokens=4000, spm=None, ref=None, command=None,
                      device="auto"):
    """Rows of (masked, compact) BLEU and decode time per checkpoint and FFN unit sparsity; resumable."""
    try:
        levels = [check_sparsity(s) for s in sparsities]
    except ValueError as error:
        raise UserError(str(error))
    device = resolve_device(device)
    labels = list(labels) if labels else [os.path.splitext(os.path.basename(c))[0] for c in checkpoints]
    if len(labels) != len(checkpoints):
        raise UserError(f"{len(checkpoints)} checkpoints but {len(labels)} labels")
    created = not os.path.isdir(out_dir)
    out_dir = check_out_dir(out_dir, *checkpoints)
    if created:  # made again at the first row, so that bad input found later leaves nothing
        os.rmdir(out_dir)
    rows = load_rows(out_dir)
    done = {(r["label"], r["checkpoint"], round(float(r["requested_sparsity"]), 6)) for r in rows}
    generation = (beam, lenpen, max_len_a, max_len_b, max_tokens)
    for path, label in zip(checkpoints, labels):
        for sparsity in levels:
            if (label, os.path.abspath(path), round(sparsity, 6)) in done:
                continue
            with tempfile.TemporaryDirectory() as tmp:
                masked, compact = os.path.join(tmp, "masked.pt"), os.path.join(tmp, "compact.pt")
                compact_checkpoint(path, sparsity, compact, masked_out=masked, command=command)
                m_hyps, m_bleu, m_seconds, m_params = _decode(masked, data_bin, subset, device, generation, spm, ref)
                c_hyps, c_bleu, c_seconds, c_params = _decode(compact, data_bin, subset, device, generation, spm,
                                                              ref)
            rows.append({"label": label, "checkpoint": os.path.abspath(path), "mode": "ffn_unit", "scope": "layer",
                         "requested_sparsity": sparsity, "measured_sparsity": round(1 - c_params / m_params, 6),
                         "bleu": round(m_bleu, 2), "compact_bleu": round(c_bleu, 2),
                         "identical_hypotheses": round(sum(a == b for a, b in zip(m_hyps, c_hyps)) / len(m_hyps), 4),
                         "decode_seconds": round(m_seconds, 2), "compact_decode_seconds": round(c_seconds, 2),
                         "speedup": round(m_seconds / c_seconds, 3), "parameters": m_params,
                         "compact_parameters": c_params, "sentences": len(m_hyps), "beam": beam, "device": device,
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
