"""tuning.md of a Multi30k study run: the sizing, the recipe grid, every coefficient grid with
the choice and its rule, the baselines that did not train, and what did not run.

Made from OUT/study.json (written by multi30k_study.py) by multi30k_report.py.
"""
import os

import multi30k_plan as plan

NOT_TRAINED = 1.0  # a final validation loss this far above no_td's: the model did not train


def _number(value, digits=2):
    return "–" if value is None else f"{value:.{digits}f}"


def budget_line(study) -> str:
    sizing, recipe = study.get("sizing"), study.get("recipe", {})
    if not sizing:
        return "Budget: not sized (the probe did not finish)."
    chosen = next((g for g in recipe.get("grid", []) if g["key"] == recipe.get("chosen")), None)
    lr = f"peak lr {chosen['lr']:g}, warm-up {chosen['warmup']:.0%} of the updates, " if chosen else ""
    return (f"Budget: {sizing['updates']} updates per model ({sizing['epochs']} epochs of "
            f"{sizing['updates_per_epoch']} batches of {sizing['max_tokens']} tokens), {lr}{sizing['precision']} on "
            f"{sizing['device']}, {sizing['parallel']} processes at once; {sizing['why']}.")


def sizing_section(sizing) -> str:
    if not sizing:
        return "## Sizing\n\nNot sized: the probe did not finish."
    rows = [("device, precision, processes at once", f"{sizing['device']}, {sizing['precision']}, "
                                                      f"{sizing['parallel']}"),
            ("model, tokens per batch", f"{sizing['model']}, {sizing['max_tokens']}"),
            ("probe", f"{sizing['probe_updates']} updates per process, each round all at once")]
    rows += [(f"round of {r['parallel']}: updates/s per process", ", ".join(f"{v:.2f}" for v in r["rates"])
              + f" (in all, at the slowest: {r['aggregate']:.2f})") for r in sizing.get("probe_rounds", [])]
    rows += [("processes at once chosen, rate used (the slowest)", f"{sizing['parallel']}, {sizing['rate']:.3f} "
                                                                    "updates/s"),
            ("start-up per training, per sweep", f"{sizing['startup_s']} s, {sizing['sweep_startup_s']} s"),
            ("decode per level (1000 sentences)", f"{sizing['decode_level_s']} s"),
            ("batches per epoch", sizing["updates_per_epoch"]),
            ("updates per model", f"{sizing['updates']} ({sizing['epochs']} epochs): {sizing['why']}"),
            ("bounds", f"{sizing['min_updates']} to {sizing['max_updates']} updates"),
            ("budget", f"{sizing['budget_minutes']} min, of which {sizing['usable_s']} s planned"),
            ("simulated length: this run, everything", f"{sizing['makespan_s']} s, {sizing['makespan_all_s']} s"),
            ("deferred to a later run", ", ".join(sizing["deferred"]) or "nothing")]
    return "## Sizing\n\n| | |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in rows)


def recipe_section(recipe) -> str:
    if not recipe:
        return "## Recipe\n\nNot chosen (the recipe runs did not finish)."
    lines = ["## Recipe (no_td on val)", "", f"Rule: {recipe['rule']}. Batch: {recipe['max_tokens']} tokens.", "",
             "| peak lr | warm-up | final val loss | chosen |", "|---|---|---|---|"]
    for g in recipe["grid"]:
        lines.append(f"| {g['lr']:g} | {g['warmup']:.0%} | {_number(g['final_valid_loss'], 3)} | "
                     f"{'yes' if g['key'] == recipe['chosen'] else ''} |")
    return "\n".join(lines)


def tuning_section(tuning, reference_loss) -> str:
    lines = ["## Coefficients (each on val BLEU at the level it is reported at; same budget for all)"]
    for label, t in tuning.items():
        lines += ["", f"### {label}: {t['coefficient']} (val BLEU at {t['level']:.0%} {t['mode']} pruning, "
                      f"{t['score']})", "", f"Rule: {t['rule']}.", "",
                  "| value | val BLEU at level | val BLEU dense | final val loss | chosen |", "|---|---|---|---|---|"]
        for g in t["grid"]:
            lines.append(f"| {plan.value_name(g['value'])} | {_number(g['val_bleu_at_level'])} | "
                         f"{_number(g['val_bleu_dense'])} | {_number(g['final_valid_loss'], 3)} | "
                         f"{'yes' if g['value'] == t['chosen'] else ''} |")
        losses = [g["final_valid_loss"] for g in t["grid"] if g["final_valid_loss"] is not None]
        if reference_loss is not None and losses and min(losses) > reference_loss + NOT_TRAINED:
            lines += ["", f"**Did not train at any value:** the best final val loss {min(losses):.3f} is more than "
                          f"{NOT_TRAINED} above no_td's {reference_loss:.3f}. Why is for the reader of its train.log."]
    return "\n".join(lines)


def outcomes_section(outcomes) -> str:
    counts = {}
    for o in outcomes.values():
        counts[o["status"]] = counts.get(o["status"], 0) + 1
    lines = ["## Jobs", "", ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) + "."]
    missing = [(name, o) for name, o in outcomes.items() if o["status"] != "done"]
    if missing:
        lines += ["", "| job | status | reason |", "|---|---|---|"]
        lines += [f"| {name} | {o['status']} | {o['reason']} |" for name, o in missing]
    return "\n".join(lines)


def tuning_md(study, out_dir) -> str:
    recipe = study.get("recipe")
    reference = None
    if recipe:
        reference = next((g["final_valid_loss"] for g in recipe["grid"] if g["key"] == recipe["chosen"]), None)
    parts = [f"# Multi30k study: sizing, recipe and tuning\n\nGenerated by benchmarks/multi30k_report.py from "
             f"{os.path.basename(os.path.abspath(out_dir))}/study.json. Every choice below is made on val; "
             "test_2016_flickr is only reported.",
             sizing_section(study.get("sizing")), recipe_section(recipe),
             tuning_section(study.get("tuning", {}), reference)]
    if study.get("outcomes"):
        parts.append(outcomes_section(study["outcomes"]))
    return "\n\n".join(parts)
