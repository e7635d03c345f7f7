"""Merge the Multi30k sweeps into one results file, tables with mean and spread over seeds,
target verdicts, plots, validation-loss curves and (for a study run) tuning.md.

    python benchmarks/multi30k_report.py [OUT_DIR] [--docs docs/multi30k]

Reads OUT_DIR/sweeps/*/results.csv (test_2016_flickr rows; default OUT_DIR out/multi30k), each
row joined with its training run's done.json (seed, recipe, flags, device, precision, updates:
written by multi30k_study.py; a run of multi30k.sh has none and counts as seed 1). Retention is
BLEU over the mean dense BLEU of no_td (magnitude, unstructured). Writes DOCS/results.csv and
.json (every row), DOCS/tables.md (mean +- sample std over seeds, target verdicts), plots with
the spread over seeds (bleu_vs_sparsity.png: TD-study models and gmp; methods.png;
unit_pruning.png; pruners.png when there are pruner or pattern rows), curves.png (validation
loss of no_td and td) and, when OUT_DIR/study.json exists, tuning.md (multi30k_tuning.py).
"""
import argparse
import csv
import glob
import json
import os
import re
import statistics
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)
sys.path.insert(0, HERE)

from td_fairseq.files import atomic_write  # noqa: E402
from td_fairseq.results import write_rows  # noqa: E402
from td_fairseq.tools.sweep import COLUMNS  # noqa: E402
import multi30k_plan as plan  # noqa: E402

STUDY = plan.FIVE + ["gmp"]
METHODS = ["no_td", "dropout", "td", "random_td", "l1", "l0", "l0 (gate)", "variational", "variational (log α)",
           "smallify", "gmp", "unit_dropout", "unit_td", "ramping_td_90", "ramping_td_95"]
# (model, sparsity, minimum of mean BLEU over no_td's mean dense BLEU or None: reported only), issue 15
TARGETS = [("td", 0.0, 0.97), ("td", 0.7, 0.97), ("td", 0.8, 0.95), ("ramping_td_90", 0.9, 0.95),
           ("ramping_td_95", 0.95, 0.90), ("gmp", 0.9, None), ("no_td", 0.7, None), ("no_td", 0.8, None)]
OWN_NAMES = {"l0": "l0 (gate)", "variational": "variational (log α)", "smallify": "smallify (switch)"}
RUN_COLUMNS = ["seed", "run", "recipe", "max_tokens", "updates", "flags", "train_device", "precision",
               "finetune_from", "finetune_updates"]


# what makes a row (with the defaults of files written before a column existed)
SAME_ROW = {"checkpoint": "", "mode": "weight", "score": "magnitude", "pruner": "magnitude", "pattern": "unstructured",
            "mask_groups": "row", "calib_sentences": "0", "calib_seed": "", "requested_sparsity": ""}


def load(out_dir):
    """Every sweep row under OUT_DIR/sweeps; a row made twice (the same checkpoint pruned the same
    way in two folders) counts once, so it is never taken for a second seed."""
    rows, seen = [], set()
    for path in sorted(glob.glob(os.path.join(out_dir, "sweeps", "*", "results.csv"))):
        with open(path, encoding="utf-8") as f:
            for r in csv.DictReader(f):
                for key in ("requested_sparsity", "measured_sparsity", "bleu", "chrf"):
                    r[key] = float(r[key])
                key = tuple(r.get(k) or default for k, default in SAME_ROW.items())
                if key not in seen:
                    seen.add(key)
                    rows.append(r)
    for r in rows:
        r.update(run_info(r["checkpoint"], out_dir))
    return rows


def run_dir(checkpoint, out_dir):
    """The folder of a checkpoint's run, here: where it was, or OUT_DIR/runs/... for a study
    run on another machine and exported (multi30k_study.py EXPORT)."""
    directory = os.path.dirname(checkpoint)
    if not os.path.isdir(directory) and "/runs/" in checkpoint:
        return os.path.join(out_dir, "runs", os.path.dirname(checkpoint.split("/runs/", 1)[1]))
    return directory


def run_info(checkpoint, out_dir):
    """The training run behind a checkpoint: its done.json if the study wrote one."""
    directory = run_dir(checkpoint, out_dir)
    path = os.path.join(directory, "done.json")
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            run = json.load(f)
        return dict(seed=run["seed"], run=run["run"], recipe=run.get("recipe") or "", max_tokens=run["max_tokens"],
                    updates=run["updates"], flags=run["flags"], train_device=run["device"],
                    precision=run["precision"], train_log=os.path.join(directory, "train.log"))
    match = re.search(r"/s(\d+)/checkpoint", checkpoint)
    info = dict(seed=int(match.group(1)) if match else 1, train_log=os.path.join(directory, "train.log"))
    path = os.path.join(directory, "finetune.json")  # written by multi30k_pruners.sh
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            finetune = json.load(f)
        info.update(finetune_from=finetune["from"], finetune_updates=finetune["updates"])
    return info


def name(row):
    """Display name: own-score rows, other pruners and N:M patterns are columns of their own."""
    label = row["label"]
    if row.get("score") == "own" and row.get("ranked_by", "magnitude") != "magnitude":
        label = OWN_NAMES.get(label, label + " (own)")
    if row.get("pattern") not in (None, "", "unstructured"):
        label += " " + row["pattern"]
    if row.get("pruner") not in (None, "", "magnitude"):
        label += f" ({pruner_of(row)})"
    return label


def pruner_of(row):
    """magnitude, wanda, sparsegpt, or 'sparsegpt, block' for the paper's per-block masks."""
    pruner = row.get("pruner") or "magnitude"
    return pruner + (", block" if pruner == "sparsegpt" and row.get("mask_groups") == "block" else "")


TD_MODELS = ("td", "td_2_4")  # td_2_4: trained with TD's 2:4 pattern, a TD model for the 2:4 row


def one_shot(rows, stats, low=0.5):
    """Issue 13's question, per level from ``low`` up and per N:M pattern: which is better, no_td
    with its best post-training pruner, td with magnitude, or a TD model with its best pruner?
    Mean BLEU over seeds; the margin is the winner's lead over the runner-up."""
    options = {}  # (pattern, level) -> {(label, pruner): stat}
    for r in rows:
        if r["mode"] != "weight" or r["label"] not in ("no_td",) + TD_MODELS:
            continue
        if r.get("score", "magnitude") != "magnitude" or r["requested_sparsity"] < low:
            continue
        stat = stats[(name(r), "weight", r["requested_sparsity"])]
        options.setdefault((r.get("pattern") or "unstructured", r["requested_sparsity"]), {})[
            (r["label"], pruner_of(r))] = stat
    lines = ["| pruned | no_td + its best pruner | td + magnitude | TD + its best pruner | best one-shot | margin |",
             "|---|---|---|---|---|---|"]
    for (pattern, level), found in sorted(options.items(), key=lambda kv: (kv[0][0] != "unstructured", kv[0])):
        candidates = [best({k: v for k, v in found.items() if k[0] == "no_td"}),
                      best({k: v for k, v in found.items() if k == ("td", "magnitude")}),
                      best({k: v for k, v in found.items() if k[0] in TD_MODELS})]
        shown = [f"{cell(c[2])} ({c[1][1] if c[1][0] in ('no_td', 'td') else ', '.join(c[1])})" if c else "–"
                 for c in candidates]
        ranked = sorted({(c[0], " + ".join(c[1])) for c in candidates if c}, reverse=True)
        winner = ranked[0][1] if ranked else "–"
        margin = f"{ranked[0][0] - ranked[1][0]:.2f}" if len(ranked) > 1 else "–"
        where = f"{level * 100:.0f} %" if pattern == "unstructured" else pattern
        lines.append(f"| {where} | " + " | ".join(shown) + f" | {winner} | {margin} |")
    return "\n".join(lines)


def best(found):
    """(mean BLEU, (label, pruner), stat) of the highest mean, or None."""
    if not found:
        return None
    key, stat = max(found.items(), key=lambda kv: kv[1]["mean"])
    return stat["mean"], key, stat


def pruner_costs(rows):
    """Median seconds a pruner took per level (calibration included), per model and pattern."""
    groups = {}
    for r in rows:
        if r["mode"] == "weight" and r.get("prune_seconds") not in (None, "") and r["requested_sparsity"] > 0:
            key = (r["label"], pruner_of(r), r.get("pattern") or "unstructured")
            groups.setdefault(key, []).append(float(r["prune_seconds"]))
    lines = ["| model | pruner | pattern | levels | median seconds per level | max |", "|---|---|---|---|---|---|"]
    for (label, pruner, pattern), seconds in sorted(groups.items()):
        lines.append(f"| {label} | {pruner} | {pattern} | {len(seconds)} | {statistics.median(seconds):.2f} "
                     f"| {max(seconds):.2f} |")
    return "\n".join(lines)


def aggregate(rows):
    """{(name, mode, level): {'mean', 'std' (None below 2 seeds), 'n', 'min', 'max', 'sparsity'}}."""
    groups = {}
    for r in rows:
        groups.setdefault((name(r), r["mode"], r["requested_sparsity"]), []).append(r)
    stats = {}
    for key, group in groups.items():
        bleu = [r["bleu"] for r in group]
        stats[key] = dict(mean=statistics.fmean(bleu), std=statistics.stdev(bleu) if len(bleu) > 1 else None,
                          n=len(bleu), min=min(bleu), max=max(bleu),
                          sparsity=statistics.fmean(r["measured_sparsity"] for r in group))
    return stats


def cell(stat, digits=2, scale=1.0):
    if stat is None:
        return "–"
    text = f"{stat['mean'] / scale:.{digits}f}"
    return text if stat["std"] is None else text + f" ± {stat['std'] / scale:.{digits}f}"


def table(stats, names, mode):
    """Mean +- std per level (rows) and name (columns), the levels those names were swept at."""
    names = [n for n in names if any(k[0] == n and k[1] == mode for k in stats)]
    levels = sorted({s for n, m, s in stats if n in names and m == mode})
    lines = ["| pruned | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for s in levels:
        lines.append(f"| {s * 100:.0f} % | " + " | ".join(cell(stats.get((n, mode, s))) for n in names) + " |")
    seeds = [max((v["n"] for k, v in stats.items() if k[0] == n and k[1] == mode), default=0) for n in names]
    if any(n > 1 for n in seeds):
        lines.append("| seeds | " + " | ".join(str(n) for n in seeds) + " |")
    return "\n".join(lines)


def verdicts(stats, dense):
    lines = ["| model | pruned | seeds | BLEU | / no_td dense | target | met |", "|---|---|---|---|---|---|---|"]
    for label, level, target in TARGETS:
        stat = stats.get((label, "weight", level))
        if stat is None:
            lines.append(f"| {label} | {level * 100:.0f} % | 0 | not measured | | {target or '–'} | "
                         f"{'no' if target else ''} |")
            continue
        ratio = stat["mean"] / dense
        met = "" if target is None else ("yes" if ratio >= target else f"no (short by {target - ratio:.3f})")
        lines.append(f"| {label} | {level * 100:.0f} % | {stat['n']} | {cell(stat)} | {cell(stat, 3, dense)} | "
                     f"{target or '–'} | {met} |")
    return "\n".join(lines)


def plot(stats, names, mode, path, title):
    """Mean BLEU against measured sparsity per name, the band from the lowest to the highest seed."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    names = [n for n in names if any(k[0] == n and k[1] == mode for k in stats)]
    many = len(names) > 8
    fig, ax = plt.subplots(figsize=(8.4, 4.6) if many else (6.4, 4.2))
    colors = plt.get_cmap("tab20" if many else "tab10").colors
    for i, n in enumerate(names):
        points = sorted((v["sparsity"] * 100, v) for k, v in stats.items() if k[0] == n and k[1] == mode)
        x = [p[0] for p in points]
        ax.plot(x, [p[1]["mean"] for p in points], marker="osd^v<>"[i % 7], color=colors[i % len(colors)], label=n)
        if any(p[1]["n"] > 1 for p in points):
            ax.fill_between(x, [p[1]["min"] for p in points], [p[1]["max"] for p in points],
                            color=colors[i % len(colors)], alpha=0.18, linewidth=0)
    ax.set_xlabel("pruned weights (%)" if mode == "weight" else "pruned units (%)")
    ax.set_ylabel("BLEU (sacreBLEU)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize="small") if many else ax.legend()
    save_figure(fig, path)


PRUNER_COLORS = {"magnitude": "tab:blue", "wanda": "tab:green", "sparsegpt": "tab:red", "sparsegpt, block": "tab:purple"}


def plot_pruners(rows, stats, path):
    """no_td (dashed), td (solid) and td_2_4 (dotted) per pruner (colour), unstructured; pattern
    rows as markers at their level (no_td plus, td star, td_2_4 diamond); prune-then-fine-tune
    rows as black crosses."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7.6, 4.6))
    drawn = set()
    for r in rows:
        if r["mode"] != "weight" or r.get("score", "magnitude") != "magnitude":
            continue
        pattern = r.get("pattern") or "unstructured"
        key = (r["label"], pruner_of(r), pattern)
        if key in drawn:
            continue
        drawn.add(key)
        label, pruner = key[0], key[1]
        points = sorted((v["sparsity"] * 100, v["mean"]) for k, v in stats.items() if k[0] == name(r) and
                        k[1] == "weight")
        color = PRUNER_COLORS.get(pruner, "tab:gray")
        if label.startswith("no_td_ft"):
            ax.plot([x for x, _ in points], [y for _, y in points], "kX", markersize=9,
                    label=f"{label} (pruned, then fine-tuned)")
        elif label in ("no_td",) + TD_MODELS and pattern == "unstructured":
            ax.plot([x for x, _ in points], [y for _, y in points], {"no_td": "--", "td": "-"}.get(label, ":"),
                    marker="o", markersize=4, color=color, label=f"{label} + {pruner}")
        elif label in ("no_td",) + TD_MODELS:
            ax.plot([x for x, _ in points if x > 0], [y for x, y in points if x > 0],
                    {"no_td": "P", "td": "*"}.get(label, "D"), markersize=11 if label != "td_2_4" else 8,
                    color=color, markeredgecolor="black", markeredgewidth=0.5, label=f"{label} + {pruner}, {pattern}")
    if not drawn:
        plt.close(fig)
        return
    ax.set_xlabel("pruned weights (%)")
    ax.set_ylabel("BLEU (sacreBLEU)")
    ax.set_title("Multi30k: pruners on no_td (dashed), td (solid), td_2_4 (dotted)")
    ax.grid(alpha=0.3)
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize="small")
    save_figure(fig, path)


def plot_curves(rows, path):
    """Validation loss against updates of no_td and td, each seed thin, the mean bold."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    drawn = False
    for color, label in (("tab:blue", "no_td"), ("tab:orange", "td")):
        logs = sorted({r["train_log"] for r in rows if r["label"] == label and r["mode"] == "weight"})
        curves = [c for c in (plan.valid_curve(open(p, encoding="utf-8").read()) for p in logs
                              if os.path.isfile(p)) if c]
        for curve in curves:
            ax.plot([u for u, _ in curve], [loss for _, loss in curve], color=color, alpha=0.35, linewidth=0.8)
        if curves:
            length = min(len(c) for c in curves)
            ax.plot([curves[0][i][0] for i in range(length)],
                    [statistics.fmean(c[i][1] for c in curves) for i in range(length)], color=color, linewidth=2,
                    label=f"{label} ({len(curves)} seed{'s' if len(curves) > 1 else ''})")
            drawn = True
    if not drawn:
        plt.close(fig)
        return False
    ax.set_xlabel("updates")
    ax.set_ylabel("validation loss (label-smoothed, base 2)")
    ax.set_title("Multi30k val: no_td and td")
    ax.grid(alpha=0.3)
    ax.legend()
    save_figure(fig, path)
    return True


def save_figure(fig, path):
    import io

    import matplotlib.pyplot as plt
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    atomic_write(path, buffer.getvalue())


def relative(checkpoint, out_dir):
    out_dir = os.path.abspath(out_dir)
    if checkpoint.startswith(out_dir + os.sep):
        return os.path.join(os.path.basename(out_dir), os.path.relpath(checkpoint, out_dir))
    return checkpoint[checkpoint.find("out/"):] if "out/" in checkpoint else checkpoint


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out_dir", nargs="?", default="out/multi30k")
    p.add_argument("--docs", default="docs/multi30k")
    args = p.parse_args(argv)
    rows = load(args.out_dir)
    if not rows:
        sys.exit(f"multi30k_report.py: error: no sweep results under {args.out_dir}/sweeps")
    stats = aggregate(rows)
    dense_stat = stats.get(("no_td", "weight", 0.0))
    dense = dense_stat["mean"] if dense_stat and dense_stat["mean"] > 0 else None
    if dense is None:
        print("multi30k_report.py: warning: no no_td row with dense BLEU above 0: no retention or verdicts",
              file=sys.stderr)
    for r in rows:
        r["retention"] = round(r["bleu"] / dense, 4) if dense else ""
        r["checkpoint"] = relative(r["checkpoint"], args.out_dir)
    os.makedirs(args.docs, exist_ok=True)
    extra = sorted({k for r in rows for k in r} - set(COLUMNS) - set(RUN_COLUMNS) - {"train_log"})
    write_rows(args.docs, [{k: v for k, v in r.items() if k != "train_log"} for r in rows],
               ["label"] + RUN_COLUMNS + [c for c in COLUMNS if c != "label"] + extra)
    unit_names = list(dict.fromkeys(name(r) for r in rows if r["mode"] == "unit"))
    weight_names = list(dict.fromkeys(name(r) for r in rows if r["mode"] == "weight"))
    alternatives = [n for n in weight_names if n not in METHODS and n.split(" ")[0] in ("no_td", "td", "td_2_4")
                    or n.startswith("no_td_ft")]
    others = [n for n in weight_names if n not in METHODS and n not in alternatives]
    plot(stats, STUDY, "weight", os.path.join(args.docs, "bleu_vs_sparsity.png"),
         "Multi30k test_2016_flickr, one-shot weight pruning")
    plot(stats, METHODS + others, "weight", os.path.join(args.docs, "methods.png"),
         "Multi30k, every method, weight pruning")
    if unit_names:
        plot(stats, unit_names, "unit", os.path.join(args.docs, "unit_pruning.png"), "Multi30k, unit pruning")
    if alternatives:
        plot_pruners(rows, stats, os.path.join(args.docs, "pruners.png"))
    plot_curves(rows, os.path.join(args.docs, "curves.png"))
    dense_line = f"no_td dense BLEU: {cell(dense_stat)} ({dense_stat['n']} seed{'s' if dense_stat['n'] > 1 else ''})" \
        if dense else "no_td dense BLEU: not measured, or 0"
    study_path = os.path.join(args.out_dir, "study.json")
    study = json.load(open(study_path, encoding="utf-8")) if os.path.isfile(study_path) else None
    sections = [dense_line]
    if study:
        import multi30k_tuning
        sections.append(multi30k_tuning.budget_line(study))
    sections += [
        "Weight pruning, the TD-study models and gmp (BLEU, mean ± sample std over seeds):\n\n"
        + table(stats, STUDY, "weight"),
        "Targets (mean BLEU over no_td's mean dense BLEU; ± is the BLEU std over the same dense):\n\n"
        + verdicts(stats, dense) if dense else "Targets: no reference",
        "Weight pruning, every method (paper form):\n\n" + table(stats, METHODS + others, "weight")]
    if alternatives:
        sections.append("Pruners, N:M patterns and prune-then-fine-tune:\n\n"
                        + table(stats, ["no_td", "td"] + alternatives, "weight"))
        sections.append("The best one-shot row per level (no fine-tuning; BLEU, mean over seeds; margin: the "
                        "winner's lead over the runner-up):\n\n" + one_shot(rows, stats))
        sections.append("Cost of each pruner on this run's machine:\n\n" + pruner_costs(rows))
    if unit_names:
        sections.append("Unit pruning:\n\n" + table(stats, unit_names, "unit"))
    text = "\n\n".join(sections)
    atomic_write(os.path.join(args.docs, "tables.md"), text + "\n")
    if study:
        atomic_write(os.path.join(args.docs, "tuning.md"), multi30k_tuning.tuning_md(study, args.out_dir) + "\n")
    print(text)


if __name__ == "__main__":
    main()
