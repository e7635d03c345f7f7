"""The converged Multi30k study, as one run: measure, size, choose on val, train, sweep, report.

    python benchmarks/multi30k_study.py OUT_DIR          (settings from the environment, below)
    python benchmarks/multi30k_study.py --estimate RATE STARTUP DECODE [--budget-minutes M]

1. Prepare the data (train, val, test_2016_flickr; the 2017 and 2018 test sets are never read)
   and time PARALLEL short trainings (PROBE_UPDATES each, run at once as the study will) and
   one decode each: updates per second per process, start-up and decode seconds.
2. Size: simulate the whole schedule and give every model the most updates that fit in
   BUDGET_MINUTES, between MIN_EPOCHS and MAX_EPOCHS; if even MIN_EPOCHS does not fit, the
   lowest-priority classes are deferred to a later run (same OUT_DIR: it resumes, with the
   same sizing). OUT_DIR/sizing.json records it all.
3. Recipe on val: no_td at each lr of LRS (warm-up WARMUPS of the updates); the lowest final
   validation loss is the recipe of every model.
4. Every method at that recipe; each baseline's coefficient, ramping TD's ramp and GMP's end
   step are tuned over a grid (GRID_SIZE values) on val BLEU at the level they are reported
   at; SEEDS seeds for the TD-study models and gmp; the pruners, 2:4 and the fine-tune of
   issues 13/14 where their flags exist (skipped with a line where not).
5. Sweep each model on test_2016_flickr and write the report (benchmarks/multi30k_report.py)
   to DOCS (default OUT_DIR/docs).

Environment (defaults in brackets): MULTI30K [../shared/data/multi30k], DEVICE [cpu] or cuda,
PARALLEL [1], BUDGET_MINUTES [10; 0: no deadline], UPDATES [sized], MIN_EPOCHS [20],
MAX_EPOCHS [60], MIN_UPDATES, MAX_UPDATES (override the epoch bounds), PROBE_UPDATES [50],
MODEL [small] or tiny, MAX_TOKENS [16384 cuda, 4096 cpu], PRECISION [fp16 cuda (fairseq 0.12 turns --bf16 into --tpu), fp32 cpu],
LRS [1e-3 2e-3 4e-3], WARMUPS [0.1], SEEDS [3], GRID_SIZE [3], LABELS [all], ALTERNATIVES [1],
CALIB_SENTENCES [128], FINETUNE_FRACTION [0.1], FINETUNE_LEVELS [0.8 0.9],
ALT_PRUNERS [wanda sparsegpt 2:4 2:4_wanda 2:4_sparsegpt], VOCAB [8000], WEIGHT_LEVELS, UNIT_LEVELS,
ALT_LEVELS, SWEEP_TOKENS [12000 cuda, 4000 cpu], BEAM [4], LAUNCHER [spawn cuda, fork cpu],
SAFETY [0.9], PROBE_PARALLEL [PARALLEL: rounds of probes, e.g. "6 12"; the round with the most
updates/s in all sets how many jobs run at once], PREPARED (a data folder made by
--prepare-only), EXPORT (copy the small files, not checkpoints, there at the end), DOCS
[EXPORT/docs or OUT_DIR/docs], PYTHON (interpreter for spawned jobs).
"""
import argparse
import json
import os
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import multi30k_plan as plan  # noqa: E402
import multi30k_jobs  # noqa: E402
from study_runner import ForkLauncher, Runner, SpawnLauncher, simulate  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _list(env, name, default, kind=float):
    return [kind(v) for v in env.get(name, default).split()]


def config(out, env=os.environ) -> dict:
    cuda = env.get("DEVICE", "cpu").startswith("cuda")
    labels = env.get("LABELS", " ".join(plan.METHODS)).split()
    unknown = [label for label in labels if label not in plan.METHODS]
    if unknown:
        raise SystemExit(f"multi30k_study.py: error: unknown label {unknown[0]}")
    cfg = dict(
        out=os.path.abspath(out), data=os.path.abspath(env.get("MULTI30K", os.path.join(REPO, "..", "shared", "data",
                                                                                         "multi30k"))),
        device="cuda" if cuda else "cpu", parallel=int(env.get("PARALLEL", 1)),
        probe_parallel=[int(v) for v in env.get("PROBE_PARALLEL", env.get("PARALLEL", "1")).split()],
        budget_minutes=float(env.get("BUDGET_MINUTES", 10)),
        updates=int(env["UPDATES"]) if env.get("UPDATES") else None,
        min_epochs=float(env.get("MIN_EPOCHS", 20)), max_epochs=float(env.get("MAX_EPOCHS", 60)),
        min_updates=int(env["MIN_UPDATES"]) if env.get("MIN_UPDATES") else None,
        max_updates=int(env["MAX_UPDATES"]) if env.get("MAX_UPDATES") else None,
        probe_updates=int(env.get("PROBE_UPDATES", 50)), model=env.get("MODEL", "small"),
        max_tokens=int(env.get("MAX_TOKENS", 16384 if cuda else 4096)),
        precision=env.get("PRECISION", "fp16") if cuda else "fp32",
        lrs=_list(env, "LRS", "1e-3 2e-3 4e-3"), warmups=_list(env, "WARMUPS", "0.1"),
        seeds=int(env.get("SEEDS", 3)), grid_size=int(env.get("GRID_SIZE", 3)), labels=labels,
        alternatives=env.get("ALTERNATIVES", "1") == "1", calib_sentences=int(env.get("CALIB_SENTENCES", 128)),
        finetune_fraction=float(env.get("FINETUNE_FRACTION", 0.1)), vocab=int(env.get("VOCAB", 8000)),
        finetune_levels=_list(env, "FINETUNE_LEVELS", " ".join(map(str, plan.FINETUNE_LEVELS))),
        pruners=[p.replace("_", " ") for p in env.get("ALT_PRUNERS", " ".join(
            name.replace(" ", "_") for name, _, _ in plan.PRUNERS)).split()],
        weight_levels=_list(env, "WEIGHT_LEVELS", "0 0.5 0.6 0.7 0.8 0.9 0.95"),
        unit_levels=_list(env, "UNIT_LEVELS", "0 0.1 0.2 0.3 0.4 0.5 0.6 0.7"),
        alt_levels=_list(env, "ALT_LEVELS", "0.5 0.6 0.7 0.8 0.9 0.95"),
        sweep_tokens=int(env.get("SWEEP_TOKENS", 12000 if cuda else 4000)), beam=int(env.get("BEAM", 4)),
        launcher=env.get("LAUNCHER", "spawn" if cuda else "fork"), safety=float(env.get("SAFETY", 0.9)),
        export=os.path.abspath(env["EXPORT"]) if env.get("EXPORT") else None,
        prepared=os.path.abspath(env["PREPARED"]) if env.get("PREPARED") else None,
        docs=os.path.abspath(env.get("DOCS") or os.path.join(env.get("EXPORT") or out, "docs")),
        python=env.get("PYTHON", sys.executable),
        threads=1 if cuda else max(1, (os.cpu_count() or 1) // max(1, int(env.get("PARALLEL", 1)))),
    )
    if cfg["precision"] not in plan.PRECISION_FLAGS or cfg["model"] not in plan.MODELS:
        raise SystemExit(f"multi30k_study.py: error: PRECISION must be one of {', '.join(plan.PRECISION_FLAGS)} "
                         f"and MODEL one of {', '.join(plan.MODELS)}")
    plan.recipe_grid(cfg["lrs"], cfg["warmups"], cfg["max_tokens"])  # checks the warm-ups
    known = [name for name, _, _ in plan.PRUNERS]
    if any(p not in known for p in cfg["pruners"]):
        raise SystemExit(f"multi30k_study.py: error: ALT_PRUNERS takes {', '.join(n.replace(' ', '_') for n in known)}")
    return cfg


def link_raw(cfg):
    """OUT/raw: train, valid (val) and test (test_2016_flickr), the only files the study reads;
    OUT/data: a link to PREPARED when given (a data folder made earlier, e.g. on another machine)."""
    if cfg["prepared"] and not os.path.lexists(os.path.join(cfg["out"], "data")):
        if not os.path.isfile(os.path.join(cfg["prepared"], "bin", "dict.en.txt")):
            raise SystemExit(f"multi30k_study.py: error: PREPARED={cfg['prepared']} has no bin/dict.en.txt")
        os.makedirs(cfg["out"], exist_ok=True)
        os.symlink(cfg["prepared"], os.path.join(cfg["out"], "data"))
    if os.path.isfile(os.path.join(cfg["out"], "data", "bin", "dict.en.txt")):
        return  # prepared: the raw text is not read again
    if not os.path.isfile(os.path.join(cfg["data"], "train.en")):
        raise SystemExit(f"multi30k_study.py: error: no Multi30k at {cfg['data']}")
    raw = os.path.join(cfg["out"], "raw")
    os.makedirs(raw, exist_ok=True)
    for split, source in (("train", "train"), ("valid", "val"), ("test", "test_2016_flickr")):
        for lang in ("en", "de"):
            link = os.path.join(raw, f"{split}.{lang}")
            if not os.path.lexists(link):
                os.symlink(os.path.realpath(os.path.join(cfg["data"], f"{source}.{lang}")), link)


def export(out, dest, limit=5 << 20):
    """Copy what the report and a later resumed run need (every text file, logs, results, the
    state), not the checkpoints nor the data, into ``dest``."""
    import shutil
    for root, dirs, files in os.walk(out):
        rel = os.path.relpath(root, out)
        dirs[:] = [d for d in dirs if not (rel == "." and d in ("data", "raw", "docs"))]
        for name in files:
            path = os.path.join(root, name)
            if name.endswith(".pt") or os.path.islink(path) or os.path.getsize(path) > limit:
                continue
            os.makedirs(os.path.join(dest, rel), exist_ok=True)
            shutil.copy2(path, os.path.join(dest, rel, name))


def makespan_function(study, sizing):
    """makespan(updates, classes) of the jobs still to run, with the probe's measurements."""
    def makespan(updates, classes):
        hypothetical = dict(sizing, updates=updates)
        ends = simulate(study.jobs, sizing.get("parallel", study.cfg["parallel"]),
                        lambda job: study.estimate(job, hypothetical),
                        include=lambda job: job.klass in classes)
        return max(ends.values(), default=0.0)
    return makespan


def resume(study, sizing, deadline, save):
    """A later run keeps the earlier sizing (same updates for every model, no probe) and takes
    as many of the classes still to run, in priority order, as fit in its own budget."""
    classes = plan.STUDY_CLASSES
    keep = len(classes)
    if deadline is not None:
        makespan = makespan_function(study, sizing)
        usable = study.cfg["safety"] * (deadline - time.time() - 20 - 2 * sizing["startup_s"])
        while keep > 2 and makespan(sizing["updates"], classes[:keep]) > usable:
            keep -= 1
    sizing.update(classes=classes[:keep], deferred=[plan.CLASS_NAMES[k] for k in classes[keep:]],
                  resumed=sizing.get("resumed", 0) + 1)
    save()
    print(f"resuming with the earlier sizing: {sizing['updates']} updates per model; deferred: "
          f"{', '.join(sizing['deferred']) or 'nothing'}", flush=True)


def estimate_only(args):
    """--estimate: the schedule's length for assumed measurements, nothing run."""
    cfg = config(args.out or "out/estimate")
    study = multi30k_jobs.Study(cfg, {}, lambda *a: None)
    sizing = dict(rate=args.estimate[0], startup_s=args.estimate[1], sweep_startup_s=args.estimate[1],
                  decode_level_s=args.estimate[2], updates_per_epoch=args.updates_per_epoch)
    makespan = makespan_function(study, sizing)
    classes = plan.STUDY_CLASSES
    print(f"{len(study.jobs)} jobs; PARALLEL={cfg['parallel']}, rate {sizing['rate']} updates/s per process, "
          f"start-up {sizing['startup_s']} s, decode {sizing['decode_level_s']} s per level")
    print("| epochs | updates | " + " | ".join(f"up to {plan.CLASS_NAMES[k]}" for k in classes[1:]) + " |")
    print("|---" * (len(classes) + 1) + "|")
    for epochs in args.epochs:
        updates = round(epochs * sizing["updates_per_epoch"])
        cells = [f"{makespan(updates, classes[:keep]) / 60:.1f} min" for keep in range(2, len(classes) + 1)]
        print(f"| {epochs:g} | {updates} | " + " | ".join(cells) + " |")
    if args.budget_minutes:
        updates, included = plan.choose_sizing(makespan, args.budget_minutes * 60 * cfg["safety"],
                                               round(cfg["min_epochs"] * sizing["updates_per_epoch"]),
                                               round(cfg["max_epochs"] * sizing["updates_per_epoch"]), classes)
        print(f"budget {args.budget_minutes} min: {updates} updates "
              f"({updates / sizing['updates_per_epoch']:.1f} epochs), classes: "
              + ", ".join(plan.CLASS_NAMES[k] for k in included))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", nargs="?", default=None)
    p.add_argument("--estimate", nargs=3, type=float, metavar=("RATE", "STARTUP", "DECODE"),
                   help="print the schedule's length for these measurements and stop")
    p.add_argument("--updates-per-epoch", type=float, default=32.0,
                   help="with --estimate: Multi30k at 16384 tokens per batch is 32")
    p.add_argument("--epochs", type=float, nargs="+", default=[10, 20, 30, 40])
    p.add_argument("--budget-minutes", type=float)
    p.add_argument("--prepare-only", action="store_true",
                   help="make OUT_DIR/data (to carry to another machine as PREPARED) and stop")
    args = p.parse_args(argv)
    if args.estimate:
        return estimate_only(args)
    cfg = config(args.out or "out/multi30k_study")
    if args.prepare_only:
        link_raw(cfg)
        import subprocess
        return subprocess.run([cfg["python"], os.path.join(REPO, "scripts", "prepare_data.py"), "--raw-dir",
                               os.path.join(cfg["out"], "raw"), "--dest", os.path.join(cfg["out"], "data"),
                               "--vocab-size", str(cfg["vocab"]), "--workers", str(os.cpu_count() or 1)]).returncode
    start = time.time()
    deadline = start + cfg["budget_minutes"] * 60 if cfg["budget_minutes"] > 0 else None
    link_raw(cfg)
    state_path = os.path.join(cfg["out"], "study.json")
    state = json.load(open(state_path)) if os.path.exists(state_path) else {}
    state["config"] = {k: v for k, v in cfg.items() if k not in ("python",)}

    def save():
        from td_fairseq.files import write_json
        write_json(state_path, state)

    study = multi30k_jobs.Study(cfg, state, save, deadline=deadline)
    study.makespan = lambda sizing: makespan_function(study, sizing)
    if state.get("sizing"):
        resume(study, state["sizing"], deadline, save)
    launcher = ForkLauncher() if cfg["launcher"] == "fork" else SpawnLauncher(cfg["python"])
    print(f"multi30k study: {len(study.jobs)} jobs, {cfg['parallel']} at a time on {cfg['device']}, "
          f"budget {cfg['budget_minutes']:g} min, launcher {cfg['launcher']}", flush=True)
    slots = (state.get("sizing") or {}).get("parallel") or max(cfg["probe_parallel"])
    runner = Runner(study.jobs, slots, launcher, deadline,
                    say=lambda line: print(f"[{time.time() - start:6.0f} s] {line}", flush=True))
    study.set_slots = lambda n: setattr(runner, "slots", n)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a timeout's TERM: end the jobs, keep the state
    interrupted = None
    try:
        outcomes = runner.run()
    except (KeyboardInterrupt, SystemExit) as error:
        interrupted, outcomes = error, runner.outcomes
    state["outcomes"] = {name: vars(o) for name, o in outcomes.items()}
    state["wall_seconds"] = round(time.time() - start, 1)
    save()
    counts = {}
    for o in outcomes.values():
        counts[o.status] = counts.get(o.status, 0) + 1
    print("jobs: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) + f"; {state['wall_seconds']:.0f} s")
    import multi30k_report
    try:
        multi30k_report.main([cfg["out"], "--docs", cfg["docs"]])
    except SystemExit as error:  # no sweep finished: say so, keep the exit status of the study
        print(error, file=sys.stderr)
    if cfg["export"]:
        export(cfg["out"], cfg["export"])
        print(f"exported: {cfg['export']} (python benchmarks/multi30k_report.py {cfg['export']} --docs DIR)")
    print(f"report: {cfg['docs']}")
    if interrupted is not None:
        raise interrupted


if __name__ == "__main__":
    main()
