"""The jobs of the Multi30k study (see multi30k_study.py): one graph, built up front, whose
commands are made when each job starts (a seed's run depends on choices made on val first).

Layout of OUT: raw/ (links to the three files read), data/ (sentencepiece, data-bin),
probe/ (the timing runs), runs/RUN/ (train.log, checkpoint_last.pt, done.json: what the run
was), tune/NAME/ (val sweeps for tuning), sweeps/NAME/ (test sweeps: the results), pruned/,
logs/, sizing.json, study.json (choices and every job's outcome). A run is LABEL/sSEED, or
LABEL@VALUE/sSEED for a grid point (no_td@RECIPE for the recipe grid).
"""
import os
import time

import multi30k_plan as plan
import multi30k_steps as steps
from multi30k_steps import read_text, write_json
from study_runner import Job


class Study:
    def __init__(self, cfg, state, save, deadline=None):
        self.cfg, self.state, self.save, self.deadline = cfg, state, save, deadline
        self.out = cfg["out"]
        self.data = os.path.join(self.out, "data")
        self.started, self.finished = {}, {}  # job name -> launch details; -> wall seconds
        self.finished_ok = set()  # trainings that ended with their planned updates
        self.jobs = []
        self.makespan = None  # makespan(sizing) -> f(updates, classes): set by the driver
        self.set_slots = None  # set_slots(n): how many jobs the runner keeps in flight
        self._build()

    # ---- paths, choices, sizing
    def path(self, *parts):
        return os.path.join(self.out, *parts)

    def run_dir(self, run):
        return self.path(*run.split("/")) if run.startswith("probe/") else self.path("runs", *run.split("/"))

    @property
    def sizing(self):
        return self.state.get("sizing")

    def updates(self):
        return self.sizing["updates"]

    def recipe(self):
        chosen = self.state.get("recipe", {}).get("chosen")
        return next((r for r in self._recipes() if r.key == chosen), None)

    def _recipes(self):
        return plan.recipe_grid(self.cfg["lrs"], self.cfg["warmups"], self.cfg["max_tokens"])

    def chosen(self, label):
        return self.state.get("tuning", {}).get(label, {}).get("chosen")

    def reported_run(self, label, seed):
        """The run that stands for (label, seed) in the results; None until its choice is made."""
        if label == "no_td":
            return f"no_td@{self.recipe().key}/s{seed}" if self.recipe() else None
        if label in plan.METHODS and plan.METHODS[label].tuning:
            value = self.chosen(label)
            return None if value is None else f"{label}@{plan.value_name(value)}/s{seed}"
        return f"{label}/s{seed}"

    def estimate(self, job, sizing):
        meta = job.meta
        if not sizing or "rate" not in sizing or meta.get("kind") not in ("train", "sweep", "prune"):
            return 0.0
        if meta["kind"] == "train":
            return sizing["startup_s"] + meta.get("fraction", 1.0) * sizing.get("updates", 0) / sizing["rate"]
        if meta["kind"] == "prune":
            return sizing["sweep_startup_s"]
        return sizing["sweep_startup_s"] + meta["levels"] * sizing["decode_level_s"] * (2 if meta.get("calib") else 1)

    def deferred(self, job):
        sizing = self.sizing
        if job.klass >= plan.RECIPE and sizing and job.klass not in sizing["classes"]:
            return f"deferred: class '{plan.CLASS_NAMES[job.klass]}' is not in this run's budget (sizing.json)"
        return None

    # ---- building the graph
    def add(self, name, klass, **fields):
        job = Job(name, klass, order=len(self.jobs), **fields)
        job.skip = (lambda j=job, own=job.skip: self.deferred(j) or own())  # the sizing's verdict first
        job.estimate = lambda j=job: self.estimate(j, self.sizing)
        self.jobs.append(job)
        return job

    def _build(self):
        cfg = self.cfg
        self.add("prepare", plan.PROBE, program="prepare", threads=os.cpu_count() or 1,
                 args=lambda: ["--raw-dir", self.path("raw"), "--dest", self.data, "--vocab-size", str(cfg["vocab"]),
                               "--workers", str(os.cpu_count() or 1)],
                 log=lambda: self.path("logs", "prepare.log"),
                 done=lambda: os.path.isfile(os.path.join(self.data, "bin", "dict.en.txt")))
        for program in ("train", "sweep"):
            args = ["--user-dir", "td_fairseq", "--task", "translation", "--arch", "transformer_td"] \
                if program == "train" else ["--help"]
            self.add(f"check:{program}", plan.PROBE, program="train-options" if program == "train" else "sweep",
                     args=lambda a=args: a,
                     log=lambda p=program: self.path("logs", f"help_{p}.log"),
                     finish=lambda code, p=program: steps.record_features(self, p, code))
        has_sizing = lambda: self.sizing is not None  # noqa: E731
        previous = ()
        for parallel in cfg["probe_parallel"]:  # rounds one after the other, each all at once
            names = []
            for i in range(parallel):
                run = f"probe/p{parallel}_{i}"
                names.append(self.train(f"probe:{parallel}:{i}", plan.PROBE, lambda r=run: r, ("td", "no_td")[i % 2],
                                        None, 1, ("prepare",), updates=cfg["probe_updates"], done=has_sizing,
                                        recipe=self._recipes()[len(self._recipes()) // 2],
                                        extra=("--disable-validation",), soft_deps=previous).name)
            previous = tuple(names)
        last = cfg["probe_parallel"][-1]
        for i in range(last):  # decoding measured under the last round's load
            self.sweep(f"probe-decode:{i}", plan.PROBE, lambda r=f"probe/p{last}_{i}": r, [0.0], "weight",
                       "magnitude", self.path("probe", f"d{i}"), (f"probe:{last}:{i}",), subset="valid",
                       done=has_sizing)
        self.add("size", plan.PROBE, deps=("prepare",), inline=lambda: steps.size(self), done=has_sizing,
                 soft_deps=tuple(j.name for j in self.jobs if j.name.startswith("probe")))
        for recipe in self._recipes():
            self.train(f"train:no_td@{recipe.key}/s1", plan.RECIPE, lambda k=recipe.key: f"no_td@{k}/s1", "no_td",
                       None, 1, ("size",), recipe=recipe)
        self.add("choose:recipe", plan.RECIPE, deps=("size",), inline=lambda: steps.choose_recipe(self),
                 soft_deps=tuple(j.name for j in self.jobs if j.name.startswith("train:no_td@")),
                 done=lambda: self.recipe() is not None)
        for label in cfg["labels"]:
            self._method(label)
        if cfg["alternatives"]:
            self._alternatives()

    def _method(self, label):
        method, cfg = plan.METHODS[label], self.cfg
        producer = {1: "choose:recipe" if label == "no_td" else f"train:{label}/s1"}
        if method.tuning:
            tunes = []
            for value in method.tuning.values[:cfg["grid_size"]]:
                point = f"{label}@{plan.value_name(value)}"
                self.train(f"train:{point}/s1", method.klass, lambda p=point: f"{p}/s1", label, value, 1,
                           ("choose:recipe",))
                t = method.tuning
                levels = sorted({0.0, t.level})
                tunes.append(self.sweep(f"tune:{point}", method.klass, lambda p=point: f"{p}/s1", levels, t.mode,
                                        t.score, self.path("tune", point), (f"train:{point}/s1",), subset="valid"))
            self.add(f"choose:{label}", method.klass, deps=("choose:recipe",), soft_deps=tuple(j.name for j in tunes),
                     inline=lambda: steps.choose(self, label), done=lambda: self.chosen(label) is not None)
            producer[1] = f"choose:{label}"
        elif label != "no_td":
            self.train(f"train:{label}/s1", method.klass, lambda: f"{label}/s1", label, None, 1, ("choose:recipe",))
        seeds_class = plan.CORE_SEEDS if method.klass == plan.CORE else method.klass
        for seed in range(2, cfg["seeds"] + 1 if method.seeded else 2):
            deps = ("choose:recipe",) + ((f"choose:{label}",) if method.tuning else ())
            self.train(f"train:{label}/s{seed}", seeds_class, lambda s=seed: self.reported_run(label, s), label,
                       "chosen" if method.tuning else None, seed, deps)
            producer[seed] = f"train:{label}/s{seed}"
        for seed, job in sorted(producer.items()):
            for kind in method.sweeps:
                levels = cfg["unit_levels"] if kind == "unit" else cfg["weight_levels"]
                self.sweep(f"sweep:{kind}:{label}/s{seed}", method.klass if seed == 1 else seeds_class,
                           lambda s=seed: self.reported_run(label, s), levels, "unit" if kind == "unit" else "weight",
                           "magnitude" if kind == "weight" else "own", self.path("sweeps", f"{kind}_{label}_s{seed}"),
                           (job,))

    def _alternatives(self):
        cfg, alt = self.cfg, plan.ALTERNATIVES
        producers = {"no_td": "choose:recipe", "td": "train:td/s1"}
        for base in [b for b in ("no_td", "td") if b in cfg["labels"]]:
            for name, pruner, pattern in [p for p in plan.PRUNERS if p[0] in cfg["pruners"]]:
                self._alt_sweep(name, pruner, pattern, base, producers[base])
        if "no_td" in cfg["labels"]:
            pruned = self.path("pruned", "no_td")
            self.add("prune:no_td", alt, deps=("choose:recipe",), program="prune",
                     meta={"kind": "prune", "run": lambda: self.reported_run("no_td", 1)},
                     args=lambda: [os.path.join(self.run_dir(self.reported_run("no_td", 1)), "checkpoint_last.pt"),
                                   "--sparsity", *map(str, cfg["finetune_levels"]), "--out-dir", pruned],
                     log=lambda: self.path("logs", "prune_no_td.log"),
                     done=lambda: os.path.isfile(os.path.join(pruned, "report.json")))
            for level in cfg["finetune_levels"]:
                label = f"no_td_ft{round(level * 100)}"
                flags = ("--td-type", "none", "--freeze-mask", "--finetune-from-model",
                         os.path.join(pruned, f"sparsity_{level:.2f}.pt"))
                self.train(f"train:{label}/s1", alt, lambda l=label: f"{l}/s1", label, None, 1,
                           ("prune:no_td", "check:train"), flags=flags, fraction=cfg["finetune_fraction"],
                           needs=("train", "--freeze-mask"))
                self.sweep(f"sweep:weight:{label}/s1", alt, lambda l=label: f"{l}/s1", [level], "weight", "magnitude",
                           self.path("sweeps", f"weight_{label}_s1"), (f"train:{label}/s1",))
        if "td" in cfg["labels"]:
            self.train("train:td_2_4/s1", alt, lambda: "td_2_4/s1", "td_2_4", None, 1, ("choose:recipe", "check:train"),
                       flags=plan.TD_2_4, needs=("train", "--td-pattern"))
            self.sweep("sweep:weight:td_2_4/s1", alt, lambda: "td_2_4/s1", [0.0], "weight", "magnitude",
                       self.path("sweeps", "weight_td_2_4_s1"), ("train:td_2_4/s1",))
            self._alt_sweep("2:4", "magnitude", "2:4", "td_2_4", "train:td_2_4/s1")

    def _alt_sweep(self, name, pruner, pattern, base, producer):
        extra, needs = [], []
        if pruner != "magnitude":
            extra += ["--pruner", pruner, "--calib-sentences", str(self.cfg["calib_sentences"])]
            needs += ["--pruner", "--calib-sentences"]
        if pattern:
            extra += ["--pattern", pattern]
            needs.append("--pattern")
        slug = name.replace(":", "_").replace(" ", "_")
        run = (lambda: self.reported_run(base, 1)) if base in plan.METHODS else (lambda: f"{base}/s1")
        self.sweep(f"alt:{name}:{base}", plan.ALTERNATIVES, run, [0.5] if pattern else self.cfg["alt_levels"],
                   "weight", "magnitude", self.path("sweeps", f"alt_{slug}_{base}_s1"), (producer, "check:sweep"),
                   extra=extra, calib=pruner != "magnitude", needs=[("sweep", flag) for flag in needs])

    # ---- job kinds
    def train(self, name, klass, run, label, value, seed, deps, updates=None, recipe=None, extra=(), flags=None,
              fraction=1.0, needs=None, done=None, soft_deps=()):
        def planned():
            return updates if updates is not None else max(1, round(fraction * self.updates()))

        def args():
            r, rec = run(), recipe or self.recipe()
            chosen = self.chosen(label) if value == "chosen" else value
            method = list(flags if flags is not None else plan.METHODS[label].flags)
            if chosen is not None:
                method += plan.tuning_flags(label, chosen, planned())
            device = ["--cpu"] if self.cfg["device"] == "cpu" else plan.PRECISION_FLAGS[self.cfg["precision"]]
            stop = []
            if self.deadline is not None:
                stop = ["--stop-time-hours", f"{max(self.deadline - time.time(), 60) / 3600:.4f}"]
            self.started[name] = (time.time(), rec, method)
            return [os.path.join(self.data, "bin"), *plan.COMMON, *plan.MODELS[self.cfg["model"]],
                    *rec.flags(planned()), *method, "--seed", str(seed), "--save-dir", self.run_dir(r), *device,
                    *stop, *extra]

        def finish(code):
            r, directory = run(), self.run_dir(run())
            log = read_text(os.path.join(directory, "train.log"))
            begin, rec, method = self.started.get(name, (time.time(), None, []))
            self.finished[name] = time.time() - begin
            n = plan.updates_done(log)
            if code == 0 and n >= planned() and os.path.isfile(os.path.join(directory, "checkpoint_last.pt")):
                if os.path.exists(os.path.join(directory, "checkpoint_best.pt")):
                    os.unlink(os.path.join(directory, "checkpoint_best.pt"))
                write_json(os.path.join(directory, "done.json"), dict(
                    run=r, label=label, seed=seed, value=self.chosen(label) if value == "chosen" else value,
                    recipe=rec.key if rec else None, lr=rec.lr if rec else None, warmup=rec.warmup if rec else None,
                    max_tokens=self.cfg["max_tokens"], updates=n, flags=" ".join(method),
                    final_valid_loss=plan.final_valid_loss(log), device=self.cfg["device"],
                    precision=self.cfg["precision"], model=self.cfg["model"], seconds=round(time.time() - begin, 1)))
                self.finished_ok.add(name)
                return None
            if plan.stopped_by_time(log):
                return f"stopped by the time cap at {n} of {planned()} updates"
            last = [line for line in log.splitlines() if line.strip()][-1:] or ["no output"]
            return f"exit code {code} at {n} of {planned()} updates: {last[0][-160:]}"

        def is_done():
            if done is not None:
                return done()
            r = run()
            return bool(r) and os.path.isfile(os.path.join(self.run_dir(r), "done.json")) and (
                os.path.isfile(os.path.join(self.run_dir(r), "checkpoint_last.pt")) or not self._needed(r))

        return self.add(name, klass, deps=deps, soft_deps=soft_deps, program="train", args=args, finish=finish,
                        done=is_done,
                        log=lambda: os.path.join(self.run_dir(run()), "train.log"), threads=self.cfg["threads"],
                        skip=self._needs_check([needs] if needs else []),
                        meta={"kind": "train", "fraction": fraction if updates is None else 0.0, "run": run})

    def sweep(self, name, klass, run, levels, mode, score, directory, deps, subset="test", extra=(), calib=False,
              needs=(), done=None):
        def args():
            self.started[name] = time.time()
            checkpoint = os.path.join(self.run_dir(run()), "checkpoint_last.pt")
            return ["--data-bin", os.path.join(self.data, "bin"), "--checkpoint", checkpoint,
                    "--label", run().split("/")[-2].split("@")[0], "--out", directory, "--subset", subset,
                    "--ref", os.path.join(self.data, "clean", f"{subset}.de"),
                    "--spm", os.path.join(self.data, "spm.model"), "--beam", str(self.cfg["beam"]),
                    "--max-len-a", "1.2", "--max-len-b", "10", "--max-tokens", str(self.cfg["sweep_tokens"]),
                    "--no-progress", "--device", self.cfg["device"], "--sparsity", *map(str, levels),
                    "--mode", mode, "--scope", "unit", "--score", score, *extra]

        def finish(code):
            self.finished[name] = time.time() - self.started.get(name, time.time())
            if code == 0 and os.path.isfile(os.path.join(directory, "results.csv")):
                open(os.path.join(directory, "done"), "w").close()
                return None
            return f"exit code {code}; see {directory}.log"

        return self.add(name, klass, deps=deps, program="sweep", args=args, finish=finish,
                        done=done or (lambda: os.path.isfile(os.path.join(directory, "done"))),
                        log=lambda: directory + ".log", threads=self.cfg["threads"], skip=self._needs_check(needs),
                        meta={"kind": "sweep", "levels": len(levels), "calib": calib, "run": run})

    def _needs_check(self, needs):
        def skip():
            for program, flag in needs:
                features = self.state.get("features", {}).get(program)
                if features is not None and not features.get(flag):
                    script = "fairseq-train --arch transformer_td" if program == "train" else \
                        "scripts/bleu_vs_sparsity.py --help"
                    return f"{script} has no {flag} yet (issues 13/14): not run"
            return None
        return skip

    def _needed(self, run):
        """A run's checkpoint is still needed while a sweep or a pruning of it is pending."""
        return any(j.meta.get("kind") in ("sweep", "prune") and j.meta.get("run") and j.meta["run"]() == run
                   and not j.done() for j in self.jobs if j.meta.get("kind") != "train")
