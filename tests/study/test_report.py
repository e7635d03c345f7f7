"""td_fairseq/study/report.py on study folders written by hand: the arithmetic over seeds, the
verdicts, the best one-shot row, and failed, unfinished and missing jobs."""
import json
import subprocess
import sys

import pytest

from td_fairseq.files import UserError
from td_fairseq.study.report import lead, name_jobs, target_row, write_report

from ..conftest import REPO

TARGETS = [{"model": "td", "level": 0.7, "ratio": 0.97}, {"model": "td", "level": 0.8, "ratio": 0.95}]


def row(evaluation, label, level, bleu, pruner="magnitude", pattern="unstructured", subset="test"):
    return dict(evaluation=evaluation, label=label, mode="weight", score="magnitude", pruner=pruner, pattern=pattern,
                requested_sparsity=level, measured_sparsity=level, bleu=bleu, subset=subset)


def fake_job(sweep, overrides, rows=None, failed=None, curve=((12, 6.0), (24, 5.5), (36, 5.6))):
    """A job folder as scripts/study.py leaves it: .hydra/overrides.yaml, then result.json or failed.json."""
    folder = sweep / ",".join(sorted(overrides))
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    job = dict(label=overrides[0].split("=")[1], seed=int(overrides[1].split("=")[1]), overrides=list(overrides),
               job=folder.name)
    if failed:
        (folder / "failed.json").write_text(json.dumps(dict(job, error=failed)))
    elif rows is not None:
        points = [dict(epoch=i + 1, updates=u, loss=loss, ppl=2 ** loss) for i, (u, loss) in enumerate(curve)]
        (folder / "result.json").write_text(json.dumps(dict(job, updates=curve[-1][0], curve=points, rows=rows,
                                                            config={"targets": TARGETS})))
    return folder


def test_mean_and_std_over_seeds_verdicts_and_the_best_one_shot_row(tmp_path):
    for seed, (dense, at70, sgpt, td_dense, td70) in {1: (20, 10, 19, 18, 20), 2: (22, 12, 23, 20, 21)}.items():
        fake_job(tmp_path, ["model=no_td", f"seed={seed}"], [
            row("weight", "no_td", 0.0, dense), row("weight", "no_td", 0.7, at70),
            row("sparsegpt", "no_td", 0.7, sgpt, "sparsegpt"), row("pattern_2_4", "no_td", 0.5, 17, pattern="2:4")])
        fake_job(tmp_path, ["model=td", f"seed={seed}"], [
            row("weight", "td", 0.0, td_dense), row("weight", "td", 0.7, td70),
            row("pattern_2_4", "td", 0.5, 15, pattern="2:4")],
            curve=((12, 6.0), (24, 5.5 if seed == 1 else 7.0), (36, 5.9)))
    out, text, problems = write_report(str(tmp_path))
    assert problems == [] and text.startswith(f"# Study {tmp_path}: 4 jobs done, 0 not")
    assert "## Controls" not in text  # no setting named apart
    assert "| 0 % | 21.00 ± 1.41 | 19.00 ± 1.41 |" in text and "| 70 % | 11.00 ± 1.41 | 20.50 ± 0.71 |" in text
    assert "| seeds | 2 | 2 |" in text
    retention = text.split("## Retention (mean BLEU over no_td's mean dense BLEU, 21.00)")[1]
    assert "| 70 % | 0.524 ± 0.067 | 0.976 ± 0.034 |" in retention.split("### sparsegpt")[0]
    assert "| td | 70 % | 2 | 20.50 ± 0.71 | 0.976 ± 0.034 | 0.97 | yes |" in text
    assert "| td | 80 % | 0 | not measured | | 0.95 | no |" in text
    assert ("| 70 % | no_td (sparsegpt) | 2 | 21.00 ± 2.83 | td (weight) | 2 | 20.50 ± 0.71 | 0.50 | 2.83 + 0.71 | no |"
            in text)  # the runner-up is another model's row, not no_td's own 11 by magnitude
    assert ("| 2:4 | no_td (pattern_2_4) | 2 | 17.00 ± 0.00 | td (pattern_2_4) | 2 | 15.00 ± 0.00 | 2.00 | 0.00 + 0.00 "
            "| yes |") in text
    assert "| td | 2 | 36, 36 | 5.900 ± 0.000 | 5.500 at 24, 5.900 at 36 |" in text  # where val loss stopped improving
    with open(f"{out}/results.csv", encoding="utf-8") as f:
        assert len(f.readlines()) == 1 + 2 * 7
    with open(f"{out}/curves.png", "rb") as f:
        assert f.read(4) == b"\x89PNG"


def test_a_target_over_several_models_and_evaluations_and_the_best_td_row_against_a_reference(tmp_path):
    targets = [{"model": ["td", "td_rescale"], "evaluations": ["weight", "weight_eval_scale"], "level": 0.0,
                "ratio": 0.9}]
    spec = {"reference": {"model": "no_td", "evaluation": "sparsegpt"}, "models": ["td", "td_rescale"],
            "levels": [0.7, 0.8]}
    bleu = {1: (20, 16, 14, 19, 18), 2: (22, 18, 12, 21, 20)}  # no_td dense, sgpt 70, sgpt 80, td 70, eval-scaled dense
    for seed, (dense, sgpt70, sgpt80, td70, scaled) in bleu.items():
        fake_job(tmp_path, ["model=no_td", f"seed={seed}"], [row("weight", "no_td", 0.0, dense), row(
            "sparsegpt", "no_td", 0.7, sgpt70, "sparsegpt"), row("sparsegpt", "no_td", 0.8, sgpt80, "sparsegpt")])
        fake_job(tmp_path, ["model=td", f"seed={seed}"], [
            row("weight", "td", 0.0, 17), row("weight_eval_scale", "td", 0.0, scaled), row("weight", "td", 0.7, td70),
            row("weight", "td", 0.8, 19 + seed), row("valid", "td", 0.8, 40, subset="valid")])
    fake_job(tmp_path, ["model=td_rescale", "seed=1"], [row("weight", "td_rescale", 0.8, 30)])  # one seed only
    for path in tmp_path.glob("*/result.json"):
        result = json.loads(path.read_text())
        result["config"] = {"targets": targets, "versus": spec}
        path.write_text(json.dumps(result))
    text = write_report(str(tmp_path))[1]
    assert "| td (weight) | 0 % | 2 | 17.00 ± 0.00 | 0.810 ± 0.000 | 0.9 | no (short by 0.090) |" in text
    assert "| td (weight_eval_scale) | 0 % | 2 | 19.00 ± 1.41 | 0.905 ± 0.067 | 0.9 | yes |" in text
    assert "| td_rescale (weight) | 0 % | 0 | not measured | | 0.9 | no |" in text
    # 70 %: td 20 ± 1.41 against 17 ± 1.41, margin 3 above 2.83; 80 %: the one-seed 30 is passed over
    assert "| 70 % | td (weight) | 20.00 ± 1.41 | 17.00 ± 1.41 | 3.00 | 2.83 | yes |" in text
    assert "| 80 % | td (weight) | 20.50 ± 0.71 | 13.00 ± 1.41 | 7.50 | 2.12 | yes |" in text
    assert "Best TD row among those with the most seeds" in text  # the header says why 30 lost
    assert text.count("### valid ") == 1  # BLEU on val is no retention of no_td's BLEU on test
    # the best one-shot row: the one-seed 30 leads with its seed count shown; val's 40 is no test row
    best = text.split("## The best one-shot row per level")[1].split("## Validation")[0]
    assert ("| 80 % | td_rescale (weight) | 1 | 30.00 | td (weight) | 2 | 20.50 ± 0.71 | 9.50 | ? + 0.71 | "
            "unknown: one seed, margin above the other's spread |") in best
    assert "40.00" not in best


def test_a_lead_counts_only_beyond_the_seeds_spread():
    three, one = {"mean": 37.40, "std": 0.24, "n": 3}, {"mean": 37.56, "std": None, "n": 1}
    assert lead(one, three) == "no (one seed)"  # 0.16 is inside td's own spread, whatever the one seed's
    assert lead({"mean": 38.0, "std": None, "n": 1}, three) == "unknown: one seed, margin above the other's spread"
    assert lead(one, {"mean": 37.0, "std": None, "n": 1}) == "unknown: one seed each"
    assert lead({"mean": 38.0, "std": 0.3, "n": 3}, three) == "yes"
    assert lead({"mean": 37.9, "std": 0.3, "n": 3}, three) == "no"


def test_a_target_over_variants_is_judged_by_the_one_val_chooses_not_the_best_on_test(tmp_path):
    targets = [{"model": ["td", "td_rescale"], "evaluations": ["weight", "weight_eval_scale"], "level": 0.0,
                "ratio": 0.95, "on_val": {"weight": "valid", "weight_eval_scale": "valid_eval_scale"}}]
    fake_job(tmp_path, ["model=no_td", "seed=1"], [row("weight", "no_td", 0.0, 20)])
    for label, (plain, scaled, val_plain, val_scaled) in {"td": (17, 19.5, 18, 17.5),
                                                          "td_rescale": (18, 18.5, 18.2, 18.1)}.items():
        fake_job(tmp_path, [f"model={label}", "seed=1"], [
            row("weight", label, 0.0, plain), row("weight_eval_scale", label, 0.0, scaled),
            row("valid", label, 0.0, val_plain, subset="valid"),
            row("valid_eval_scale", label, 0.0, val_scaled, subset="valid")])
    for path in tmp_path.glob("*/result.json"):
        path.write_text(json.dumps(dict(json.loads(path.read_text()), config={"targets": targets})))
    text = write_report(str(tmp_path))[1]
    assert "| td (weight_eval_scale) | 0 % | 1 | 19.50 | 0.975 | 0.95 | yes |" in text  # best on test: not the verdict
    assert ("| **chosen on val**: td_rescale (weight; val 18.20) | 0 % | 1 | 18.00 | 0.900 | 0.95 | "
            "no (short by 0.050) |") in text


def test_a_miss_that_rounds_to_zero_still_says_by_how_much():
    # td + SparseGPT on the eval-scaled model at 70 %, seed 1: 37.64 / 38.81 = 0.96985
    row_text = target_row({"level": 0.7, "ratio": 0.97}, "td", {"mean": 37.64, "std": None, "n": 1}, 38.81, {}, [])
    assert row_text == "| td | 70 % | 1 | 37.64 | 0.970 | 0.97 | no (short by 1.5e-04) |"


def test_a_target_that_must_also_beat_another_model(tmp_path):
    targets = [{"model": "td", "level": 0.9, "ratio": 0.5, "above": "gmp"},
               {"model": "td", "level": 0.8, "ratio": 0.5, "above": "gmp"},
               {"model": "td", "level": 0.7, "ratio": 0.5, "above": "gmp"}]
    fake_job(tmp_path, ["model=no_td", "seed=1"], [row("weight", "no_td", 0.0, 20)])
    fake_job(tmp_path, ["model=td", "seed=1"], [row("weight", "td", level, bleu) for level, bleu in
                                                ((0.7, 15), (0.8, 12), (0.9, 11))])
    fake_job(tmp_path, ["model=gmp", "seed=1"], [row("weight", "gmp", level, bleu) for level, bleu in
                                                 ((0.8, 14), (0.9, 9))])
    for path in tmp_path.glob("*/result.json"):
        path.write_text(json.dumps(dict(json.loads(path.read_text()), config={"targets": targets})))
    text = write_report(str(tmp_path))[1]
    assert "| td | 90 % | 1 | 11.00 | 0.550 | 0.5, above gmp | yes (above gmp (weight, 9.00) by 2.00) |" in text
    assert "| td | 80 % | 1 | 12.00 | 0.600 | 0.5, above gmp | no (below gmp (weight, 14.00) by 2.00) |" in text
    assert "| td | 70 % | 1 | 15.00 | 0.750 | 0.5, above gmp | no (gmp not measured) |" in text


def test_the_model_to_beat_may_be_a_job_named_apart_by_an_override(tmp_path):
    targets = [{"model": "td", "level": 0.9, "ratio": 0.5, "above": "gmp"}]
    fake_job(tmp_path, ["model=no_td", "seed=1"], [row("weight", "no_td", 0.0, 20)])
    fake_job(tmp_path, ["model=td", "seed=1"], [row("weight", "td", 0.9, 11)])
    fake_job(tmp_path, ["model=gmp", "seed=1", "precision=fp32"], [row("weight", "gmp", 0.9, 12)])
    fake_job(tmp_path, ["model=gmpx", "seed=1"], [row("weight", "gmpx", 0.9, 5)])  # another label, not gmp
    for path in tmp_path.glob("*/result.json"):
        path.write_text(json.dumps(dict(json.loads(path.read_text()), config={"targets": targets})))
    text = write_report(str(tmp_path))[1]
    assert "| no (below gmp precision=fp32 (weight, 12.00) by 1.00) |" in text


def test_a_setting_named_apart_is_read_against_its_own_no_td(tmp_path):
    targets = [{"model": "td", "level": 0.7, "ratio": 0.9}]
    for seed, dense in ((1, 20), (2, 22)):
        fake_job(tmp_path, ["model=no_td", f"seed={seed}"], [
            row("weight", "no_td", 0.0, dense), row("weight", "no_td", 0.5, 18),
            row("pattern_2_4", "no_td", 0.5, 17, pattern="2:4")])
    fake_job(tmp_path, ["model=no_td", "seed=1", "precision=fp32"], [
        row("weight", "no_td", 0.0, 20.5), row("weight", "no_td", 0.5, 17),
        row("pattern_2_4", "no_td", 0.5, 16, pattern="2:4"), row("weight", "no_td", 0.9, 1)])  # 90 %: no plain twin
    fake_job(tmp_path, ["model=td", "seed=1", "precision=fp32"], [row("weight", "td", 0.7, 19)])
    for path in tmp_path.glob("*/result.json"):
        path.write_text(json.dumps(dict(json.loads(path.read_text()), config={"targets": targets})))
    text = write_report(str(tmp_path))[1]
    controls = text.split("## Controls (a setting named apart, against no_td)")[1].split("\n## ")[0]
    assert [line for line in controls.splitlines() if line.startswith("| ")][1:] == [
        "| weight | 0 % | 21.00 ± 1.41 | 20.50 | -0.50 | 1.41 |",
        "| weight | 50 % | 18.00 ± 0.00 | 17.00 | -1.00 | 0.00 |",
        "| pattern_2_4 | 2:4 | 17.00 ± 0.00 | 16.00 | -1.00 | 0.00 |"]
    # the verdict stays over the plain no_td (19 / 21); the own control's retention is beside it (19 / 20.5)
    assert ("| td precision=fp32 | 70 % | 1 | 19.00 | 0.905 | 0.9 | yes (over no_td precision=fp32's dense 20.50: "
            "0.927) |") in text


def test_a_controls_validation_curve_is_read_against_its_twin_and_the_seeds_spread(tmp_path):
    for seed, curve in ((1, ((12, 6.0), (24, 5.5), (36, 5.2))), (2, ((12, 6.1), (24, 5.5), (36, 5.25)))):
        fake_job(tmp_path, ["model=no_td", f"seed={seed}"], [row("weight", "no_td", 0.0, 20)], curve=curve)
    # epoch by epoch against seed 1: +0.05 (spread 0.1: inside), +0.02 (spread 0: outside), -0.04 (0.05: inside)
    fake_job(tmp_path, ["model=no_td", "seed=1", "precision=fp32"], [row("weight", "no_td", 0.0, 19)],
             curve=((12, 6.05), (24, 5.52), (36, 5.16)))
    text = write_report(str(tmp_path))[1]
    assert ("Validation loss, no_td precision=fp32 seed 1 minus no_td seed 1 at the same epoch: -0.040 to +0.050 "
            "over 3 epochs (the last -0.040); no_td's seeds lie 0.000-0.100 apart at an epoch, and the difference "
            "is inside that spread at 2 of 3 epochs.") in text


def test_jobs_finished_on_another_machine_are_read_from_their_committed_copies(tmp_path):
    old, new = tmp_path / "old", tmp_path / "new"
    done = fake_job(old, ["model=no_td", "seed=1", "updates=30"], [row("weight", "no_td", 0.0, 20.0)])
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    (jobs / f"{done.name}.json").write_text((done / "result.json").read_text())
    (jobs / f"budget_{done.name}.json").write_text((done / "result.json").read_text())  # another study's copy
    (new / "multirun.yaml").parent.mkdir()
    (new / "multirun.yaml").write_text(f"hydra:\n  sweeper:\n    params:\n      model: no_td,td\n      seed: 1\n"
                                       f"  overrides:\n    task: [updates=30]\nfinished: {jobs}\n")
    fake_job(new, ["model=td", "seed=1", "updates=30"])  # running on the new machine
    out, text, problems = write_report(str(new))  # the launch's finished= folder
    assert text.startswith(f"# Study {new}: 1 jobs done, 1 not") and "| 0 % | 20.00 |" in text
    assert [what.split(":")[0] for _, what in problems] == ["unfinished"]  # no_td is not "missing"
    assert "20.00" not in write_report(str(new), finished=str(tmp_path / "old"))[1]  # no JOB.json there
    with pytest.raises(UserError, match="no folder of finished jobs"):
        write_report(str(new), finished=str(tmp_path / "nowhere"))
    (jobs / "broken.json").write_text("{")
    with pytest.raises(UserError, match="broken.json: not JSON"):
        write_report(str(new))


def test_the_latest_launch_targets_win_over_those_the_first_job_ran_with(tmp_path):
    fake_job(tmp_path, ["model=no_td", "seed=1"], [row("weight", "no_td", 0.0, 20)])  # config: TARGETS
    fake_job(tmp_path, ["model=td", "seed=1"], [row("weight", "td", 0.8, 12), row("sparsegpt", "td", 0.8, 15)])
    fake_job(tmp_path, ["model=gmp", "seed=1"], [row("weight", "gmp", 0.8, 14)])
    (tmp_path / "multirun.yaml").write_text(
        "hydra:\n  sweeper:\n    params: null\n  overrides:\n    task: []\nbest: [weight, sparsegpt]\n"
        "targets:\n- {model: td, level: 0.8, ratio: 0.5, above: gmp, evaluations: '${best}'}\n")
    text = write_report(str(tmp_path))[1]
    assert "| td | 70 % |" not in text  # TARGETS, which the jobs ran with, are not checked
    # gmp has no SparseGPT row: its best row, by magnitude, is what each of td's rows has to beat
    assert "| td (weight) | 80 % | 1 | 12.00 | 0.600 | 0.5, above gmp | no (below gmp (weight, 14.00) by 2.00) |" \
        in text
    assert "| td (sparsegpt) | 80 % | 1 | 15.00 | 0.750 | 0.5, above gmp | yes (above gmp (weight, 14.00) by 1.00) |" \
        in text


def test_failed_unfinished_and_missing_jobs_are_named_and_the_rest_reported(tmp_path):
    (tmp_path / "multirun.yaml").write_text("hydra:\n  sweeper:\n    params:\n      model: no_td,td\n      seed: 1,2\n"
                                            "  overrides:\n    task: [updates=30]\n")
    fake_job(tmp_path, ["model=no_td", "seed=1", "updates=30"], [row("weight", "no_td", 0.0, 20.0)])
    fake_job(tmp_path, ["model=no_td", "seed=2", "updates=30"], failed="training exited with status 1: see LOG")
    unfinished = fake_job(tmp_path, ["model=td", "seed=1", "updates=30"])
    result = subprocess.run([sys.executable, f"{REPO}/scripts/study_report.py", str(tmp_path), "--out",
                             str(tmp_path / "docs")], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == [
        "study_report.py: warning: model=no_td,seed=2,updates=30: failed: training exited with status 1: see LOG",
        f"study_report.py: warning: model=td,seed=1,updates=30: unfinished: no result.json (running, or stopped: "
        f"see {unfinished})",
        "study_report.py: warning: model=td,seed=2,updates=30: missing: never started"]
    tables = (tmp_path / "docs" / "tables.md").read_text()
    assert "1 jobs done, 3 not" in tables and "| 0 % | 20.00 |" in tables and "| seeds | 1 |" in tables


def test_an_unfinished_job_says_where_its_training_stands(tmp_path):
    """The update it reached, and the save a rerun resumes from (fairseq's lines, --log-format simple)."""
    def job(seed, log, trained=False):
        folder = fake_job(tmp_path, ["model=td", f"seed={seed}", "updates=30"])
        (folder / ".hydra" / "config.yaml").write_text("updates: 30\n")
        (folder / "train.log").write_text(log)
        if trained:
            (folder / "train.json").write_text("{}")

    step = "2026-12-07 01:00:00 | INFO | train_inner | epoch 001:     12 / 12 loss=4.1, num_updates={}, lr=0.001\n"
    saved = ("2026-12-07 01:00:01 | INFO | fairseq.checkpoint_utils | Saved checkpoint /a b/checkpoint_best.pt "
             "(epoch 1 @ 12 updates, score 4.2) (writing took 0.2 seconds)\n")
    job(1, "$ fairseq-train ...\n")
    job(2, step.format(12))
    job(3, step.format(12) + saved + step.format(20))
    job(4, step.format(12) + saved + step.format(30), trained=True)
    _, _, problems = write_report(str(tmp_path))
    assert [what.split(" no result.json")[0] for _, what in problems] == [
        "unfinished:", "unfinished: at update 12 of 30, not saved yet;",
        "unfinished: at update 20 of 30, saved at update 12 (epoch 1);", "unfinished: trained (30 updates), evaluating;"]


def test_an_unfinished_job_gives_its_latest_sessions_pace(tmp_path):
    """Updates per second since the last resume (an earlier session on another machine ran at
    another pace) and the hours of training that leaves."""
    folder = fake_job(tmp_path, ["model=td", "seed=1", "updates=3620"])
    (folder / ".hydra" / "config.yaml").write_text("updates: 3620\n")
    step = "2026-12-07 {} | INFO | train_inner | epoch 001:     1 / 9 loss=4.1, num_updates={}, lr=0.001\n"
    (folder / "train.log").write_text(
        "$ fairseq-train ...\n" + step.format("00:00:00", 10) + step.format("00:00:01", 12)
        + "$ fairseq-train ...\n" + step.format("02:00:00", 12) + step.format("02:00:16", 20))
    _, _, problems = write_report(str(tmp_path))
    assert problems[0][1].startswith(
        "unfinished: at update 20 of 3620 (0.50 updates/s lately: about 2.0 h of training left), not saved yet;")


def test_a_grid_names_each_value_and_leaves_out_what_every_job_shares():
    results = [dict(label="l1", overrides=["model=l1", "model.coef=1e-6", "seed=1", "updates=30"]),
               dict(label="l1", overrides=["model=l1", "model.coef=1e-5", "seed=1", "updates=30"]),
               dict(label="no_td", overrides=["model=no_td", "seed=2", "updates=30"])]
    name_jobs(results)
    assert [r["name"] for r in results] == ["l1 model.coef=1e-6", "l1 model.coef=1e-5", "no_td"]
    # seeds launched with and without finished= (hydra's exclude_keys: it changes no job) are one model
    results = [dict(label="td", overrides=["model=td", "seed=1", "updates=30"]),
               dict(label="td", overrides=["finished=docs/jobs", "model=td", "seed=2", "updates=30"])]
    name_jobs(results, {"finished"})
    assert [r["name"] for r in results] == ["td", "td"]


def test_jobs_launched_with_keys_that_name_no_job_are_seeds_of_one_model(tmp_path):
    (tmp_path / "multirun.yaml").write_text(
        "hydra:\n  sweeper:\n    params:\n      seed: 1,2\n  overrides:\n    task: [model=td, finished=jobs]\n"
        "  job:\n    config:\n      override_dirname:\n        exclude_keys: [finished]\n")
    fake_job(tmp_path, ["model=td", "seed=1"], [row("weight", "td", 0.0, 20)])  # before finished= existed
    fake_job(tmp_path, ["model=td", "seed=2", "finished=jobs"], [row("weight", "td", 0.0, 22)])
    out, text, problems = write_report(str(tmp_path))
    assert problems == [] and "| 0 % | 21.00 ± 1.41 |" in text


def test_a_folder_without_jobs_is_one_error(tmp_path):
    with pytest.raises(UserError, match="holds no study job"):
        write_report(str(tmp_path))
    result = subprocess.run([sys.executable, f"{REPO}/scripts/study_report.py", str(tmp_path / "nowhere")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert result.stderr == f"study_report.py: error: no study folder {tmp_path / 'nowhere'}\n"
