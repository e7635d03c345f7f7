"""prune_checkpoint.py: stock pruned checkpoints that plain fairseq loads."""
import hashlib
import json
import os
import shutil

import pytest
import torch

from td_fairseq import cli

from ..conftest import REPO, run_cli

import importlib.util

_spec = importlib.util.spec_from_file_location("prune_checkpoint", os.path.join(REPO, "scripts", "prune_checkpoint.py"))
prune_script = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(prune_script)


def digest(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def test_pruned_checkpoints_generate_under_plain_fairseq(trained_checkpoint, data_bin, tmp_path):
    before = digest(trained_checkpoint)
    out = tmp_path / "pruned"
    assert cli.run(prune_script.main, [str(trained_checkpoint), "--sparsity", "0.5", "0.9", "--out-dir", str(out)]) == 0
    assert digest(trained_checkpoint) == before
    report = json.loads((out / "report.json").read_text())
    assert [lvl["file"] for lvl in report["levels"]] == ["sparsity_0.50.pt", "sparsity_0.90.pt"]
    assert report["levels"][0]["measured_sparsity"] == pytest.approx(0.5)
    assert 0.85 < report["levels"][1]["measured_sparsity"] <= 0.9
    state = torch.load(out / "sparsity_0.90.pt", weights_only=True)  # plain dicts and tensors only
    assert state["cfg"]["model"]["arch"] == "transformer_tiny"
    assert not any(".td." in k for k in state["model"])
    fc1 = state["model"]["encoder.layers.0.fc1.weight"]
    assert (fc1 == 0).float().mean() == pytest.approx(report["levels"][1]["per_tensor"]["encoder.layers.0.fc1.weight"])
    # stock fairseq, no --user-dir, run outside the repo, no environment override
    result = run_cli("fairseq-generate", data_bin, "--path", out / "sparsity_0.50.pt", "--beam", "2", "--cpu",
                     "--max-tokens", "2000", cwd=tmp_path)
    assert result.stdout.count("\nH-") >= 30


def test_unit_mode_output(trained_checkpoint, tmp_path):
    out = tmp_path / "unit"
    assert cli.run(prune_script.main, [str(trained_checkpoint), "--sparsity", "0.5", "--mode", "unit",
                                       "--out-dir", str(out)]) == 0
    state = torch.load(out / "sparsity_0.50.pt", weights_only=True)
    w = state["model"]["decoder.layers.1.fc1.weight"]
    assert (w == 0).all(dim=1).sum() == w.shape[0] // 2


def bad_cases(ckpt, tmp_path):
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(open(ckpt, "rb").read()[:5000])
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.ones(2)}, foreign)
    not_torch = tmp_path / "text.pt"
    not_torch.write_text("hello")
    out = str(tmp_path / "out")
    return {
        "sparsity one": [str(ckpt), "--sparsity", "1.0", "--out-dir", out],
        "sparsity negative": [str(ckpt), "--sparsity", "-0.2", "--out-dir", out],
        "missing": [str(tmp_path / "nope.pt"), "--sparsity", "0.5", "--out-dir", out],
        "truncated": [str(truncated), "--sparsity", "0.5", "--out-dir", out],
        "foreign": [str(foreign), "--sparsity", "0.5", "--out-dir", out],
        "not torch": [str(not_torch), "--sparsity", "0.5", "--out-dir", out],
        "unknown targets": [str(ckpt), "--sparsity", "0.5", "--targets", "attn,gates", "--out-dir", out],
        "out dir is input dir": [str(ckpt), "--sparsity", "0.5", "--out-dir", str(ckpt.parent)],
    }


@pytest.mark.parametrize("case", ["sparsity one", "sparsity negative", "missing", "truncated", "foreign",
                                  "not torch", "unknown targets", "out dir is input dir"])
def test_bad_input(trained_checkpoint, tmp_path, capsys, case):
    ckpt = tmp_path / "in" / "model.pt"
    ckpt.parent.mkdir()
    shutil.copy(trained_checkpoint, ckpt)
    listing = sorted(os.listdir(ckpt.parent))
    assert cli.run(prune_script.main, bad_cases(ckpt, tmp_path)[case]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "error:" in err[0]
    assert not (tmp_path / "out").exists()
    assert sorted(os.listdir(ckpt.parent)) == listing
