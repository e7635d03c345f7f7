"""scripts/demo.py (make demo) end to end at a toy size: both models train, the sweep scores them,
and the output has no library noise (sacreBLEU's detokenize warning, fairseq's tensorboardX notice)."""
import json
import os
import subprocess
import sys

from ..conftest import REPO, cli_env

DEMO = os.path.join(REPO, "scripts", "demo.py")
NOISE = ("detokenize", "tensorboardX", "Warning", "WARNING", "Traceback")


def test_demo_at_toy_size_is_quiet(tmp_path):
    out = tmp_path / "demo"
    # (the detokenize warning needs 100 outputs ending in " .", which only a trained model makes:
    # tests/test_synthetic.py checks that the corpus gives sacreBLEU no reason for it)
    args = [sys.executable, DEMO, "--out", str(out), "--max-update", "2", "--train-pairs", "1000",
            "--test-pairs", "16", "--levels", "0", "0.5"]
    result = subprocess.run(args, cwd=tmp_path, env=cli_env(), capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout + result.stderr
    assert not [word for word in NOISE if word in output], output
    assert "| pruned | no_td | td |" in result.stdout
    rows = json.loads((out / "sweep" / "results.json").read_text())
    assert sorted((r["label"], float(r["requested_sparsity"])) for r in rows) == \
        [("no_td", 0.0), ("no_td", 0.5), ("td", 0.0), ("td", 0.5)]
    for label in ("no_td", "td"):
        log = (out / "checkpoints" / label / "train.log").read_text()
        assert "num_updates 2" in log or "num_updates=2" in log, log[-2000:]
    # a rerun finds every stage done: no training, no decoding, the same table
    again = subprocess.run(args, cwd=tmp_path, env=cli_env(), capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.splitlines()[-8:] == result.stdout.splitlines()[-8:]
