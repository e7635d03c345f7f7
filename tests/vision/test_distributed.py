"""Several processes: batches, global batch norm, torchrun against one process, resume."""
import os
import socket
import subprocess
import sys

import pytest
import torch
from torch import nn

from td_fairseq.vision import distributed
from td_fairseq.vision.train import EpochBatches

from .conftest import load_script, make_image_folder

REPO = os.path.join(os.path.dirname(__file__), "..", "..")
vision_train = load_script("vision_train")
TINY = ["--blocks", "1", "--widths", "4", "8", "8", "--device", "cpu"]


def test_ranks_batches_together_are_one_process_batches():
    one = EpochBatches(24, 8, distributed.Ranks(0, 1), seed=5)
    two = [EpochBatches(24, 4, distributed.Ranks(r, 2), seed=5) for r in range(2)]
    for sampler in [one] + two:
        sampler.set_epoch(3)
    for big, *small in zip(one, *two):
        assert sorted(big) == sorted(small[0] + small[1]) and all(e == 3 for e, _ in big)
    assert len(one) == len(two[0]) == 3


def test_global_batch_norm_is_batch_norm_in_one_process():
    torch.manual_seed(0)
    plain = nn.Sequential(nn.Conv2d(2, 3, 1), nn.BatchNorm2d(3))
    swapped = nn.Sequential(nn.Conv2d(2, 3, 1), nn.BatchNorm2d(3))
    swapped.load_state_dict(plain.state_dict())
    assert distributed.synchronise_batch_norm(swapped) == 1
    assert isinstance(swapped[1], distributed.GlobalBatchNorm2d)
    assert set(swapped.state_dict()) == set(plain.state_dict())
    x = torch.randn(4, 2, 5, 5)
    assert torch.equal(swapped(x), plain(x)) and torch.equal(swapped[1].running_var, plain[1].running_var)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("images"), train=8, val=2)


def test_two_processes_equal_one_with_twice_the_batch(images, tmp_path):
    """16 images, 2 epochs of 2 updates: 2 ranks x batch 4 against 1 process x batch 8. With
    --sync-bn both normalise with the same 8 images' statistics; TD draws the same masks."""
    common = ["--dataset", "folder", "--data-dir", images, "--image-size", "8", *TINY, "--td-gamma", "0.5",
              "--td-alpha", "0.5", "--epochs", "2", "--sync-bn", "--quiet"]
    one, two = tmp_path / "one" / "c.pt", tmp_path / "two" / "c.pt"
    assert vision_train.main(common + ["--batch-size", "8", "--out", str(one)]) == 0
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                             "--master_port", str(free_port()), "scripts/vision_train.py", *common,
                             "--batch-size", "4", "--out", str(two)],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count('"checkpoint"') == 1  # rank 0 alone reports and writes
    assert os.listdir(two.parent) == ["c.pt"]  # no temporary file left
    a, b = torch.load(one, weights_only=True), torch.load(two, weights_only=True)
    assert b["metrics"]["replicas"] == {"processes": 2, "weights_agree": True, "targeted_sets_agree": True,
                                        "buffers_agree": True}
    assert b["runtime"]["processes"] == 2 and a["history"][-1]["updates"] == b["history"][-1]["updates"] == 4
    for key, value in a["state_dict"].items():
        assert torch.allclose(value.float(), b["state_dict"][key].float(), atol=1e-5), key
    assert a["history"][-1]["train_loss"] == pytest.approx(b["history"][-1]["train_loss"], abs=1e-5)


def test_resume_after_an_interrupt_continues_exactly(tmp_path, monkeypatch):
    """Ctrl-C after epoch 1 of 3, then the same command with --resume: the same weights as
    one uninterrupted run, with the ramp (over 10 and 20 updates) crossing the interruption."""
    argv = ["--dataset", "digits", *TINY, "--td-gamma", "0.6", "--td-alpha", "0.8", "--td-ramp-updates", "10",
            "--epochs", "3", "--batch-size", "256"]
    straight = tmp_path / "straight.pt"
    assert vision_train.main(argv + ["--quiet", "--out", str(straight)]) == 0

    def interrupt(entry):
        raise KeyboardInterrupt
    monkeypatch.setattr(vision_train, "log_epoch", interrupt)
    monkeypatch.setattr(vision_train, "progress_bar", lambda iterable, total, epoch: iterable)
    resumed = tmp_path / "resumed.pt"
    assert vision_train.main(argv + ["--out", str(resumed)]) == 130
    partial = torch.load(resumed, weights_only=True)
    assert partial["resume"]["epoch"] == 1 and partial["resume"]["updates"] == 6
    assert vision_train.main(argv + ["--quiet", "--resume", str(resumed), "--out", str(resumed)]) == 0
    a, b = torch.load(straight, weights_only=True), torch.load(resumed, weights_only=True)
    assert [h["updates"] for h in b["history"]] == [6, 12, 18]
    assert [h["train_loss"] for h in a["history"]] == [h["train_loss"] for h in b["history"]]
    assert all(torch.equal(v, b["state_dict"][k]) for k, v in a["state_dict"].items())


def test_resume_refuses_another_run(tmp_path, capsys):
    argv = ["--dataset", "digits", *TINY, "--epochs", "1", "--batch-size", "512", "--quiet"]
    path = str(tmp_path / "c.pt")
    assert vision_train.main(argv + ["--out", path]) == 0
    capsys.readouterr()
    assert vision_train.main(argv + ["--td-gamma", "0.5", "--resume", path, "--out", path]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "was trained with another td" in lines[0] and "resume with the command" in lines[0]
