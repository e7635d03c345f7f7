"""The report of a study folder, DIR/report/: results.csv and results.json (every row of every
job), tables.md (BLEU mean ± sample std over seeds per evaluation, the same as retention over
no_td's mean dense BLEU, target verdicts, the best one-shot row per level, validation losses and
the update of the lowest one) and curves.png.

Jobs are DIR/*/result.json, and the finished jobs' copies in the launch's ``finished`` folder
(FOLDER/JOB.json, committed as jobs land: a new machine's DIR lacks them). A folder with
failed.json is a failed job, one with neither is unfinished (named with the update its train.log
reached and the save a rerun resumes from), and a job that DIR/multirun.yaml asked for with no
folder is missing: the report names each of them and reports the rest. A model's name
in the tables is its label, plus the overrides that differ between jobs other than model and seed
(a coefficient grid).
"""
import io
import json
import os
import re
import statistics

from ..files import UserError, atomic_write
from ..results import write_rows
from .job import REPO, read_text, recent_rate, updates_done


def launch_config(sweep_dir):
    """DIR/multirun.yaml, the config of the latest launch into DIR (None if there is none)."""
    from omegaconf import OmegaConf
    path = os.path.join(sweep_dir, "multirun.yaml")
    return OmegaConf.load(path) if os.path.isfile(path) else None


def ignored_keys(launch) -> set:
    """The overrides that do not name a job (hydra's override_dirname.exclude_keys: threads,
    reuse, finished, ...), from the launch's config, else from base.yaml."""
    from omegaconf import OmegaConf
    cfg = launch if launch is not None else OmegaConf.load(os.path.join(os.path.dirname(__file__), "conf", "base.yaml"))
    return set(OmegaConf.select(cfg, "hydra.job.config.override_dirname.exclude_keys") or [])


def job_key(overrides, ignored=frozenset()) -> tuple:
    """A job's identity: its overrides, sorted, less those in ``ignored``."""
    return tuple(sorted(o for o in overrides if o.split("=", 1)[0].lstrip("+~") not in ignored))


def expected_jobs(launch, ignored=frozenset()) -> list:
    """The jobs hydra's basic sweeper made from the launch's config, each as its ``job_key``."""
    if launch is None:
        return []
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser
    params = [f"{k}={v}" for k, v in (launch.hydra.sweeper.get("params") or {}).items()]
    overrides = OverridesParser.create().parse_overrides(params + list(launch.hydra.overrides.task))
    return [job_key(job, ignored) for job in BasicSweeper.split_arguments(overrides, None)[0]]


def checks(launch, results) -> dict:
    """The targets and the versus spec to report against: the latest launch's, so that a target
    added after the first jobs finished is checked; else the first result's."""
    keys = ("targets", "versus")
    if launch is not None and any(k in launch for k in keys):
        from omegaconf import OmegaConf
        values = {k: launch.get(k) for k in keys}
        return {k: OmegaConf.to_container(v, resolve=True) if OmegaConf.is_config(v) else v for k, v in values.items()}
    return {k: results[0]["config"].get(k) for k in keys}


def _json(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def finished_copies(folder) -> dict:
    """{job folder name: result} from a folder of finished jobs' copies (the study's ``finished``:
    FOLDER/JOB.json); a file whose name is not its own job's (a copy from another study) is left out."""
    copies = {}
    for entry in sorted(os.listdir(folder)) if folder and os.path.isdir(folder) else []:
        if entry.endswith(".json"):
            try:
                result = _json(os.path.join(folder, entry))
            except ValueError as error:
                raise UserError(f"{os.path.join(folder, entry)}: not JSON ({error})") from None
            if isinstance(result, dict) and result.get("job") == entry[:-len(".json")] and "rows" in result:
                copies[result["job"]] = result
    return copies


# fairseq writes one file per save (checkpoint_best.pt when the loss improved) and copies it to the others
_SAVED = re.compile(r"Saved checkpoint .+? \(epoch (\d+) @ (\d+) updates")


def progress(folder) -> str:
    """Where an unfinished job stands, from its train.log ('' before it logs an update): what a
    rerun resumes from is the last save, not the last update logged."""
    log = read_text(os.path.join(folder, "train.log"))
    updates = updates_done(log)
    if os.path.isfile(os.path.join(folder, "train.json")):
        return f"trained ({updates} updates), evaluating; "
    if not updates:
        return ""
    planned = _config_updates(folder)
    saved = _SAVED.findall(log)
    where = f"saved at update {saved[-1][1]} (epoch {saved[-1][0]})" if saved else "not saved yet"
    rate = recent_rate(log)
    pace = (f" ({rate:.2f} updates/s lately: about {(planned - updates) / rate / 3600:.1f} h of training left)"
            if rate and planned and planned > updates else "")
    return f"at update {updates}{f' of {planned}' if planned else ''}{pace}, {where}; "


def _config_updates(folder):
    from omegaconf import OmegaConf
    path = os.path.join(folder, ".hydra", "config.yaml")
    return OmegaConf.load(path).get("updates") if os.path.isfile(path) else None


def load(sweep_dir, launch=None, ignored=frozenset(), finished=None):
    """(results, problems): every result.json, and (job, what is wrong) for the others. The copies in
    ``finished`` count as done jobs too: on a new machine the sweep folder holds only the jobs
    launched there, while the ones finished before are committed copies."""
    import yaml
    results, problems, seen = [], [], set()
    copies = finished_copies(finished)
    for entry in sorted(os.listdir(sweep_dir)):
        folder = os.path.join(sweep_dir, entry)
        overrides = os.path.join(folder, ".hydra", "overrides.yaml")
        if not os.path.isfile(overrides):
            continue  # data/, raw/, report/: not a job
        with open(overrides, encoding="utf-8") as f:
            seen.add(job_key(yaml.safe_load(f) or [], ignored))
        copy = copies.pop(entry, None)
        if os.path.isfile(os.path.join(folder, "result.json")):
            results.append(_json(os.path.join(folder, "result.json")))
        elif copy is not None:
            results.append(copy)
        elif os.path.isfile(os.path.join(folder, "failed.json")):
            problems.append((entry, "failed: " + _json(os.path.join(folder, "failed.json"))["error"]))
        else:
            problems.append((entry, f"unfinished: {progress(folder)}no result.json (running, or stopped: see {folder})"))
    for copy in copies.values():
        seen.add(job_key(copy.get("overrides") or [], ignored))
        results.append(copy)
    problems += [(",".join(job), "missing: never started") for job in expected_jobs(launch, ignored)
                 if job not in seen]
    return results, problems


def name_jobs(results, ignored=frozenset()):
    """Set each result's display name: label, plus the overrides not shared by every job (less
    those in ``ignored``, which do not change a job)."""
    settings = [dict(o.split("=", 1) for o in job_key(r["overrides"], ignored)) for r in results]
    varying = {k for one in settings for k in one
               if k not in ("model", "seed") and len({other.get(k) for other in settings}) > 1}
    for r, one in zip(results, settings):
        r["name"] = " ".join([r["label"]] + [f"{k}={v}" for k, v in one.items() if k in varying])


def stat(values):
    return dict(mean=statistics.fmean(values), std=statistics.stdev(values) if len(values) > 1 else None,
                n=len(values))


def cell(s, digits=2, scale=1.0):
    if s is None:
        return "–"
    text = f"{s['mean'] / scale:.{digits}f}"
    return text if s["std"] is None else f"{text} ± {s['std'] / scale:.{digits}f}"


def level_name(level, pattern="unstructured"):
    return f"{level * 100:.0f} %" if pattern in ("", "unstructured") or level == 0 else pattern


def aggregate(rows):
    """{(evaluation, name, level): stat of BLEU over seeds}."""
    groups = {}
    for r in rows:
        groups.setdefault((r["evaluation"], r["name"], float(r["requested_sparsity"])), []).append(float(r["bleu"]))
    return {key: stat(bleu) for key, bleu in groups.items()}


def evaluation_table(rows, stats, evaluation, scale=None):
    """One evaluation's BLEU per model and level; with ``scale``, divided by it (a retention)."""
    mine = [r for r in rows if r["evaluation"] == evaluation]
    names = list(dict.fromkeys(r["name"] for r in mine))
    levels = sorted({float(r["requested_sparsity"]) for r in mine})
    pattern = mine[0].get("pattern", "unstructured")
    lines = [f"### {evaluation} ({mine[0]['mode']} pruning, {mine[0].get('pruner', 'magnitude')}, score "
             f"{mine[0].get('score', 'magnitude')})", "", "| pruned | " + " | ".join(names) + " |",
             "|---" * (len(names) + 1) + "|"]
    digits = (3, scale) if scale else ()
    for level in levels:
        lines.append(f"| {level_name(level, pattern)} | "
                     + " | ".join(cell(stats.get((evaluation, n, level)), *digits) for n in names) + " |")
    lines.append("| seeds | " + " | ".join(str(max((s["n"] for k, s in stats.items() if k[:2] == (evaluation, n)),
                                                    default=0)) for n in names) + " |")
    return "\n".join(lines)


def dense_reference(stats, name="no_td"):
    """``name``'s mean dense BLEU (evaluation 'weight'); no_td's is what every retention divides by.
    None if absent."""
    reference = stats.get(("weight", name, 0.0))
    return reference["mean"] if reference and reference["mean"] > 0 else None


def control(name):
    """The no_td a job named apart by overrides (``gmp precision=fp32``) is also read against: the no_td
    named apart the same way (``no_td precision=fp32``), trained with the same recipe."""
    setting = name.partition(" ")[2]
    return f"no_td {setting}" if setting else "no_td"


def curve_against(results, name):
    """Per control seed, one line: its validation loss minus the plain no_td's of the same seed, epoch by
    epoch, set against how far apart no_td's own seeds lie at each epoch (highest minus lowest)."""
    plain = {r["seed"]: {p["epoch"]: p["loss"] for p in r["curve"]} for r in results if r["name"] == "no_td"}
    by_epoch = {}
    for curve in plain.values():
        for epoch, loss in curve.items():
            by_epoch.setdefault(epoch, []).append(loss)
    spread = {e: max(losses) - min(losses) for e, losses in by_epoch.items() if len(losses) > 1}
    lines = []
    for r in (r for r in results if r["name"] == name and r["seed"] in plain):
        twin = plain[r["seed"]]
        diffs = [(p["epoch"], p["loss"] - twin[p["epoch"]]) for p in r["curve"] if p["epoch"] in twin]
        if not diffs:
            continue
        values = [d for _, d in diffs]
        line = (f"Validation loss, {name} seed {r['seed']} minus no_td seed {r['seed']} at the same epoch: "
                f"{min(values):+.3f} to {max(values):+.3f} over {len(diffs)} epochs (the last {values[-1]:+.3f})")
        known = [(d, spread[e]) for e, d in diffs if e in spread]
        if known:
            line += (f"; no_td's seeds lie {min(s for _, s in known):.3f}-{max(s for _, s in known):.3f} apart "
                     f"at an epoch, and the difference is inside that spread at "
                     f"{sum(abs(d) <= s for d, s in known)} of {len(known)} epochs")
        lines.append(line + ".")
    return lines


def controls(rows, stats, results):
    """How far a setting named apart moves no_td: each such no_td against the plain one, at every
    evaluation and level both have, and its validation curve against the plain one of the same seed."""
    order = {e: i for i, e in enumerate(dict.fromkeys(r["evaluation"] for r in rows))}
    patterns = {r["evaluation"]: r.get("pattern", "unstructured") for r in rows}
    sections = []
    for name in sorted({n for (_, n, _) in stats if n.startswith("no_td ")}):
        shared = sorted(((e, lv) for (e, n, lv) in stats if n == name and (e, "no_td", lv) in stats),
                        key=lambda e_lv: (order[e_lv[0]], e_lv[1]))
        lines = [f"| evaluation | pruned | no_td | {name} | difference | no_td's seed std |",
                 "|---|---|---|---|---|---|"]
        for e, lv in shared:
            plain, other = stats[(e, "no_td", lv)], stats[(e, name, lv)]
            std = "–" if plain["std"] is None else f"{plain['std']:.2f}"
            lines.append(f"| {e} | {level_name(lv, patterns[e])} | {cell(plain)} | {cell(other)} | "
                         f"{other['mean'] - plain['mean']:+.2f} | {std} |")
        parts = (["\n".join(lines)] if shared else []) + curve_against(results, name)
        if parts:
            sections.append("\n\n".join([f"### {name} against no_td"] + parts))
    return sections and "## Controls (a setting named apart, against no_td)\n\n" + "\n\n".join(sections)


def above(stats, evaluations, name, level, s):
    """' and above NAME': whether mean BLEU ``s`` beats model NAME's best mean BLEU at the level among
    ``evaluations`` (gmp has no eval-scaled row: its best row is what a TD row has to beat). NAME is a
    label: a job named apart by an override (``gmp precision=fp32``) counts, and is named in the verdict."""
    found = [(s_, e, n) for (e, n, lv), s_ in stats.items()
             if lv == level and e in evaluations and (n == name or n.startswith(name + " "))]
    if not found:
        return False, f"{name} not measured"
    other, evaluation, shown = max(found, key=lambda sen: sen[0]["mean"])
    margin = s["mean"] - other["mean"]
    return margin > 0, f"{'above' if margin > 0 else 'below'} {shown} ({evaluation}, {cell(other)}) by {abs(margin):.2f}"


def target_row(t, shown, s, dense, stats, evaluations, own=None) -> str:
    """One target's table row for mean BLEU ``s`` (None: not measured). ``own``: (name, mean dense BLEU)
    of the job's own control (``control``), whose retention is noted beside the verdict's."""
    if s is None:
        return f"| {shown} | {level_name(t['level'])} | 0 | not measured | | {t['ratio']} | no |"
    ratio = s["mean"] / dense
    met = ratio >= t["ratio"]
    short = t["ratio"] - ratio
    notes = [] if met else [f"short by {short:.3f}" if short >= 0.0005 else f"short by {short:.1e}"]
    if t.get("above"):
        beats, note = above(stats, evaluations, t["above"], float(t["level"]), s)
        met, notes = met and beats, notes + [note]
    if own:
        notes.append(f"over {own[0]}'s dense {own[1]:.2f}: {s['mean'] / own[1]:.3f}")
    goal = f"{t['ratio']}" + (f", above {t['above']}" if t.get("above") else "")
    verdict = ("yes" if met else "no") + (f" ({'; '.join(notes)})" if notes else "")
    return f"| {shown} | {level_name(t['level'])} | {s['n']} | {cell(s)} | {cell(s, 3, dense)} | {goal} | {verdict} |"


def chosen_on_val(t, names, evaluations, stats):
    """(name, evaluation, val stat) with the highest mean val BLEU, where the target maps each test
    evaluation to the val one that scores the same variant (``on_val``); None if none is measured."""
    found = [(n, e, stats[(t["on_val"][e], n, 0.0)]) for n in names for e in evaluations
             if (t["on_val"].get(e), n, 0.0) in stats]
    return max(found, key=lambda nes: nes[2]["mean"], default=None)


def verdicts(results, stats, targets):
    """Each target: mean BLEU at the level over no_td's mean dense BLEU (evaluation 'weight'), and,
    where it names a model to beat (``above``), that model's best mean BLEU at the same level.
    A target over several variants with ``on_val`` also gets the row of the variant val chooses:
    what it is judged by, since the best of the test rows is a choice made on test."""
    dense = dense_reference(stats)
    if not targets:
        return ""
    if dense is None:
        return "Targets: no reference (no no_td job with dense BLEU above 0 in the evaluation 'weight')."
    lines = [f"Targets (mean BLEU over no_td's mean dense BLEU, {dense:.2f}):", "",
             "| model | pruned | seeds | BLEU | / no_td dense | target | met |", "|---|---|---|---|---|---|---|"]
    for t in targets:
        models = [t["model"]] if isinstance(t["model"], str) else list(t["model"])
        evaluations = t.get("evaluations") or ["weight"]
        names = list(dict.fromkeys(r["name"] for r in results if r["label"] in models)) or models
        for name in names:
            reference = control(name)
            own = dense_reference(stats, reference) if reference != "no_td" else None
            for evaluation in evaluations:
                shown = name if evaluations == ["weight"] else f"{name} ({evaluation})"
                lines.append(target_row(t, shown, stats.get((evaluation, name, float(t["level"]))), dense, stats,
                                        evaluations, own and (reference, own)))
        choice = t.get("on_val") and chosen_on_val(t, names, evaluations, stats)
        if choice:
            name, evaluation, val = choice
            lines.append(target_row(t, f"**chosen on val**: {name} ({evaluation}; val {cell(val)})",
                                    stats.get((evaluation, name, float(t["level"]))), dense, stats, evaluations))
    return "\n".join(lines)


def versus(rows, stats, spec):
    """At each level, the best TD row (the highest mean BLEU of a model in ``spec.models``, one-shot,
    among those with the most seeds) against the reference (``spec.reference``: model, evaluation).
    Ahead means a margin larger than the two sample standard deviations added."""
    ref_model, ref_evaluation = spec["reference"]["model"], spec["reference"]["evaluation"]
    lines = [f"Best TD row among those with the most seeds (picked on test: a bound, not a choice) against "
             f"{ref_model} ({ref_evaluation}); "
             "ahead = margin above the sum of the two seed standard deviations:", "",
             "| pruned | best TD row | BLEU | reference | margin | spread | ahead |",
             "|---|---|---|---|---|---|---|"]
    labels = {r["name"]: r["label"] for r in rows}
    for level in spec["levels"]:
        ref = stats.get((ref_evaluation, ref_model, float(level)))
        found = {(e, n): s for (e, n, lv), s in stats.items() if lv == float(level) and labels.get(n) in spec["models"]
                 and not e.startswith(("finetune", "valid")) and e not in spec.get("exclude", [])}
        most = max((s["n"] for s in found.values()), default=0)
        best = max(((k, s) for k, s in found.items() if s["n"] == most), key=lambda ks: ks[1]["mean"], default=None)
        if best is None or ref is None:
            lines.append(f"| {level_name(level)} | {'not measured' if best is None else best[0][1]} | | "
                         f"{'not measured' if ref is None else cell(ref)} | | | no |")
            continue
        (evaluation, name), s = best
        margin = s["mean"] - ref["mean"]
        spread = None if s["std"] is None or ref["std"] is None else s["std"] + ref["std"]
        ahead = "one seed: unknown" if spread is None else ("yes" if margin > spread else "no")
        lines.append(f"| {level_name(level)} | {name} ({evaluation}) | {cell(s)} | {cell(ref)} | {margin:.2f} | "
                     f"{'–' if spread is None else f'{spread:.2f}'} | {ahead} |")
    return "\n".join(lines)


def lead(s, other):
    """Whether mean BLEU ``s`` is clearly ahead of ``other``: by more than their seed standard deviations
    added. A one-seed row has no standard deviation, so a margin the other's spread alone covers is no
    lead, and one above it is left open."""
    margin = s["mean"] - other["mean"]
    known = [x["std"] for x in (s, other) if x["std"] is not None]
    if len(known) == 2:
        return "yes" if margin > sum(known) else "no"
    if margin <= sum(known):
        return "no (one seed)"
    return "unknown: one seed, margin above the other's spread" if known else "unknown: one seed each"


def best_one_shot(rows, stats, low=0.5):
    """Per level from ``low`` up (and per N:M pattern), among the test rows without fine-tuning: the
    model and evaluation with the highest mean BLEU, the best row of any other model, their seeds,
    and whether the lead is larger than the seeds' spread (``lead``)."""
    options = {}
    for r in rows:
        level = float(r["requested_sparsity"])
        if (r["mode"] == "weight" and not r["evaluation"].startswith("finetune") and level >= low
                and r.get("subset", "test") == "test"):
            key = (r.get("pattern") or "unstructured", level)
            options.setdefault(key, {})[(r["name"], r["evaluation"])] = stats[(r["evaluation"], r["name"], level)]
    lines = ["Picked on test (a bound, not a choice); the runner-up is another model's best row; "
             "spread = the two seed standard deviations added (? for one seed):", "",
             "| pruned | best | seeds | BLEU | runner-up | seeds | BLEU | margin | spread | clear |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for (pattern, level), found in sorted(options.items(), key=lambda kv: (kv[0][0] != "unstructured", kv[0])):
        ranked = sorted(found.items(), key=lambda kv: -kv[1]["mean"])
        best, s = ranked[0]
        second = next(((k, o) for k, o in ranked if k[0] != best[0]), None)
        head = f"| {level_name(level, pattern)} | {best[0]} ({best[1]}) | {s['n']} | {cell(s)} | "
        if second is None:
            lines.append(head + "– | – | – | – | – | – |")
            continue
        (name, evaluation), other = second
        spread = " + ".join("?" if x["std"] is None else f"{x['std']:.2f}" for x in (s, other))
        lines.append(head + f"{name} ({evaluation}) | {other['n']} | {cell(other)} | {s['mean'] - other['mean']:.2f} | "
                     f"{spread} | {lead(s, other)} |")
    return "\n".join(lines)


def lowest(curve):
    """The validation with the lowest loss: where training stopped improving (the budget study's answer)."""
    return min(curve, key=lambda point: point["loss"]) if curve else None


def validation_table(results):
    lines = ["| model | seeds | updates | final val loss | lowest val loss at update (per seed) |",
             "|---|---|---|---|---|"]
    for name in dict.fromkeys(r["name"] for r in results):
        mine = [r for r in results if r["name"] == name and r["curve"]]
        if mine:
            at = ", ".join(f"{lowest(r['curve'])['loss']:.3f} at {lowest(r['curve'])['updates']}" for r in mine)
            lines.append(f"| {name} | {len(mine)} | {', '.join(str(r['updates']) for r in mine)} | "
                         f"{cell(stat([r['curve'][-1]['loss'] for r in mine]), 3)} | {at} |")
    return "\n".join(lines)


def plot_curves(results, path):
    """Validation loss against updates, one line per job, one colour per model."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7.2, 4.4))
    names = list(dict.fromkeys(r["name"] for r in results))
    palette = plt.get_cmap("tab10" if len(names) <= 10 else "tab20").colors  # tab20 pairs near-identical hues
    colors = {name: palette[i % len(palette)] for i, name in enumerate(names)}
    labelled = set()
    for r in results:
        label = None if r["name"] in labelled else r["name"]  # one legend entry per model, not per seed
        labelled.add(r["name"])
        ax.plot([p["updates"] for p in r["curve"]], [p["loss"] for p in r["curve"]], marker=".",
                color=colors[r["name"]], linewidth=1, label=label)
    ax.set_xlabel("updates")
    ax.set_ylabel("validation loss (label-smoothed, base 2)")
    ax.grid(alpha=0.3)
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize="small")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    atomic_write(path, buffer.getvalue())


def write_report(sweep_dir, out=None, finished=None):
    """Write DIR/report/ (or ``out``); returns (that folder, tables.md's text, the problems).
    ``finished``: the folder of finished jobs' copies, else the latest launch's ``finished``."""
    if not os.path.isdir(sweep_dir):
        raise UserError(f"no study folder {sweep_dir}")
    launch = launch_config(sweep_dir)
    ignored = ignored_keys(launch)
    if finished is not None and not os.path.isdir(finished):
        raise UserError(f"no folder of finished jobs {finished}")
    if finished is None and launch is not None and launch.get("finished"):
        finished = os.path.join(REPO, str(launch.finished))  # as the jobs read it: from the repository root
    results, problems = load(sweep_dir, launch, ignored, finished)
    if not results and not problems:
        raise UserError(f"{sweep_dir} holds no study job (no */.hydra/overrides.yaml)")
    out = out or os.path.join(sweep_dir, "report")
    os.makedirs(out, exist_ok=True)
    name_jobs(results, ignored)
    rows = [dict(name=r["name"], seed=r["seed"], job=r["job"], updates=r["updates"], **row)
            for r in results for row in r["rows"]]
    write_rows(out, rows, list(dict.fromkeys(k for row in rows for k in row)))
    stats = aggregate(rows)
    sections = [f"# Study {sweep_dir.rstrip(os.sep)}: {len(results)} jobs done, "
                f"{len(problems)} not" + "".join(f"\n- {job}: {what}" for job, what in problems)]
    if results:
        spec = checks(launch, results)
        evaluations = list(dict.fromkeys(r["evaluation"] for r in rows))
        sections += ["## BLEU (mean ± sample std over seeds)"]
        sections += [evaluation_table(rows, stats, e) for e in evaluations]
        dense = dense_reference(stats)
        if dense:  # on the test subset only: val's BLEU is not comparable with test's
            sections += [f"## Retention (mean BLEU over no_td's mean dense BLEU, {dense:.2f})"] + [
                evaluation_table(rows, stats, e, dense) for e in evaluations
                if all(r.get("subset", "test") == "test" for r in rows if r["evaluation"] == e)]
        sections += [verdicts(results, stats, spec["targets"] or []), controls(rows, stats, results),
                     spec["versus"] and versus(rows, stats, spec["versus"]),
                     "## The best one-shot row per level\n\n"
                     + best_one_shot(rows, stats), "## Validation\n\n" + validation_table(results)]
        plot_curves([r for r in results if r["curve"]], os.path.join(out, "curves.png"))
    text = "\n\n".join(s for s in sections if s) + "\n"
    atomic_write(os.path.join(out, "tables.md"), text)
    return out, text, problems
