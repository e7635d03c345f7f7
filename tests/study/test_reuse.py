"""td_fairseq/study/reuse.py: a fixed-budget job takes the budget study's epoch checkpoint, and
that checkpoint is the very run the job would have trained; anything else is refused."""
import json
import os
import shutil

import pytest
import torch

from td_fairseq.study import job

from .test_job import compose, study


def run(sweep, *overrides):
    process = study(sweep, *overrides)
    output = process.communicate(timeout=900)[0]
    assert process.returncode == 0, output[-3000:]


def result(sweep, name):
    with open(os.path.join(sweep, name, "result.json"), encoding="utf-8") as f:
        return json.load(f)


@pytest.fixture(scope="module")
def budget(tmp_path_factory):
    """The smoke recipe's td, seed 1, trained for 3 epochs of 12 updates with epoch checkpoints."""
    sweep = tmp_path_factory.mktemp("budget")
    run(sweep, "model=td", "seed=1", "budget={max_epoch:3,patience:5}")
    return sweep


def test_a_job_takes_the_budget_runs_epoch_checkpoint_which_is_the_run_it_would_train(budget, tmp_path):
    name = "budget={max_epoch:3,patience:5},model=td,seed=1"
    assert [p["updates"] for p in result(budget, name)["curve"]] == [12, 24, 36]
    run(tmp_path / "reused", "model=td", "seed=1", "updates=24", f"reuse={budget}")
    run(tmp_path / "fresh", "model=td", "seed=1", "updates=24")
    reused, fresh = result(tmp_path / "reused", "model=td,seed=1,updates=24"), result(
        tmp_path / "fresh", "model=td,seed=1,updates=24")
    assert reused["reused"]["epoch"] == 2 and reused["updates"] == fresh["updates"] == 24
    assert not (tmp_path / "reused" / "model=td,seed=1,updates=24" / "train.log").exists()  # nothing trained
    assert reused["curve"] == fresh["curve"] and [p["updates"] for p in reused["curve"]] == [12, 24]
    assert [r["bleu"] for r in reused["rows"]] == [r["bleu"] for r in fresh["rows"]]
    weights = [torch.load(os.path.join(sweep, "model=td,seed=1,updates=24", "checkpoint_last.pt"),
                          weights_only=False)["model"] for sweep in (tmp_path / "reused", tmp_path / "fresh")]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_other_flags_an_update_that_is_no_epoch_end_and_a_cap_reading_schedule_are_refused(budget, tmp_path):
    data = str(budget / "data")

    def take(updates, optimizer=None, reuse=budget, label="td"):
        # (the optimizer is set on the composed config: once fairseq has registered its own hydra
        # groups in this process, `optimizer=...` on the override list names a group)
        cfg = compose("smoke", f"model={label}", f"reuse={reuse}", f"updates={updates}")
        if optimizer:
            cfg.optimizer = optimizer
        return job.reused(cfg, label, 1, job.train_flags(cfg, 1), data, str(tmp_path / "job"))

    with pytest.raises(job.JobFailed, match="reuse: .* trained with other flags \\(--lr 1e-3 --lr 3e-3\\)"):
        take(24, "--optimizer adam --adam-betas '(0.9, 0.98)' --lr 1e-3 --lr-scheduler inverse_sqrt "
             "--warmup-updates 10")
    with pytest.raises(job.JobFailed, match="no epoch of .* ended at update 30"):
        take(30)
    polynomial = "--optimizer adam --lr 3e-3 --lr-scheduler polynomial_decay --total-num-update 36"
    other = tmp_path / "budget"  # the same job, had it trained with a schedule that reads the cap
    name = "budget={max_epoch:3,patience:5},model=td,seed=1"
    shutil.copytree(budget / name, other / name, ignore=shutil.ignore_patterns("*.pt"))
    from omegaconf import OmegaConf
    config = other / name / ".hydra" / "config.yaml"
    changed = OmegaConf.load(config)
    changed.optimizer = polynomial
    OmegaConf.save(changed, config)
    with pytest.raises(job.JobFailed, match="lr scheduler polynomial_decay reads the update cap"):
        take(24, polynomial, reuse=other)
    assert not (tmp_path / "job").exists()
    assert take(24, label="no_td") is None  # no_td is not in the budget study: it trains
