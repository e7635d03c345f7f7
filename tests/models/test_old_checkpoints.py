"""Checkpoints written by the code before the views got their own module keep loading.

The models are built and saved by that code itself (commit OLD, extracted with git archive and
run in a subprocess); the current code must load every state dict strictly and compute the same
eval-mode output.
"""
import subprocess
import sys
import tarfile

import pytest
import torch

from td_fairseq.tools.inprocess import build, sample

from ..conftest import REPO, cli_env

OLD = "1ccc35e"  # the last commit whose views lived in sparsity/td.py and sparsity/weight_views.py
METHODS = {
    "weight_random": ["--td-type", "weight_random"],
    "gmp": ["--sparsity-method", "gmp", "--gmp-start", "0", "--gmp-steps", "1", "--gmp-interval", "1"],
    "l0": ["--sparsity-method", "l0"],
    "variational": ["--sparsity-method", "variational"],
    "smallify": ["--sparsity-method", "smallify"],
}
SCRIPT = """
import sys, torch
sys.path.insert(0, sys.argv[1])
from tests.models.build import build, sample
methods = {methods!r}
out = {{}}
for name, extra in methods.items():
    torch.manual_seed(0)
    model, _, vocab = build(extra=extra)
    model.train()
    for m in model.modules():
        if hasattr(m, "set_num_updates") and m is not model:
            m.set_num_updates(3)
    model(**sample(vocab)["net_input"])  # GMP computes its mask, Smallify moves its statistics
    model.eval()
    with torch.no_grad():
        logits = model(**sample(vocab, seed=1)["net_input"])[0]
    out[name] = {{"state": model.state_dict(), "logits": logits}}
torch.save(out, sys.argv[2])
"""


@pytest.fixture(scope="module")
def old_checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("old")
    archive = root / "old.tar"
    made = subprocess.run(["git", "archive", "--format=tar", "-o", str(archive), OLD, "td_fairseq", "tests"],
                          cwd=REPO, capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"commit {OLD} is not in this clone's history: {made.stderr.strip()}")
    with tarfile.open(archive) as tar:
        tar.extractall(root / "src", filter="data")
    env = dict(cli_env(), PYTHONPATH=str(root / "src"))
    result = subprocess.run([sys.executable, "-c", SCRIPT.format(methods=METHODS), str(root / "src"),
                             str(root / "states.pt")], cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "src/td_fairseq" in subprocess.run(
        [sys.executable, "-c", "import td_fairseq; print(td_fairseq.__file__)"], cwd=root, env=env,
        capture_output=True, text=True).stdout  # the subprocess really ran the old code
    return torch.load(root / "states.pt", weights_only=False)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_old_checkpoints_load_strictly_and_compute_the_same(old_checkpoints, method):
    saved = old_checkpoints[method]
    assert any(".td." in k for k in saved["state"]), "the old model must carry view state for this to mean anything"
    torch.manual_seed(0)
    model, _, vocab = build(extra=METHODS[method])
    model.load_state_dict(saved["state"], strict=True)
    model.eval()
    with torch.no_grad():
        logits = model(**sample(vocab, seed=1)["net_input"])[0]
    assert torch.allclose(logits, saved["logits"], atol=1e-6)
