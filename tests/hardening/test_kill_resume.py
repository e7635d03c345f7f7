"""SIGKILL fairseq-train mid-run after a checkpoint was saved, resume from checkpoint_last.pt.

The TD schedule follows fairseq's update count, which the checkpoint restores, and fairseq
reseeds every step with seed + num_updates: the resumed run must repeat the uninterrupted
one exactly, schedule, losses and final weights.
"""
import os
import re
import signal
import subprocess
import time

import pytest
import torch

from ..conftest import BIN, REPO, TRAIN_ARGS, cli_env, run_cli
from ..models.test_cli import train_log_values

RAMP = ["--td-ramp-updates", "10", "--td-gamma", "0.75", "--td-alpha", "0.66", "--save-interval-updates", "3"]
LAST = 10


def kill_after_checkpoint(data_bin, save_dir, updates_after_save=2, timeout=120):
    """Train towards 1000 updates; SIGKILL once a checkpoint was saved and ``updates_after_save``
    more updates were logged. Returns the log seen up to the kill."""
    env = dict(cli_env(), PYTHONUNBUFFERED="1")  # same threads as run_cli: weights are compared bitwise
    process = subprocess.Popen([os.path.join(BIN, "fairseq-train"), str(data_bin), *TRAIN_ARGS, *RAMP,
                                "--max-update", "1000", "--save-dir", str(save_dir)],
                               cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen, saved_at, deadline = [], None, time.monotonic() + timeout
    try:
        for line in process.stdout:
            seen.append(line)
            if saved_at is None and "Saved checkpoint" in line:
                saved_at = int(re.search(r"@ (\d+) updates", line).group(1))
            match = re.search(r"train_inner .*num_updates=(\d+)", line)
            if saved_at is not None and match and int(match.group(1)) >= saved_at + updates_after_save:
                break
            assert time.monotonic() < deadline, "no checkpoint saved in time"
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
        process.stdout.close()
    assert process.returncode == -signal.SIGKILL
    return "".join(seen)


def test_sigkill_then_resume_repeats_the_uninterrupted_run(data_bin, tmp_path):
    straight = run_cli("fairseq-train", data_bin, *TRAIN_ARGS, *RAMP, "--max-update", LAST,
                       "--save-dir", tmp_path / "straight")
    killed_log = kill_after_checkpoint(data_bin, tmp_path / "resumed")
    logged_before_kill = max(train_log_values(killed_log))
    state = torch.load(tmp_path / "resumed" / "checkpoint_last.pt", weights_only=False)  # complete, loadable
    saved = state["optimizer_history"][-1]["num_updates"]
    assert saved < logged_before_kill < LAST, "the kill must land after a save and before the end"

    resumed = run_cli("fairseq-train", data_bin, *TRAIN_ARGS, *RAMP, "--max-update", LAST,
                      "--save-dir", tmp_path / "resumed")
    expected = train_log_values(straight.stdout + straight.stderr)
    got = train_log_values(resumed.stdout + resumed.stderr)
    # nothing lost: the updates after the checkpoint are redone, every one of them, once
    assert sorted(got) == list(range(saved + 1, LAST + 1))
    for update in got:
        for key in ("td_gamma", "td_alpha", "loss", "nll_loss", "gnorm", "td_drop"):
            assert got[update][key] == expected[update][key], (update, key)
    # the first resumed update is computed at ramp step `saved`
    assert got[saved + 1]["td_gamma"] == round(0.95 * 0.75 * saved / 10, 4)
    assert got[saved + 1]["td_alpha"] == round(0.66 * saved / 20, 4)
    a = torch.load(tmp_path / "straight" / "checkpoint_last.pt", weights_only=False)
    b = torch.load(tmp_path / "resumed" / "checkpoint_last.pt", weights_only=False)
    assert b["optimizer_history"][-1]["num_updates"] == LAST
    assert sorted(a["model"]) == sorted(b["model"])
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"]), "resumed weights differ"


@pytest.mark.parametrize("rebuild", [False, True], ids=["cached_batches", "update_epoch_batch_itr"])
def test_resume_at_a_later_epoch_is_exact_only_with_batches_rebuilt(data_bin, tmp_path, rebuild):
    """fairseq 0.12 orders sentences of equal length by seed + the epoch its batch iterator was
    made in, and reuses that iterator for every later epoch. A run resumed at epoch 2 makes it
    at 2: the same sentences sit elsewhere in their batches and meet other dropout draws
    (benchmarks/resume_drift.py). ``--update-epoch-batch-itr True`` makes every epoch's batches
    from that epoch, so a resume at an epoch end repeats the run exactly."""
    flags = [*TRAIN_ARGS, *(["--update-epoch-batch-itr", "True"] if rebuild else [])]
    run_cli("fairseq-train", data_bin, *flags, "--max-update", LAST, "--save-dir", tmp_path / "straight")
    first = run_cli("fairseq-train", data_bin, *flags, "--max-epoch", 1, "--save-dir", tmp_path / "resumed")
    epoch_end = max(train_log_values(first.stdout + first.stderr))
    assert 1 < epoch_end < LAST - 1, "the resume must land at an epoch end before the last updates"
    run_cli("fairseq-train", data_bin, *flags, "--max-update", LAST, "--save-dir", tmp_path / "resumed")
    a, b = (torch.load(tmp_path / name / "checkpoint_last.pt", weights_only=False) for name in ("straight", "resumed"))
    assert b["optimizer_history"][-1]["num_updates"] == LAST
    same = all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert same == rebuild
