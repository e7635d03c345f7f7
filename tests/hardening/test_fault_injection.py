"""kill -9 during prune_checkpoint.py and bleu_vs_sparsity.py: no partial output, and a rerun
completes to exactly what an uninterrupted run gives.

Kills accumulate in one output folder (each run starts from what the last kill left). Kill
points: a seeded random fraction of the time the uninterrupted run took to its first output,
the moment a new file appears (a save half-written), and after some outputs are complete.
Temporary files (``.tmp-*``) may be left by a kill; they are never taken for output (see
docs/hardening.md).
"""
import csv
import io
import json
import os
import random
import subprocess
import sys
import time

import pytest
import torch

from td_fairseq import cli

from ..conftest import REPO
from ..tools.test_checkpoint import prune_script
from ..tools.test_sweep import STABLE, sweep_script

PNG_END = b"IEND\xaeB`\x82"
RNG = random.Random(20190805)


def start(script, argv, log):
    """The script as a subprocess, its stderr in the file ``log``."""
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    env.pop("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", None)
    with open(log, "wb") as err:
        return subprocess.Popen([sys.executable, os.path.join(REPO, "scripts", script), *map(str, argv)],
                                cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=err)


def tail(log):
    return open(log, encoding="utf-8", errors="replace").read()[-2000:]


def temporaries(folder):
    return [n for n in os.listdir(folder) if n.startswith(".tmp-")] if os.path.isdir(folder) else []


def kill_when(process, trigger, timeout=120):
    """SIGKILL ``process`` as soon as ``trigger()`` holds; True if it was killed, False if it
    ended first."""
    deadline = time.monotonic() + timeout
    while process.poll() is None:
        if trigger():
            process.kill()
            process.wait()
            return True
        assert time.monotonic() < deadline, "kill point never reached"
        time.sleep(0.0002)
    return False


def stopwatch():
    """Seconds since this call."""
    started = time.monotonic()
    return lambda: time.monotonic() - started


def reference_run(script, argv, log, first_output):
    """Run to completion (the uninterrupted reference); seconds until ``first_output()`` held."""
    start_time, seen = time.monotonic(), None
    process = start(script, argv, log)
    while process.poll() is None:
        if seen is None and first_output():
            seen = time.monotonic() - start_time
        time.sleep(0.001)
    assert process.returncode == 0, f"{script} failed: {tail(log)}"
    return seen if seen is not None else time.monotonic() - start_time


# --- prune_checkpoint.py ---------------------------------------------------------------

LEVELS = [round(0.1 * i, 1) for i in range(1, 10)]


@pytest.fixture(scope="module")
def wide_checkpoint(tmp_path_factory):
    """A TD checkpoint with 8192-wide FFNs (about 17 MB per pruned level), so that each save
    lasts long enough for a poller to catch it half-written."""
    from fairseq import options

    from td_fairseq.tools.inprocess import dictionary
    from fairseq.tasks.translation import TranslationTask
    parser = options.get_training_parser()
    args = options.parse_args_and_arch(parser, ["/nonexistent", "--task", "translation", "--arch",
                                                "transformer_td_tiny", "--encoder-ffn-embed-dim", "8192",
                                                "--decoder-ffn-embed-dim", "8192"])
    vocab = dictionary()
    model = TranslationTask(args, vocab, vocab).build_model(args)
    path = tmp_path_factory.mktemp("wide") / "wide.pt"
    torch.save({"cfg": {"model": args}, "model": model.state_dict(),
                "optimizer_history": [{"num_updates": 0}]}, path)
    return path


def prune_outputs_are_complete(out, reference):
    """Every output present is whole and equal to the uninterrupted run's."""
    for name in os.listdir(out):
        if name.startswith(".tmp-"):
            continue
        if name == "report.json":
            got = json.loads((out / name).read_text())
            want = json.loads((reference / name).read_text())
            assert {k: v for k, v in got.items() if k != "command"} == {k: v for k, v in want.items() if k != "command"}
            continue
        assert name in os.listdir(reference), name
        try:
            got = torch.load(out / name, weights_only=True)["model"]
        except Exception as error:
            pytest.fail(f"{name} left by a kill does not load (half-written?): {type(error).__name__}: {error}")
        want = torch.load(reference / name, weights_only=True)["model"]
        assert sorted(got) == sorted(want) and all(torch.equal(got[k], want[k]) for k in want), name


def test_kill_9_during_prune_checkpoint(wide_checkpoint, tmp_path):
    argv = [wide_checkpoint, "--sparsity", *LEVELS]
    reference, out = tmp_path / "reference", tmp_path / "killed"
    first = reference_run("prune_checkpoint.py", argv + ["--out-dir", reference], tmp_path / "reference.log",
                          lambda: reference.exists() and bool(os.listdir(reference)))
    wait = RNG.uniform(0.2, 1.0) * first  # startup, loading, ranking, or the first save

    def levels_done():
        return len([n for n in os.listdir(out) if n.startswith("sparsity_")]) if out.exists() else 0

    def new_files(old):
        return set(os.listdir(out)) - old if out.exists() else set()

    listing_at_three_levels = []

    def three_levels_then_a_new_file(old, clock):
        if not listing_at_three_levels and levels_done() >= 3:
            listing_at_three_levels.append(set(os.listdir(out)))
        return bool(listing_at_three_levels) and bool(new_files(listing_at_three_levels[0]))

    # (name, trigger given the files left before the run and the run's clock). A new file is a
    # temporary one being written, or, for a writer that is not atomic, a level half-written.
    kill_points = [
        (f"{wait:.2f} s in", lambda old, clock: clock() >= wait),
        ("a save half-written", lambda old, clock: bool(new_files(old))),
        ("a save half-written, 3 levels done", three_levels_then_a_new_file),
        ("just after the last level", lambda old, clock: (out / "sparsity_0.90.pt").exists()),
    ]
    killed_mid_write = 0
    for point, trigger in kill_points:
        before = set(os.listdir(out)) if out.exists() else set()
        clock = stopwatch()
        log = tmp_path / "kill.log"
        killed = kill_when(start("prune_checkpoint.py", argv + ["--out-dir", out], log), lambda: trigger(before, clock))
        if out.exists():
            prune_outputs_are_complete(out, reference)
        killed_mid_write += killed and bool(set(temporaries(out)) - before)
        print(f"prune kill point '{point}': killed={killed}, levels done {levels_done()}, "
              f"temporaries {len(temporaries(out))}")
        assert killed or point == "just after the last level", f"kill point '{point}' missed: {tail(log)}"
    assert killed_mid_write >= 1, "no kill landed in the middle of a save: the test proved nothing"
    assert cli.run(prune_script.main, [str(a) for a in argv] + ["--out-dir", str(out)]) == 0
    prune_outputs_are_complete(out, reference)
    assert sorted(n for n in os.listdir(out) if not n.startswith(".tmp-")) == sorted(os.listdir(reference))


# --- bleu_vs_sparsity.py -----------------------------------------------------------------

SWEEP_LEVELS = ["0", "0.3", "0.5", "0.7", "0.9"]


def sweep_argv(data_bin, ckpt, out):
    return ["--data-bin", data_bin, "--checkpoint", ckpt, "--label", "td", "--sparsity", *SWEEP_LEVELS,
            "--beam", "2", "--out", out, "--no-progress", "--reference-label", "td"]


def stable(rows):
    return [{k: str(r[k]) for k in STABLE} for r in rows]


def rows_in(out, name="results.json"):
    path = out / name
    if not path.exists():
        return None
    if name.endswith(".json"):
        return json.loads(path.read_text())
    return list(csv.DictReader(io.StringIO(path.read_text())))


def sweep_outputs_are_complete(out, reference_rows):
    """Each file parses; its rows are the first rows of the uninterrupted run's."""
    rows = rows_in(out) or []
    table = rows_in(out, "results.csv") or []
    assert stable(rows) == stable(reference_rows)[:len(rows)]
    assert stable(table) == stable(reference_rows)[:len(table)]
    # csv is written before json: a kill between them leaves the csv one row ahead
    assert len(table) - len(rows) in (0, 1)
    if (out / "bleu_vs_sparsity.png").exists():
        assert (out / "bleu_vs_sparsity.png").read_bytes().endswith(PNG_END)
    allowed = {"results.csv", "results.json", "bleu_vs_sparsity.png"}
    assert all(n in allowed or n.startswith(".tmp-") for n in os.listdir(out))


def test_kill_9_during_bleu_vs_sparsity(trained_checkpoint, data_bin, tmp_path):
    reference, out = tmp_path / "reference", tmp_path / "killed"
    first = reference_run("bleu_vs_sparsity.py", sweep_argv(data_bin, trained_checkpoint, reference),
                          tmp_path / "reference.log", lambda: (reference / "results.json").exists())
    reference_rows = rows_in(reference)
    wait = RNG.uniform(0.2, 1.0) * first  # startup, model loading, or the first level

    def count():
        return len(rows_in(out) or [])

    last = len(SWEEP_LEVELS) - 1  # leave work for the next run
    kill_points = [  # (name, trigger given the rows and temporaries left before the run)
        (f"{wait:.2f} s in", lambda rows, old, clock: clock() >= wait),
        ("as soon as a new row is written", lambda rows, old, clock: count() >= min(rows + 1, last)),
        ("a new temporary file, or two more rows", lambda rows, old, clock: bool(set(temporaries(out)) - old) or
         count() >= min(rows + 2, last)),
    ]
    for point, trigger in kill_points:
        argv = sweep_argv(data_bin, trained_checkpoint, out)
        before = (count(), set(temporaries(out)))
        clock = stopwatch()
        log = tmp_path / "kill.log"
        killed = kill_when(start("bleu_vs_sparsity.py", argv, log), lambda: trigger(*before, clock))
        assert killed, f"kill point '{point}' missed: {tail(log)}"
        print(f"sweep kill point '{point}': rows {count()}, temporaries {len(temporaries(out))}")
        if out.exists():
            sweep_outputs_are_complete(out, reference_rows)
    assert cli.run(sweep_script.main, [str(a) for a in sweep_argv(data_bin, trained_checkpoint, out)]) == 0
    sweep_outputs_are_complete(out, reference_rows)
    assert stable(rows_in(out)) == stable(reference_rows)
    assert stable(rows_in(out, "results.csv")) == stable(reference_rows)
