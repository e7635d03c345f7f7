"""Run a graph of jobs on a fixed number of slots, by priority, within a wall-clock deadline;
and simulate the same schedule to size the work before running it.

A job is a program (fairseq-train or one of our scripts) run in a process of its own, or a
short step run inside the driver (``inline``: a choice, the sizing). Jobs start in order of
(class, order) as soon as their dependencies are done and a slot is free; a job that would
not end before the deadline is left for a later run; what is still running at the deadline
is ended. A failed or skipped job skips its dependents, each with a one-line reason.

Processes are started in one of two ways. ``spawn``: a fresh interpreter per job (the safe
choice on a GPU: no state is shared). ``fork``: the driver imports fairseq once and forks a
child per job, which saves the 3-8 s import per job; on a CPU machine with many tiny jobs
(the tests) that is most of the time.
"""
import importlib.util
import os
import signal
import sys
import time
import traceback
from dataclasses import dataclass, field
from typing import Callable, Optional

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = {"sweep": "scripts/bleu_vs_sparsity.py", "prune": "scripts/prune_checkpoint.py",
           "prepare": "scripts/prepare_data.py", "train-options": "benchmarks/study_runner.py"}


def train_options(args) -> int:
    """Print every option fairseq-train accepts with ``args`` (e.g. --user-dir and --arch):
    ``fairseq-train --help`` cannot show them, since it prints before the model adds its own."""
    from fairseq import options
    parser = options.get_training_parser()
    options.parse_args_and_arch(parser, ["data-bin-not-read", *args], parse_known=True)
    print("\n".join(sorted(parser._option_string_actions)))
    return 0


def _none():
    return None


@dataclass(eq=False)
class Job:
    name: str
    klass: int
    order: int = 0
    deps: tuple = ()
    soft_deps: tuple = ()  # need only to have finished, whatever their outcome
    program: Optional[str] = None  # a key of SCRIPTS, or train; None: ``inline``
    args: Callable = list  # the program's arguments, built when it starts
    log: Callable = _none  # path of its output
    inline: Optional[Callable] = None
    done: Callable = lambda: False  # already complete on disk
    skip: Callable = _none  # a reason not to run it: 'deferred: ...' (budget) or any other line
    finish: Callable = lambda code: None if code == 0 else f"exit code {code}"  # None: success
    estimate: Callable = lambda: 0.0  # seconds
    threads: int = 1
    meta: dict = field(default_factory=dict)  # what the caller needs to know about it (kind, size)


@dataclass
class Outcome:
    status: str  # done, failed, skipped, deferred, killed, not run
    reason: str = ""
    seconds: float = 0.0


class SpawnLauncher:
    def __init__(self, python=sys.executable):
        self.python = python

    def start(self, job, args, log_path):
        import subprocess
        program = {"train": ["-m", "fairseq_cli.train"], "train-options": [SCRIPTS["train-options"], "train-options"]}
        env = dict(os.environ, OMP_NUM_THREADS=str(job.threads), PYTHONPATH=REPO)
        with open(log_path, "w") as log:
            return subprocess.Popen([self.python, *program.get(job.program, [SCRIPTS[job.program]]), *args], cwd=REPO,
                                    env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True)


class _Forked:
    """A forked child, with Popen's poll() and pid."""

    def __init__(self, pid):
        self.pid, self.returncode = pid, None

    def poll(self):
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode


class ForkLauncher:
    """Import fairseq and our scripts once; each job is a fork that calls the program's main."""

    def __init__(self):
        os.chdir(REPO)
        sys.path.insert(0, REPO)
        import fairseq_cli.train  # noqa: F401
        # explicitly: td_fairseq registers with fairseq on import only if fairseq came first
        import td_fairseq.criterions  # noqa: F401
        import td_fairseq.models  # noqa: F401
        # what fairseq and torch import lazily at a job's first step (torch._dynamo pulls sympy: seconds)
        import fairseq.sequence_generator  # noqa: F401
        import sacrebleu  # noqa: F401
        import sentencepiece  # noqa: F401
        import torch._dynamo  # noqa: F401
        import matplotlib  # the sweeps plot after every level
        matplotlib.use("Agg")
        import matplotlib.pyplot  # noqa: F401
        self.scripts = {name: _load(path) for name, path in SCRIPTS.items() if name != "train-options"}

    def start(self, job, args, log_path):
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid:
            return _Forked(pid)
        code = 1
        try:
            os.setsid()
            signal.signal(signal.SIGTERM, signal.SIG_DFL)  # not the driver's handler
            fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            import torch
            torch.set_num_threads(job.threads)
            code = self._main(job.program, args)
        except SystemExit as error:
            code = error.code if isinstance(error.code, int) else (0 if error.code is None else 1)
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)

    def _main(self, program, args):
        if program == "train":
            sys.argv = ["fairseq-train", *args]
            from fairseq_cli.train import cli_main
            cli_main()
            return 0
        if program == "train-options":
            return train_options(args)
        from td_fairseq import cli
        return cli.run(self.scripts[program].main, args, prog=os.path.basename(SCRIPTS[program]))


def _load(path):
    spec = importlib.util.spec_from_file_location(os.path.splitext(os.path.basename(path))[0],
                                                  os.path.join(REPO, path))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _blocker(job, outcomes, names):
    """(status, reason) if a dependency keeps ``job`` from ever running, else None."""
    for dep in job.deps:
        if dep not in names:
            return "skipped", f"needs {dep}, which is not in this study"
        outcome = outcomes.get(dep)
        if outcome and outcome.status != "done":
            return ("deferred" if outcome.status in ("deferred", "not run") else "skipped"), \
                f"needs {dep} ({outcome.status})"
    return None


def _ready(job, outcomes):
    return all(outcomes.get(d) and outcomes[d].status == "done" for d in job.deps) and \
        all(d in outcomes for d in job.soft_deps)


@dataclass
class Runner:
    jobs: list
    slots: int
    launcher: object
    deadline: Optional[float] = None  # time.time() value
    say: Callable = print
    outcomes: dict = field(default_factory=dict)
    poll_seconds: float = 0.2

    def run(self) -> dict:
        names = {j.name for j in self.jobs}
        for job in self.jobs:
            if job.done():
                self.outcomes[job.name] = Outcome("done", "already complete")
        running = {}
        try:
            while True:
                started = self._start_ready(names, running)
                finished = self._poll(running)
                if not running and not started and not finished:
                    break
                if not started and not finished:
                    time.sleep(self.poll_seconds)
                if self.deadline is not None and time.time() > self.deadline and running:
                    self._end(running, "the wall-clock budget ran out")
        except BaseException:  # Ctrl-C, or SIGTERM turned into SystemExit: leave no job running
            self._end(running, "the study was interrupted")
            raise
        for job in self.jobs:
            if job.name not in self.outcomes:
                late = self.deadline is not None and time.time() + job.estimate() > self.deadline
                self.outcomes[job.name] = Outcome("not run", "did not fit in the budget" if late else "blocked")
        return self.outcomes

    def _start_ready(self, names, running) -> bool:
        started = False
        for job in sorted(self.jobs, key=lambda j: (j.klass, j.order)):
            if job.name in self.outcomes or job in running.values():
                continue
            blocked = _blocker(job, self.outcomes, names)
            if blocked:
                self._record(job, Outcome(*blocked))
                started = True
                continue
            if not _ready(job, self.outcomes):
                continue
            reason = job.skip()
            if reason:
                self._record(job, Outcome("deferred" if reason.startswith("deferred") else "skipped", reason))
                started = True
            elif job.program is None:
                begin = time.time()
                try:
                    job.inline()
                    self._record(job, Outcome("done", "", time.time() - begin))
                except Exception as error:  # a step of the driver: record it, the rest goes on
                    self._record(job, Outcome("failed", f"{type(error).__name__}: {error}"))
                started = True
            elif len(running) < self.slots:
                if self.deadline is not None and time.time() + job.estimate() > self.deadline:
                    continue
                args, log_path = job.args(), job.log()  # built here: a forked child's state is its own
                os.makedirs(os.path.dirname(log_path), exist_ok=True)
                process = self.launcher.start(job, args, log_path)
                process.started = time.time()
                running[process] = job
                self.say(f"start {job.name}")
                started = True
        return started

    def _poll(self, running) -> bool:
        finished = False
        for process, job in list(running.items()):
            code = process.poll()
            if code is None:
                continue
            del running[process]
            reason = job.finish(code)
            self._record(job, Outcome("failed" if reason else "done", reason or "", time.time() - process.started))
            finished = True
        return finished

    def _end(self, running, why):
        for process, job in list(running.items()):
            try:
                os.killpg(process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for process, job in list(running.items()):
            while process.poll() is None:
                time.sleep(0.05)
            self._record(job, Outcome("killed", why, time.time() - process.started))
            del running[process]

    def _record(self, job, outcome):
        self.outcomes[job.name] = outcome
        tail = f" ({outcome.seconds:.0f} s)" if outcome.seconds >= 1 else ""
        self.say(f"{outcome.status} {job.name}{tail}{': ' + outcome.reason if outcome.reason else ''}")


def simulate(jobs, slots, estimate, include=lambda job: True) -> dict:
    """Finish time (seconds from now) of each included job if every job succeeds, run with the
    Runner's rules: by (class, order), as soon as dependencies end and a slot is free.
    ``estimate(job)`` gives its duration; done jobs and inline steps take none."""
    names = {j.name for j in jobs if include(j)}
    pending = sorted((j for j in jobs if j.name in names), key=lambda j: (j.klass, j.order))
    end, running, clock = {}, [], 0.0
    while pending or running:
        changed = True
        while changed:
            changed = False
            for job in list(pending):
                if not all(d in end or d not in names for d in job.deps + job.soft_deps):
                    continue
                if job.program is None or job.done():
                    end[job.name] = clock
                elif len(running) < slots:
                    running.append((clock + estimate(job), job.name))
                else:
                    continue
                pending.remove(job)
                changed = True
        if not running:
            break  # what is left waits on something outside the graph
        running.sort()
        clock, name = running.pop(0)
        end[name] = clock
    return end


if __name__ == "__main__":  # the spawned form of the train-options program
    sys.path.insert(0, REPO)
    if sys.argv[1:2] == ["train-options"]:
        sys.exit(train_options(sys.argv[2:]))
