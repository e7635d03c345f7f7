"""Merge the per-model sweeps of benchmarks/multi30k.sh into one results file, plots and tables.

    python benchmarks/multi30k_report.py [OUT_DIR] [--docs docs/multi30k]

Reads OUT_DIR/sweeps/*/results.csv (default out/multi30k), recomputes 'retention' as BLEU over
the dense BLEU of no_td (weight sweep), and writes DOCS/results.csv, DOCS/bleu_vs_sparsity.png
(the five TD-study models), DOCS/methods.png (every method, weight pruning), DOCS/unit_pruning.png
and DOCS/tables.md (the tables and target verdicts printed here too).
"""
import argparse
import csv
import glob
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from td_fairseq.files import atomic_write  # noqa: E402
from td_fairseq.results import plot_curves, write_rows  # noqa: E402
from td_fairseq.tools.sweep import COLUMNS  # noqa: E402

FIVE = ["no_td", "td", "ramping_td_90", "ramping_td_95", "unit_td"]
METHODS = ["no_td", "dropout", "td", "random_td", "l1", "l0", "l0 (gate)", "variational", "variational (log α)",
           "smallify", "gmp", "unit_dropout", "unit_td", "ramping_td_90", "ramping_td_95"]
# (model, sparsity, minimum BLEU over no_td's dense BLEU), from issue 4
TARGETS = [("td", 0.7, 0.97), ("td", 0.8, 0.95), ("ramping_td_90", 0.9, 0.95), ("ramping_td_95", 0.95, 0.90)]
OWN_NAMES = {"l0": "l0 (gate)", "variational": "variational (log α)", "smallify": "smallify (switch)"}


def load(out_dir):
    rows = []
    for path in sorted(glob.glob(os.path.join(out_dir, "sweeps", "*", "results.csv"))):
        with open(path, encoding="utf-8") as f:
            rows += list(csv.DictReader(f))
    for r in rows:
        for key in ("requested_sparsity", "measured_sparsity", "bleu", "chrf"):
            r[key] = float(r[key])
    return rows


def name(row):
    """Display name: own-score rows of a method with a score are a column of their own."""
    own = row.get("score") == "own" and row.get("ranked_by", "magnitude") != "magnitude"
    return OWN_NAMES.get(row["label"], row["label"] + " (own)") if own else row["label"]


def table(rows, names, levels):
    cell = {(name(r), r["requested_sparsity"]): r["bleu"] for r in rows}
    names = [n for n in names if any(k[0] == n for k in cell)]
    lines = ["| pruned | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for s in levels:
        lines.append(f"| {s * 100:.0f} % | " + " | ".join(f"{cell[(n, s)]:.2f}" if (n, s) in cell else "–"
                                                       for n in names) + " |")
    return "\n".join(lines)


def verdicts(rows, dense):
    cell = {(r["label"], r["requested_sparsity"]): r["bleu"] for r in rows
            if r["mode"] == "weight" and r.get("score", "magnitude") == "magnitude"}
    lines = ["| model | pruned | BLEU | / no_td dense | target | met |", "|---|---|---|---|---|---|"]
    for label, level, target in TARGETS + [("no_td", 0.7, None), ("no_td", 0.8, None)]:
        bleu = cell.get((label, level))
        if bleu is None:
            lines.append(f"| {label} | {level * 100:.0f} % | not measured | | {target or ''} | no |")
            continue
        ratio = bleu / dense
        met = "" if target is None else ("yes" if ratio >= target else f"no (short by {target - ratio:.3f})")
        lines.append(f"| {label} | {level * 100:.0f} % | {bleu:.2f} | {ratio:.3f} | {target or '–'} | {met} |")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out_dir", nargs="?", default="out/multi30k")
    p.add_argument("--docs", default="docs/multi30k")
    args = p.parse_args(argv)
    rows = load(args.out_dir)
    if not rows:
        sys.exit(f"multi30k_report.py: error: no sweep results under {args.out_dir}/sweeps")
    dense = [r["bleu"] for r in rows if (r["label"], r["mode"], r["requested_sparsity"]) == ("no_td", "weight", 0.0)
             and r.get("score", "magnitude") == "magnitude"]
    dense = dense[0] if dense and dense[0] > 0 else None
    if dense is None:
        print("multi30k_report.py: warning: no no_td row with dense BLEU above 0: no retention or verdicts",
              file=sys.stderr)
    for r in rows:
        r["retention"] = round(r["bleu"] / dense, 4) if dense else ""
        r["checkpoint"] = r["checkpoint"][r["checkpoint"].find("out/"):]  # the run's machine-local root dropped
    os.makedirs(args.docs, exist_ok=True)
    write_rows(args.docs, rows, COLUMNS)
    weight = [r for r in rows if r["mode"] == "weight"]
    unit = [r for r in rows if r["mode"] == "unit"]
    plot_curves([r for r in weight if r["label"] in FIVE and r["score"] == "magnitude"], "bleu",
                os.path.join(args.docs, "bleu_vs_sparsity.png"), "BLEU (sacreBLEU)",
                "Multi30k test_2016_flickr, one-shot weight pruning")
    order = {n: i for i, n in enumerate(METHODS)}
    weight_named = sorted((dict(r, label=name(r)) for r in weight), key=lambda r: order.get(r["label"], 99))
    plot_curves(weight_named, "bleu", os.path.join(args.docs, "methods.png"),
                "BLEU (sacreBLEU)", "Multi30k, every method, weight pruning")
    if unit:
        plot_curves([dict(r, label=name(r)) for r in unit], "bleu", os.path.join(args.docs, "unit_pruning.png"),
                    "BLEU (sacreBLEU)", "Multi30k, unit pruning")
    weight_levels = sorted({r["requested_sparsity"] for r in weight})
    text = "\n\n".join([
        f"no_td dense BLEU: {dense:.2f}" if dense else "no_td dense BLEU: not measured, or 0",
        "Weight pruning, the five TD-study models:\n\n" + table(weight, FIVE, weight_levels),
        "Targets (BLEU over no_td dense):\n\n" + verdicts(rows, dense) if dense else "Targets: no reference",
        "Weight pruning, every method (paper form):\n\n" + table(weight, METHODS + sorted(
            {name(r) for r in weight} - set(METHODS)), weight_levels),
        "Unit pruning:\n\n" + table(unit, list(dict.fromkeys(name(r) for r in unit)),
                                    sorted({r["requested_sparsity"] for r in unit})) if unit else "",
    ])
    atomic_write(os.path.join(args.docs, "tables.md"), text + "\n")
    print(text)


if __name__ == "__main__":
    main()
