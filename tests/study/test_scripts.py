"""The contract of scripts/study.py and scripts/study_report.py: the smoke study (2 models x 2
seeds) under the basic and the joblib launcher leaves one result.json per job and a report, and
a rerun of a finished study runs nothing."""
import csv
import importlib.util
import json
import os
import subprocess
import sys

import pytest

from td_fairseq.study import job

from ..conftest import REPO

JOBS = ["model=no_td,seed=1", "model=no_td,seed=2", "model=td,seed=1", "model=td,seed=2"]


def smoke(sweep, *overrides, cwd):
    """The contract's command, run from ``cwd`` (the configs are found from the script, not the cwd)."""
    result = subprocess.run([sys.executable, os.path.join(REPO, "scripts", "study.py"), "-m", "--config-name", "smoke",
                             f"hydra.sweep.dir={sweep}", *overrides], cwd=cwd, capture_output=True, text=True,
                            timeout=900, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def check_results(sweep, jobs=JOBS):
    assert sorted(p for p in os.listdir(sweep) if p.startswith("model=")) == jobs
    for name in jobs:
        with open(os.path.join(sweep, name, "result.json"), encoding="utf-8") as f:
            result = json.load(f)
        assert (result["label"], result["updates"], len(result["curve"])) == (name[6:-7], 36, 3)
        assert [r["requested_sparsity"] for r in result["rows"]] == [0.0, 0.5, 0.9]
        assert f"--seed {name[-1]}" in result["train_command"] and result["commit"] and result["machine"]
    assert os.listdir(os.path.join(sweep, "data", "bin"))  # made once, under the sweep folder


@pytest.fixture(scope="module")
def basic(tmp_path_factory):
    sweep = tmp_path_factory.mktemp("smoke") / "study"
    smoke(sweep, cwd=tmp_path_factory.mktemp("elsewhere"))
    return sweep


def test_the_smoke_study_under_the_basic_launcher_and_its_report(basic):
    check_results(basic)
    report = subprocess.run([sys.executable, os.path.join(REPO, "scripts", "study_report.py"), str(basic)],
                            capture_output=True, text=True, timeout=300)
    assert report.returncode == 0 and report.stderr == "", report.stderr
    with open(basic / "report" / "results.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 12 and {(r["name"], r["seed"]) for r in rows} == {(m, s) for m in ("no_td", "td") for s in "12"}
    tables = (basic / "report" / "tables.md").read_text()
    assert "4 jobs done, 0 not" in tables and "| pruned | no_td | td |" in tables and "| seeds | 2 | 2 |" in tables
    assert (basic / "report" / "curves.png").read_bytes()[:4] == b"\x89PNG"


def test_a_rerun_of_a_finished_study_runs_nothing(basic, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError(f"a finished study started {args[0]}")

    monkeypatch.setattr(job, "_run", refuse)  # every training, pruning and evaluation goes through it
    monkeypatch.setattr(job, "prepare_data", refuse)
    monkeypatch.setattr(sys, "argv", ["study.py"])
    before = {name: os.stat(basic / name / "result.json").st_mtime_ns for name in JOBS}
    spec = importlib.util.spec_from_file_location("study_script", os.path.join(REPO, "scripts", "study.py"))
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    script.main(["-m", "--config-name", "smoke", f"hydra.sweep.dir={basic}"])  # raises if a job failed
    assert {name: os.stat(basic / name / "result.json").st_mtime_ns for name in JOBS} == before


def test_the_smoke_study_under_the_joblib_launcher_runs_two_jobs_at_once(tmp_path):
    sweep, jobs = tmp_path / "study", [j for j in JOBS if j.endswith("seed=1")]  # two jobs show the overlap
    smoke(sweep, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "seed=1", cwd=REPO)
    check_results(sweep, jobs)
    spans = sorted((os.stat(sweep / n / ".hydra" / "overrides.yaml").st_mtime,
                    os.stat(sweep / n / "result.json").st_mtime) for n in jobs)
    assert any(start < spans[i][1] for i, (start, _) in enumerate(spans[1:]))  # a job started before another ended


def test_an_unknown_model_or_a_missing_budget_stops_before_any_work(tmp_path):
    run = [sys.executable, os.path.join(REPO, "scripts", "study.py"), "-m"]
    result = subprocess.run(run + ["--config-name", "smoke", f"hydra.sweep.dir={tmp_path / 'a'}", "model=magic"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 1 and "Could not find 'model/magic'" in result.stderr
    assert not (tmp_path / "a").exists()
    result = subprocess.run(run + ["--config-name", "multi30k", f"hydra.sweep.dir={tmp_path / 'b'}", "model=td",
                                   "seed=1"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 1 and "Missing mandatory value: updates" in result.stderr
    with open(tmp_path / "b" / "model=td,seed=1" / "failed.json", encoding="utf-8") as f:
        assert json.load(f)["error"] == "Missing mandatory value: updates"
    assert not (tmp_path / "b" / "data").exists() and not (tmp_path / "b" / "raw").exists()


def test_a_failed_job_leaves_its_marker_and_the_next_job_runs(tmp_path):
    result = subprocess.run([sys.executable, os.path.join(REPO, "scripts", "study.py"), "-m", "--config-name", "smoke",
                             f"hydra.sweep.dir={tmp_path}", "model=no_td", "seed=1", "updates=12",
                             "model.flags=--td-type bogus,--td-type none"], capture_output=True, text=True,
                            timeout=600, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert result.returncode == 1  # the multirun ran both, then reports the failure
    [bad] = tmp_path.glob("model.flags=*bogus*")
    with open(bad / "failed.json", encoding="utf-8") as f:
        failed = json.load(f)
    assert failed["log"] == str(bad / "train.log") and failed["error"].startswith("training exited with status 2")
    assert "invalid choice: 'bogus'" in (bad / "train.log").read_text()
    [good] = tmp_path.glob("model.flags=*none*")
    with open(good / "result.json", encoding="utf-8") as f:
        assert json.load(f)["updates"] == 12
