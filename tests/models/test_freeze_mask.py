"""Prune, then fine-tune with the pruned entries frozen at zero (--freeze-mask), then export."""
import importlib.util
import os

import torch

from td_fairseq import cli
from td_fairseq.sparsity import views_of
from td_fairseq.sparsity.baseline_views import FrozenMask
from td_fairseq.tools.inprocess import build, sample

from ..conftest import REPO, TRAIN_ARGS, run_cli

_spec = importlib.util.spec_from_file_location("prune_checkpoint", os.path.join(REPO, "scripts", "prune_checkpoint.py"))
prune_script = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(prune_script)


def test_frozen_entries_get_zero_gradient_and_stay_zero_in_process():
    model, criterion, vocab = build(extra=["--td-type", "none", "--freeze-mask"])
    state = model.state_dict()
    g = torch.Generator().manual_seed(0)
    pruned = {k: v.masked_fill(torch.rand(v.shape, generator=g) < 0.7, 0) for k, v in state.items()
              if k.endswith(("q_proj.weight", "fc1.weight", "fc2.weight", "out_proj.weight"))}
    stock = {k: v for k, v in state.items() if ".td." not in k}
    model.load_state_dict({**stock, **pruned})  # fairseq's upgrade hook sets each mask from the zeros
    modules = dict(views_of(model))
    assert modules and all(isinstance(m.td, FrozenMask) for m in modules.values())
    zeros = {n: m._parameters["weight"] == 0 for n, m in modules.items()}
    assert all(torch.equal(m.td.mask, zeros[n]) for n, m in modules.items())
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05, weight_decay=0.01)
    model.train()
    for step in range(5):
        optimizer.zero_grad()
        loss, _, _ = criterion(model, sample(vocab, seed=step))
        loss.backward()
        for n, m in modules.items():
            assert (m._parameters["weight"].grad[zeros[n]] == 0).all()
        optimizer.step()
    for n, m in modules.items():
        assert (m.weight[zeros[n]] == 0).all() and (m._parameters["weight"][zeros[n]] == 0).all()
        assert (m._parameters["weight"][~zeros[n]] != 0).any()  # the rest did train


def test_finetune_from_a_pruned_checkpoint_keeps_its_zeros_and_exports(trained_checkpoint, data_bin, tmp_path):
    assert cli.run(prune_script.main, [str(trained_checkpoint), "--sparsity", "0.8", "--out-dir",
                                       str(tmp_path / "pruned")]) == 0
    pruned = tmp_path / "pruned" / "sparsity_0.80.pt"
    save = tmp_path / "ft"
    run_cli("fairseq-train", data_bin, *TRAIN_ARGS, "--td-type", "none", "--freeze-mask", "--finetune-from-model",
            pruned, "--max-update", "6", "--save-dir", save)
    before = torch.load(pruned, weights_only=True)["model"]
    after = torch.load(save / "checkpoint_last.pt", weights_only=False)["model"]
    targets = [k for k in before if k.endswith(".weight") and f"{k[:-len('weight')]}td.mask" in after]
    assert len(targets) == 32  # encoder 2 x (4 attention + 2 FFN), decoder 2 x (4 self + 4 cross + 2 FFN)
    for key in targets:
        assert torch.equal(after[f"{key[:-len('weight')]}td.mask"], before[key] == 0)
        assert (after[key][before[key] == 0] == 0).all()
    assert any(not torch.equal(after[k], before[k]) for k in targets)  # it was fine-tuned
    # exported like every other model: a stock checkpoint with the zeros in place
    assert cli.run(prune_script.main, [str(save / "checkpoint_last.pt"), "--sparsity", "0", "--out-dir",
                                       str(tmp_path / "export")]) == 0
    exported = torch.load(tmp_path / "export" / "sparsity_0.00.pt", weights_only=True)["model"]
    assert not any(".td." in k for k in exported)
    assert all((exported[k][before[k] == 0] == 0).all() for k in targets)
