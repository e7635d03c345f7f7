"""Data-parallel training on fairseq's engine: 2 CPU ranks (gloo) through scripts/launch_distributed.py.

fairseq saves checkpoints on rank 0 only, so the replicas are compared through a test-only
plugin (tests/hardening/td_dump) that saves, on every rank, the parameters, the targeted
and the dropped sets at the first forward of each update and of the final validation.
"""
import os
import sys
import time

import pytest
import torch

from td_fairseq.cli import UserError
from td_fairseq.tools.distributed import rank_commands, run_ranks

from ..conftest import REPO, TRAIN_ARGS, run_cli

DUMP_PLUGIN = os.path.join(REPO, "tests", "hardening", "td_dump")
UPDATES = 3


def with_options(args, **options):
    """``args`` with each ``--name value`` replaced (option names with _ for -)."""
    args = list(args)
    for name, value in options.items():
        flag = "--" + name.replace("_", "-")
        args[args.index(flag) + 1] = str(value)
    return args


def dumps(directory, rank, phase):
    found = {}
    for name in os.listdir(directory):
        if name.startswith(f"rank{rank}_{phase}_"):
            found[int(name.rsplit("_", 1)[1][:-3])] = torch.load(os.path.join(directory, name), weights_only=True)
    return found


def equal_tensors(a, b):
    return sorted(a) == sorted(b) and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module", params=[0.1, 0.0], ids=["dropout0.1", "dropout0"])
def two_rank_run(request, data_bin, tmp_path_factory):
    """(dump dir, save dir, dropout) of a 2-rank weight-TD run of UPDATES updates."""
    root = tmp_path_factory.mktemp("ddp")
    dump_dir, save_dir = root / "dump", root / "save"
    dump_dir.mkdir()
    args = with_options(TRAIN_ARGS, user_dir=DUMP_PLUGIN, criterion="label_smoothed_cross_entropy_td_dump",
                        dropout=request.param)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TD_DUMP_DIR", str(dump_dir))
        result = run_cli("scripts/launch_distributed.py", "--nprocs", "2", "--", data_bin, *args,
                         "--td-type", "weight", "--td-gamma", "0.5", "--td-alpha", "0.66",
                         "--max-update", UPDATES, "--save-dir", save_dir, check=False, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return dump_dir, save_dir, request.param


def test_replicas_stay_identical_and_target_the_same_weights(two_rank_run):
    dump_dir, save_dir, _ = two_rank_run
    train = [dumps(dump_dir, rank, "train") for rank in (0, 1)]
    assert sorted(train[0]) == sorted(train[1]) == list(range(UPDATES))
    for update in range(UPDATES):
        a, b = train[0][update], train[1][update]
        # the ranks read different sentences: without the all-reduce their weights would part at update 1
        assert len(a["ids"]) and len(b["ids"]) and not set(a["ids"].tolist()) & set(b["ids"].tolist())
        assert equal_tensors(a["weights"], b["weights"]), f"replicas differ before update {update + 1}"
        assert len(a["targeted"]) == 32 and equal_tensors(a["targeted"], b["targeted"]), update
        for name, dropped in a["dropped"].items():
            assert not (dropped & ~a["targeted"][name]).any(), "only targeted weights are dropped"
    first, last = train[0][0]["weights"], train[0][UPDATES - 1]["weights"]
    assert any(not torch.equal(first[k], last[k]) for k in first), "training did not change the weights"
    # after the last update: both replicas, and rank 0's checkpoint, hold the same weights
    valid = [dumps(dump_dir, rank, "valid") for rank in (0, 1)]
    final = [max(v.items())[1]["weights"] for v in valid]
    assert equal_tensors(final[0], final[1])
    saved = torch.load(save_dir / "checkpoint_last.pt", weights_only=False)
    assert saved["optimizer_history"][-1]["num_updates"] == UPDATES
    assert equal_tensors(saved["model"], final[0])
    assert any(not torch.equal(last[k], final[0][k]) for k in last), "the last update changed nothing"


def test_dropped_sets_follow_fairseqs_per_step_seed(two_rank_run):
    """fairseq reseeds every rank with seed + num_updates at each train step. With no
    activation dropout the TD draws are the only use of the RNG, so the ranks drop the same
    weights; with dropout, the activation masks (whose size depends on each rank's batch)
    come first and the ranks' drops part, except at a step whose two batches share a shape."""
    dump_dir, _, dropout = two_rank_run
    train = [dumps(dump_dir, rank, "train") for rank in (0, 1)]
    same = [equal_tensors(train[0][u]["dropped"], train[1][u]["dropped"]) for u in range(UPDATES)]
    assert all(len(train[0][u]["dropped"]) == 32 for u in range(UPDATES))
    if dropout == 0:
        assert all(same)
    else:  # two ranks whose batches happen to have the same shape draw alike: part at least once
        assert not all(same)


def test_commands_follow_the_recipe_that_works_on_cpu():
    commands = rank_commands(["bin", "--arch", "transformer_td_tiny"], 2, 29541, "/x/fairseq-train")
    assert commands[1] == ["/x/fairseq-train", "bin", "--arch", "transformer_td_tiny", "--cpu",
                           "--distributed-world-size", "2", "--distributed-backend", "gloo",
                           "--distributed-init-method", "tcp://127.0.0.1:29541", "--distributed-no-spawn",
                           "--device-id", "0", "--ddp-backend", "legacy_ddp", "--distributed-rank", "1"]
    assert commands[0][-1] == "0" and commands[0].count("--cpu") == 1
    assert rank_commands(["bin", "--cpu"], 1, 1, "t")[0].count("--cpu") == 1


FAILURES = [("exit 3", "import sys; sys.exit(3)", "rank 1 exited with code 3"),
            ("SIGKILL", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)", "rank 1 was killed by SIGKILL")]


@pytest.mark.parametrize("how, code, message", FAILURES, ids=[f[0] for f in FAILURES])
def test_a_failing_rank_stops_the_others(tmp_path, how, code, message):
    pid_file = tmp_path / "pid"
    waiter = f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(120)"
    fail_later = f"import time; time.sleep(0.5); {code}"
    start = time.monotonic()
    with pytest.raises(UserError, match=message):
        run_ranks([[sys.executable, "-c", waiter], [sys.executable, "-c", fail_later]], grace_s=2)
    assert time.monotonic() - start < 30
    pid = int(pid_file.read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # stopped and reaped, not left waiting for an all-reduce


def test_launcher_exit_code_when_training_fails(tmp_path):
    """A rank that fails in fairseq-train (a data-bin that does not exist) fails the launch."""
    result = run_cli("scripts/launch_distributed.py", "--nprocs", "2", "--", tmp_path / "no_bin", *TRAIN_ARGS,
                     "--max-update", "1", "--save-dir", tmp_path / "save", check=False, timeout=120)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("launch_distributed.py: error: rank ")
    assert not list(tmp_path.glob("save/*.pt"))  # fairseq-train makes the folder itself, before loading data


def test_all_ranks_succeeding_is_success(tmp_path):
    touch = "import sys; open(sys.argv[1], 'w').close()"
    run_ranks([[sys.executable, "-c", touch, str(tmp_path / str(rank))] for rank in range(3)])
    assert sorted(os.listdir(tmp_path)) == ["0", "1", "2"]
