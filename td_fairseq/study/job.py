"""One job of a study: one (model, seed) of a hydra config (conf/*.yaml), started by
scripts/study.py under whichever hydra launcher the command line names.

The job prepares the data once per sweep folder (a file lock: several jobs may start at once),
trains with fairseq's own trainer in a subprocess (which resumes from checkpoint_last.pt by
itself), runs each evaluation with scripts/bleu_vs_sparsity.py (which adds only missing rows),
and writes result.json: every row, the validation curve of its log, the commands, the commit
and the machine. A job whose result.json exists (or, with ``finished: DIR``, whose copy
DIR/JOB.json does) is not run again, unless the config now asks for an evaluation it lacks and its
checkpoint is there: then only the missing evaluations run (training and the rows already made
are kept) and result.json is written again. A failed job writes
failed.json naming its log and raises: the launcher finishes the other jobs, and the multirun
ends with a non-zero status. A job another process is running (it holds the job folder's lock)
is skipped, so two launches into one folder never train the same checkpoint at once.
"""
import fcntl
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time

from ..files import first_line, write_json
from ..results import git_commit, load_rows, machine

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PRECISION = {"fp32": [], "bf16": ["--bf16"], "fp16": ["--fp16"]}
SPLITS = (("train", "train"), ("valid", "val"), ("test", "test_2016_flickr"))  # the only Multi30k files read
_VALID = re.compile(r"epoch (\d+) \| valid on 'valid' subset \| loss ([\d.]+|nan|inf) .*?\| ppl ([\d.]+|nan|inf)"
                    r" .*?\| num_updates (\d+)")


class JobFailed(Exception):
    """A step of the job failed; ``log`` is where it says why."""

    def __init__(self, message, log=None):
        super().__init__(message + (f": see {log}" if log else ""))
        self.log = log


def register_resolvers():
    """``${div:a,b}``: max(1, a // b), for schedules that are a fraction of the budget (None stays None)."""
    from omegaconf import OmegaConf
    if not OmegaConf.has_resolver("div"):
        OmegaConf.register_new_resolver("div", lambda a, b: None if a is None else max(1, int(a) // int(b)))


def valid_curve(log: str) -> list:
    """[{epoch, updates, loss, ppl}] of every validation in a fairseq log (--log-format simple)."""
    return [dict(epoch=int(e), updates=int(u), loss=float(loss), ppl=float(ppl))
            for e, loss, ppl, u in _VALID.findall(log)]


def updates_done(log: str) -> int:
    found = re.findall(r"num_updates[ =](\d+)", log)
    return int(found[-1]) if found else 0


_STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) \|", re.M)
_STEP = re.compile(_STAMP.pattern + r".*?num_updates=(\d+)", re.M)


def _sessions(log: str) -> list:
    """An appended log cut at each ``$ command`` line: one piece per process that wrote to it."""
    return re.split(r"^\$ ", log, flags=re.M)


def _seconds(first: str, last: str) -> float:
    import datetime
    return (datetime.datetime.fromisoformat(last) - datetime.datetime.fromisoformat(first)).total_seconds()


def logged_seconds(log: str) -> float:
    """Training wall-clock over every session of an appended log: from each ``$ command`` line,
    the first logged time to the last (fairseq's own wall= restarts with each resume)."""
    return sum(_seconds(stamps[0], stamps[-1]) for stamps in map(_STAMP.findall, _sessions(log)) if stamps)


def recent_rate(log: str):
    """Updates per second in the latest session of an appended log, from its first logged
    update to its last, validations and saves included (None before two are logged): what the
    rest of the job will run at on the same machine, not the earlier sessions' rate."""
    steps = _STEP.findall(_sessions(log)[-1])
    if len(steps) < 2:
        return None
    (t0, u0), (t1, u1) = steps[0], steps[-1]
    seconds, updates = _seconds(t0, t1), int(u1) - int(u0)
    return updates / seconds if seconds > 0 and updates > 0 else None


def read_text(path):
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except FileNotFoundError:
        return ""


def _split(*texts):
    return [arg for text in texts if text for arg in shlex.split(str(text))]


def _run(command, log, threads):
    """Run ``command`` with ``threads`` threads, appending its output to ``log`` (a resumed
    training keeps the curve of its earlier sessions)."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
               PYTHONPATH=os.pathsep.join(filter(None, [REPO, os.environ.get("PYTHONPATH")])))
    with open(log, "a", encoding="utf-8") as f:
        f.write(f"\n$ {shlex.join(command)}\n")
        f.flush()
        return subprocess.run(command, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env).returncode


def prepare_data(cfg, sweep_dir) -> str:
    """sweep_dir/data (bin/, spm.model, clean/): made once, by the first job to take the lock;
    every stage is written aside and renamed into place."""
    dest = os.path.join(sweep_dir, "data")
    if os.path.isdir(os.path.join(dest, "bin")):
        return dest
    os.makedirs(sweep_dir, exist_ok=True)
    with open(os.path.join(sweep_dir, ".data.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not os.path.isdir(os.path.join(dest, "bin")):
            from ..tools.prepare import prepare
            prepare(_raw(cfg.data, sweep_dir), dest, cfg.data.vocab, log=lambda line: None)
    return dest


def _raw(data, sweep_dir):
    """sweep_dir/raw: train, valid and test, written (synthetic) or linked (a Multi30k folder)."""
    raw = os.path.join(sweep_dir, "raw")
    if os.path.isdir(raw):
        return raw
    source = os.path.join(REPO, str(data.source))  # a relative path is from the repository root
    needed = [f"{name}.{lang}" for _, name in SPLITS for lang in ("en", "de")]
    missing = [n for n in needed if data.source != "synthetic" and not os.path.isfile(os.path.join(source, n))]
    if missing:
        raise JobFailed(f"no Multi30k at {source} (no {missing[0]}): set MULTI30K or data.source")
    tmp = tempfile.mkdtemp(dir=sweep_dir, prefix=".tmp-raw-")
    if data.source == "synthetic":
        from ..synthetic import write_corpus
        for (split, _), n, seed in zip(SPLITS, data.pairs, (1, 2, 3)):
            write_corpus(os.path.join(tmp, split), int(n), seed)
    else:
        for split, name in SPLITS:
            for lang in ("en", "de"):
                os.symlink(os.path.realpath(os.path.join(source, f"{name}.{lang}")),
                           os.path.join(tmp, f"{split}.{lang}"))
    os.rename(tmp, raw)
    return raw


def train_flags(cfg, seed, updates=None) -> list:
    """fairseq-train's flags for this job, from the recipe and the model (``updates`` replaces the budget)."""
    flags = _split(cfg.arch, cfg.optimizer, cfg.batch, cfg.train, cfg.model.flags, cfg.model.get("extra"))
    if cfg.budget and updates is None:  # train to convergence: the epoch checkpoints stay
        flags += ["--max-epoch", str(cfg.budget.max_epoch), "--patience", str(cfg.budget.patience)]
    else:
        flags += ["--max-update", str(updates or cfg.updates), "--no-epoch-checkpoints"]
    if cfg.precision not in PRECISION:
        raise JobFailed(f"precision {cfg.precision}: expected one of {', '.join(PRECISION)}")
    return flags + PRECISION[cfg.precision] + (["--cpu"] if cfg.device == "cpu" else []) + ["--seed", str(seed)]


def refuse_slow_bf16(cfg):
    """A bf16 job on a CPU that emulates bf16 fails before it trains: fairseq-train only warns, and in
    a background job the warning goes unread while training runs tens of times slower than fp32
    (about 40x on an AVX2-only CPU, docs/RESULTS.md §14). fp32 is another recipe, so the job does not
    switch by itself."""
    if cfg.precision == "bf16" and cfg.device == "cpu":
        from ..precision import bf16_slow_reason
        reason = bf16_slow_reason("cpu")
        if reason:
            raise JobFailed(f"precision bf16: {reason}; train with precision=fp32 (its jobs are named apart)")


def train(cfg, data, save_dir, flags, planned) -> dict:
    """fairseq-train into ``save_dir`` unless its train.json says it finished (fairseq would
    train one more update on a checkpoint that reached its budget mid-epoch)."""
    done = os.path.join(save_dir, "train.json")
    if os.path.isfile(done):
        with open(done, encoding="utf-8") as f:
            return json.load(f)
    refuse_slow_bf16(cfg)
    os.makedirs(save_dir, exist_ok=True)
    log = os.path.join(save_dir, "train.log")
    command = [sys.executable, "-m", "fairseq_cli.train", os.path.join(data, "bin"), "--user-dir",
               os.path.join(REPO, "td_fairseq"), *flags, "--save-dir", save_dir]
    start = time.time()
    code = _run(command, log, cfg.threads)
    updates = updates_done(read_text(log))
    if code != 0:
        raise JobFailed(f"training exited with status {code} at update {updates}", log)
    if planned is not None and updates < planned:
        raise JobFailed(f"training stopped at update {updates} of {planned}", log)
    seconds = logged_seconds(read_text(log)) or time.time() - start
    info = dict(command=shlex.join(command), updates=updates, seconds=round(seconds, 1), log=log)
    write_json(done, info)
    return info


def reused(cfg, label, seed, flags, data, save_dir):
    """train()'s answer taken from the budget study (``reuse``, td_fairseq/study/reuse.py), or None."""
    if not cfg.get("reuse") or cfg.budget or os.path.isfile(os.path.join(save_dir, "train.json")):
        return None
    from . import reuse
    budget_dir = os.path.join(REPO, str(cfg.reuse))  # a relative path is from the repository root
    try:
        info = reuse.take(budget_dir, label, seed, flags, data, save_dir, train_flags, valid_curve)
    except reuse.ReuseError as error:
        raise JobFailed(f"reuse: {error}") from None
    if info is not None:
        write_json(os.path.join(save_dir, "train.json"), info)
    return info


def evaluate(cfg, data, checkpoint, label, name, spec, out_dir, levels=None) -> list:
    """One bleu_vs_sparsity.py call into out_dir/sweeps/NAME; its rows, tagged with NAME."""
    out = os.path.join(out_dir, "sweeps", name)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    subset = spec.get("subset") or "test"
    command = [sys.executable, os.path.join(REPO, "scripts", "bleu_vs_sparsity.py"), "--data-bin",
               os.path.join(data, "bin"), "--checkpoint", checkpoint, "--label", label, "--subset", subset,
               "--ref", os.path.join(data, "clean", f"{subset}.de"), "--spm", os.path.join(data, "spm.model"),
               "--device", cfg.device, "--no-progress", "--out", out, *_split(cfg.sweep, spec.get("flags"))]
    command += (["--td-eval-scale"] if spec.get("eval_scale") else []) + (levels or [])
    if _run(command, out + ".log", cfg.threads) != 0:
        raise JobFailed(f"evaluation {name} failed", out + ".log")
    return [dict(row, evaluation=name) for row in load_rows(out)]


def finetunes(cfg, label, seed) -> bool:
    ft = cfg.finetune
    return bool(ft) and label in ft.models and seed in (ft.get("seeds") or [seed])


def evaluations(cfg, label) -> list:
    """[(name, spec)]: the config's evaluations that apply to this model."""
    return [(str(name), spec) for name, spec in (cfg.evaluations or {}).items()  # str: YAML reads a key 2_4 as 24
            if spec is not None and (spec.get("models") is None or label in spec.models)]


def finetune_name(level) -> str:
    return f"finetune_{round(level * 100)}"


def wanted(cfg, label, seed) -> list:
    """The evaluations this job's result holds: the config's, for this model, and its fine-tunes."""
    fine_tunes = [finetune_name(level) for level in cfg.finetune.levels] if finetunes(cfg, label, seed) else []
    return [name for name, _ in evaluations(cfg, label)] + fine_tunes


def finetune(cfg, data, checkpoint, label, seed, out_dir) -> list:
    """Prune by magnitude to each level, fine-tune with the zeros frozen for ``fraction`` of the
    budget, and evaluate at that level (the frozen zeros are exactly what magnitude prunes again)."""
    rows, ft = [], cfg.finetune
    updates = max(1, round(ft.fraction * cfg.updates))
    for level in ft.levels:
        name = finetune_name(level)
        pruned = os.path.join(out_dir, name, "pruned", f"sparsity_{level:.2f}.pt")
        if not os.path.isfile(pruned):
            command = [sys.executable, os.path.join(REPO, "scripts", "prune_checkpoint.py"), checkpoint,
                       "--sparsity", str(level), "--out-dir", os.path.dirname(pruned)]
            os.makedirs(os.path.join(out_dir, name), exist_ok=True)
            log = os.path.join(out_dir, name, "prune.log")
            if _run(command, log, cfg.threads) != 0:
                raise JobFailed(f"pruning for {name} failed", log)
        flags = train_flags(cfg, seed, updates) + ["--freeze-mask", "--finetune-from-model", pruned, *_split(ft.flags)]
        train(cfg, data, os.path.join(out_dir, name), flags, updates)
        rows += evaluate(cfg, data, os.path.join(out_dir, name, "checkpoint_last.pt"), label, name, {}, out_dir,
                         ["--sparsity", str(level)])
    return rows


def run(cfg, label, seed, overrides, out_dir, sweep_dir) -> dict:
    """The whole job; returns what it wrote to out_dir/result.json, or None when another process
    holds the job's lock (two launches into one folder, or one restarted while the old one still
    runs): one fairseq-train per checkpoint folder. The lock goes with the process that holds it,
    killed or not."""
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, ".job.lock"), "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"{label} seed {seed}: skipped, another process is running it ({lock.name})", flush=True)
            return None
        return _run_locked(cfg, label, seed, overrides, out_dir, sweep_dir)


def _run_locked(cfg, label, seed, overrides, out_dir, sweep_dir) -> dict:
    from omegaconf import OmegaConf
    result_path, failed = os.path.join(out_dir, "result.json"), os.path.join(out_dir, "failed.json")
    copy = cfg.get("finished") and os.path.join(REPO, str(cfg.finished), os.path.basename(out_dir) + ".json")
    if copy and os.path.isfile(copy) and not os.path.isfile(result_path):
        with open(copy, encoding="utf-8") as f:
            write_json(result_path, json.load(f))
        print(f"{label} seed {seed}: finished before, taken from {copy}", flush=True)
    done = None
    if os.path.isfile(result_path):
        with open(result_path, encoding="utf-8") as f:
            done = json.load(f)
        missing = [name for name in wanted(cfg, label, seed) if name not in {r["evaluation"] for r in done["rows"]}]
        if not missing or not os.path.isfile(os.path.join(out_dir, "checkpoint_last.pt")):
            print(f"{label} seed {seed}: done already ({result_path})"
                  + (f"; lacks {', '.join(missing)}, and its checkpoint is not here" if missing else ""), flush=True)
            return done
        print(f"{label} seed {seed}: adding {', '.join(missing)} to {result_path}", flush=True)
    if os.path.exists(failed):
        os.unlink(failed)
    job = dict(label=label, seed=seed, overrides=overrides, job=os.path.basename(out_dir))
    commit = done["commit"] if done else git_commit()  # now: code committed while the job runs did not train it
    try:
        flags = train_flags(cfg, seed)  # a missing value (updates: ???) fails here, before any work
        data = prepare_data(cfg, sweep_dir)
        trained = (reused(cfg, label, seed, flags, data, out_dir)
                   or train(cfg, data, out_dir, flags, None if cfg.budget else cfg.updates))
        checkpoint, rows = os.path.join(out_dir, "checkpoint_last.pt"), []
        for name, spec in evaluations(cfg, label):
            rows += evaluate(cfg, data, checkpoint, label, name, spec, out_dir)
        if finetunes(cfg, label, seed):
            rows += finetune(cfg, data, checkpoint, label, seed, out_dir)
    except Exception as error:
        log = getattr(error, "log", None) or os.path.join(out_dir, "train.log")
        write_json(failed, dict(job, error=first_line(error), log=log))
        raise
    result = dict(job, updates=trained["updates"], train_seconds=trained["seconds"],
                  curve=[p for p in valid_curve(read_text(trained["log"])) if p["updates"] <= trained["updates"]],
                  train_command=trained["command"], reused=trained.get("reused"), rows=rows,
                  commit=commit,  # training's (this session's part of it); each row names its own
                  machine=machine(), config=OmegaConf.to_container(cfg, resolve=True))
    write_json(result_path, result)
    if copy:
        os.makedirs(os.path.dirname(copy), exist_ok=True)
        write_json(copy, result)
    print(f"{label} seed {seed}: {trained['updates']} updates, {len(rows)} rows -> {result_path}", flush=True)
    return result


def run_job(cfg) -> dict:
    """The hydra task: this job's model, seed and folders from hydra's runtime config."""
    from hydra.core.hydra_config import HydraConfig
    register_resolvers()  # in this process: joblib and submitit run jobs in processes of their own
    hydra = HydraConfig.get()
    cwd = hydra.runtime.cwd
    return run(cfg, hydra.runtime.choices.model, cfg.seed, list(hydra.overrides.task),
               os.path.join(cwd, hydra.runtime.output_dir), os.path.join(cwd, hydra.sweep.dir))
