"""The steps of the Multi30k study that run inside the driver, between its jobs: which flags
exist, the sizing from the probe, the choice of the recipe and of each coefficient. Each reads
the files the jobs wrote and records its result in the study's state (study.json).
"""
import csv
import os
import re
import statistics
import time

import multi30k_plan as plan

FEATURES = {"train": ("--freeze-mask", "--td-pattern"), "sweep": ("--pruner", "--pattern", "--calib-sentences")}


def read_text(path):
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except FileNotFoundError:
        return ""


def read_rows(path):
    try:
        with open(path, encoding="utf-8") as f:
            return list(csv.DictReader(f))
    except FileNotFoundError:
        return []


def write_json(path, data):
    from td_fairseq.files import write_json
    write_json(path, data)


def record_features(study, program, code):
    """Which of the flags the optional stages need this checkout has (from the listing of its options)."""
    text = read_text(study.path("logs", f"help_{program}.log"))
    study.state.setdefault("features", {})[program] = {
        flag: re.search(r"(?<![\w-])" + re.escape(flag) + r"(?![\w-])", text) is not None
        for flag in FEATURES[program]}
    study.save()
    return None if code == 0 else f"listing the options exited with {code}"


def probe_round(study, parallel):
    """(updates/s of each process, start-up seconds of each, batches per epoch) of one round."""
    rates, startups, per_epoch = [], [], [0]
    for i in range(parallel):
        log = read_text(os.path.join(study.run_dir(f"probe/p{parallel}_{i}"), "train.log"))
        rate = plan.train_speed(log)
        if rate and f"probe:{parallel}:{i}" in study.finished:
            rates.append(rate)
            startups.append(max(0.0, study.finished[f"probe:{parallel}:{i}"] - study.cfg["probe_updates"] / rate))
            per_epoch.append(plan.batches_per_epoch(log) or 0)
    return rates, startups, max(per_epoch)


def size(study):
    """Choose the processes at once (the round with the most updates/s in all, counting each
    process at the slowest one's speed) and the updates per model; write sizing.json."""
    cfg = study.cfg
    failed = [j.name for j in study.jobs if j.name.startswith("probe:") and j.name not in study.finished_ok]
    if failed:  # e.g. a precision the TD or baseline code cannot train in: stop before the study
        log = os.path.join(study.run_dir("probe/p" + failed[0].split(":", 1)[1].replace(":", "_")), "train.log")
        raise RuntimeError(f"probe training {failed[0]} failed (see {log}); nothing else is run. On a GPU, "
                           f"PRECISION=fp16 or fp32 is the first thing to try")
    rounds = []
    for parallel in cfg["probe_parallel"]:
        rates, startups, upe = probe_round(study, parallel)
        if rates:
            rounds.append(dict(parallel=parallel, rates=[round(r, 3) for r in rates], startups=startups,
                               aggregate=round(parallel * min(rates), 3), updates_per_epoch=upe))
    if not rounds:
        raise RuntimeError("no probe training logged a speed; see OUT/probe/*/train.log")
    best = max(rounds, key=lambda r: (r["aggregate"], -r["parallel"]))
    if study.set_slots:
        study.set_slots(best["parallel"])
    decodes = [study.finished[f"probe-decode:{i}"] for i in range(cfg["probe_parallel"][-1])
               if f"probe-decode:{i}" in study.finished]
    startup = statistics.median(best["startups"])
    decode_wall = statistics.median(decodes) if decodes else startup
    decode_level = max(decode_wall - startup, 0.25 * decode_wall)
    upe = max(r["updates_per_epoch"] for r in rounds) or 1
    sizing = dict(device=cfg["device"], precision=cfg["precision"], parallel=best["parallel"], model=cfg["model"],
                  max_tokens=cfg["max_tokens"], probe_updates=cfg["probe_updates"],
                  probe_rounds=[{k: v for k, v in r.items() if k != "startups"} for r in rounds],
                  probe_rates=best["rates"], rate=min(best["rates"]), startup_s=round(startup, 2),
                  sweep_startup_s=round(decode_wall - decode_level, 2), decode_level_s=round(decode_level, 2),
                  updates_per_epoch=upe)
    low = cfg["min_updates"] or max(1, round(cfg["min_epochs"] * upe))
    high = cfg["max_updates"] or max(low, round(cfg["max_epochs"] * upe))
    makespan = study.makespan(sizing)
    reserve = 20 + 2 * startup
    usable = cfg["safety"] * (study.deadline - time.time() - reserve) if study.deadline else None
    if cfg["updates"]:
        updates, classes, why = cfg["updates"], plan.STUDY_CLASSES, "fixed by UPDATES"
    elif usable is None:
        updates, classes, why = high, plan.STUDY_CLASSES, "no deadline: MAX_EPOCHS"
    else:
        updates, classes = plan.choose_sizing(makespan, usable, low, high, plan.STUDY_CLASSES)
        why = "the most that fits the budget, within the epoch bounds"
    sizing.update(updates=updates, epochs=round(updates / upe, 1), min_updates=low, max_updates=high,
                  classes=classes, deferred=[plan.CLASS_NAMES[k] for k in plan.STUDY_CLASSES if k not in classes],
                  why=why, budget_minutes=cfg["budget_minutes"], usable_s=round(usable, 1) if usable else None,
                  makespan_s=round(makespan(updates, classes), 1),
                  makespan_all_s=round(makespan(updates, plan.STUDY_CLASSES), 1))
    study.state["sizing"] = sizing
    write_json(study.path("sizing.json"), sizing)
    study.save()


def choose_recipe(study):
    """The recipe of every model: no_td's grid on val, by ``plan.choose_recipe``."""
    grid = []
    for recipe in study._recipes():
        log = read_text(os.path.join(study.run_dir(f"no_td@{recipe.key}/s1"), "train.log"))
        done = os.path.isfile(os.path.join(study.run_dir(f"no_td@{recipe.key}/s1"), "done.json"))
        grid.append(dict(key=recipe.key, lr=recipe.lr, warmup=recipe.warmup,
                         final_valid_loss=plan.final_valid_loss(log) if done else None))
    chosen = plan.choose_recipe({g["key"]: g["final_valid_loss"] for g in grid})
    if chosen is None:
        raise RuntimeError("no recipe run finished with a validation loss")
    study.state["recipe"] = dict(grid=grid, chosen=chosen, max_tokens=study.cfg["max_tokens"],
                                rule="lowest final validation loss of no_td on val")
    study.save()


def choose(study, label):
    """One method's coefficient: its grid on val BLEU, by ``plan.choose_value``."""
    tuning, grid, results = plan.METHODS[label].tuning, [], {}
    for value in tuning.values[:study.cfg["grid_size"]]:
        point = f"{label}@{plan.value_name(value)}"
        bleu = {float(r["requested_sparsity"]): float(r["bleu"]) for r in read_rows(study.path("tune", point,
                                                                                          "results.csv"))}
        results[value] = (bleu.get(tuning.level), bleu.get(0.0))
        log = read_text(os.path.join(study.run_dir(f"{point}/s1"), "train.log"))
        grid.append(dict(value=value, val_bleu_at_level=bleu.get(tuning.level), val_bleu_dense=bleu.get(0.0),
                         final_valid_loss=plan.final_valid_loss(log)))
    chosen = plan.choose_value(results)
    if chosen is None:
        raise RuntimeError(f"no grid point of {label} was measured on val")
    study.state.setdefault("tuning", {})[label] = dict(
        coefficient=tuning.name, level=tuning.level, mode=tuning.mode, score=tuning.score, grid=grid,
        chosen=chosen, rule=f"highest val BLEU at {tuning.level:.0%} {tuning.mode} pruning ({tuning.score}); "
                            f"within {plan.TIE_BLEU} BLEU, the higher dense val BLEU")
    study.save()
