"""td_fairseq/study/job.py: the recipe's flags, the data made once, the log's curve, and a
job killed mid-training that resumes from its checkpoint."""
import os
import re
import signal
import subprocess
import sys
import threading
import time

import pytest

from td_fairseq.study import job

from ..conftest import REPO

CONF = os.path.join(REPO, "td_fairseq", "study", "conf")
STUDY = os.path.join(REPO, "scripts", "study.py")


def compose(name, *overrides):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    job.register_resolvers()  # (conftest.py puts hydra's process-wide version base back after each test)
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return hydra_compose(config_name=name, overrides=list(overrides))


def options(flags):
    """{flag: value or None}: order-free, as argparse reads them."""
    found, i = {}, 0
    while i < len(flags):
        has_value = i + 1 < len(flags) and not flags[i + 1].startswith("--")
        found[flags[i]] = flags[i + 1] if has_value else None
        i += 2 if has_value else 1
    return found


# docs/RESULTS.md §6 and §8 trained with benchmarks/multi30k.sh (UPDATES=650, RAMPS=200 chosen on val):
# its common flags, and the recipes that the YAML computes rather than copies
MULTI30K_SH = ("--task translation --arch transformer_td --share-all-embeddings --encoder-layers 3 "
               "--decoder-layers 3 --encoder-embed-dim 256 --decoder-embed-dim 256 --encoder-ffn-embed-dim 512 "
               "--decoder-ffn-embed-dim 512 --encoder-attention-heads 4 --decoder-attention-heads 4 --dropout 0.3 "
               "--criterion label_smoothed_cross_entropy_td --label-smoothing 0.1 --optimizer adam "
               "--adam-betas (0.9,0.98) --lr 1e-3 "
               "--lr-scheduler inverse_sqrt --warmup-updates 400 --max-tokens 4096 --seed 1 --num-workers 0 "
               "--no-epoch-checkpoints --log-format simple --log-interval 50 --max-update 650 --cpu")
RECIPES = {
    "gmp": "--sparsity-method gmp --gmp-sparsity 0.9 --gmp-start 130 --gmp-interval 25 --gmp-steps 13",
    "ramping_td_90": "--td-type weight --td-gamma 0.90 --td-alpha 0.99 --td-eval-mask --td-ramp-updates 200",
    "dropout": "--sparsity-method dropout --drop-rate 0.495",
    "l0": "--sparsity-method l0 --l0-form weight --l0-coef 1e-06",
    "td": "--td-type weight --td-gamma 0.75 --td-alpha 0.66",
}


@pytest.mark.parametrize("model", sorted(RECIPES))
def test_the_650_update_config_trains_with_the_flags_of_results_sections_6_and_8(model):
    flags = job.train_flags(compose("multi30k_650", f"model={model}"), 1)
    flags = [f.replace(" ", "") if f.startswith("(") else f for f in flags]
    assert options(flags) == options((MULTI30K_SH + " " + RECIPES[model]).split())


def test_variants_add_their_flag_and_a_grid_sets_one_coefficient():
    assert options(job.train_flags(compose("multi30k", "model=td_rescale", "updates=100"), 2))["--td-rescale"] is None
    assert options(job.train_flags(compose("multi30k", "model=td_k10", "updates=100"), 2))["--td-mask-interval"] == "10"
    flags = options(job.train_flags(compose("multi30k", "model=l1", "model.coef=1e-4", "updates=100"), 3))
    assert (flags["--l1-coef"], flags["--seed"]) == ("0.0001", "3")


def test_budget_mode_trains_to_patience_and_keeps_epoch_checkpoints():
    flags = options(job.train_flags(compose("multi30k_budget", "model=no_td"), 1))
    assert (flags["--max-epoch"], flags["--patience"]) == ("40", "5")
    assert "--max-update" not in flags and "--no-epoch-checkpoints" not in flags


def test_bf16_and_a_bad_precision():
    assert "--bf16" in job.train_flags(compose("smoke", "precision=bf16"), 1)
    with pytest.raises(job.JobFailed, match="precision fp8"):
        job.train_flags(compose("smoke", "precision=fp8"), 1)


def test_a_bf16_job_on_a_cpu_that_emulates_bf16_fails_before_training(tmp_path, monkeypatch):
    from td_fairseq import precision
    monkeypatch.setattr(precision, "bf16_slow_reason", lambda device: "this CPU has no native bf16 instructions")
    monkeypatch.setattr(job, "_run", lambda *a: pytest.fail("fairseq-train started"))
    with pytest.raises(job.JobFailed, match="no native bf16 instructions; train with precision=fp32"):
        job.train(compose("smoke", "precision=bf16"), str(tmp_path), str(tmp_path / "save"), [], 10)
    assert not (tmp_path / "save").exists()
    monkeypatch.setattr(job, "_run", lambda *a: 1)  # fp32 is not refused: it reaches fairseq-train
    with pytest.raises(job.JobFailed, match="training exited with status 1"):
        job.train(compose("smoke", "precision=fp32"), str(tmp_path), str(tmp_path / "save"), [], 10)


LOG = ("2026-12-05 | INFO | valid | epoch 001 | valid on 'valid' subset | loss 5.942 | nll_loss 5.787 | "
       "td_gamma 0.75 | ppl 55.22 | wps 0 | num_updates 12\n"
       "2026-12-05 | INFO | train_inner | epoch 002:      3 / 12 loss=5.8, ppl=50, num_updates=15\n"
       "2026-12-05 | INFO | valid | epoch 002 | valid on 'valid' subset | loss 5.5 | nll_loss 5.4 | ppl 45.25 | "
       "wps 0 | num_updates 24 | best_loss 5.5\n")


def test_the_validation_curve_and_the_updates_of_a_log():
    assert job.valid_curve(LOG) == [dict(epoch=1, updates=12, loss=5.942, ppl=55.22),
                                    dict(epoch=2, updates=24, loss=5.5, ppl=45.25)]
    assert job.updates_done(LOG) == 24 and job.updates_done("") == 0


def test_training_seconds_add_up_every_session_of_a_resumed_log():
    log = ("\n$ python -m fairseq_cli.train ...\n2026-12-05 10:00:00 | INFO | start\n"
           "2026-12-05 10:30:00 | INFO | train_inner | wall=1800\n"  # killed here; resumed two hours later
           "\n$ python -m fairseq_cli.train ...\n2026-12-05 12:30:00 | INFO | start\n"
           "2026-12-05 12:45:30 | INFO | done training in 930.0 seconds\n")
    assert job.logged_seconds(log) == 1800 + 930 and job.logged_seconds("") == 0


def test_multi30k_data_links_only_train_val_and_test_2016(tmp_path):
    source = tmp_path / "m30k"
    source.mkdir()
    for name in ("train", "val", "test_2016_flickr", "test_2017_flickr", "test_2017_mscoco", "test_2018_flickr"):
        for lang in ("en", "de"):
            (source / f"{name}.{lang}").write_text("x\n")
    raw = job._raw(compose("multi30k", f"data.source={source}").data, str(tmp_path))
    linked = {name: os.path.basename(os.readlink(os.path.join(raw, name))) for name in os.listdir(raw)}
    assert linked == {f"{split}.{lang}": f"{name}.{lang}" for split, name in job.SPLITS for lang in ("en", "de")}
    (source / "val.de").unlink()
    with pytest.raises(job.JobFailed, match="no val.de"):
        job._raw(compose("multi30k", f"data.source={source}").data, str(tmp_path / "other"))
    with pytest.raises(job.JobFailed, match="no Multi30k at"):
        job._raw(compose("multi30k", f"data.source={tmp_path / 'nowhere'}").data, str(tmp_path / "other"))
    assert not (tmp_path / "other").exists()


def test_jobs_starting_at_once_prepare_the_data_once(tmp_path, monkeypatch):
    calls = []

    def slow_prepare(raw, dest, vocab, log):
        calls.append(raw)
        time.sleep(0.5)
        os.makedirs(os.path.join(dest, "bin"))

    monkeypatch.setattr("td_fairseq.tools.prepare.prepare", slow_prepare)
    cfg = compose("smoke")
    threads = [threading.Thread(target=job.prepare_data, args=(cfg, str(tmp_path))) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and sorted(os.listdir(tmp_path / "raw")) == [f"{s}.{l}" for s in ("test", "train", "valid")
                                                                        for l in ("de", "en")]


def study(sweep, *overrides, **kwargs):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, STUDY, "-m", "--config-name", "smoke", f"hydra.sweep.dir={sweep}",
                             *overrides], env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, **kwargs)


def test_a_job_killed_mid_training_resumes_from_its_checkpoint(tmp_path):
    overrides = ("model=no_td", "seed=1", "updates=96")
    folder = tmp_path / "model=no_td,seed=1,updates=96"  # hydra.job.override_dirname
    process = study(tmp_path, *overrides, start_new_session=True)
    log = folder / "train.log"
    deadline = time.time() + 300
    while "Saved checkpoint" not in (log.read_text() if log.exists() else ""):  # fairseq's copies are done
        assert process.poll() is None and time.time() < deadline, process.stdout.read()
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)  # the launcher and the trainer, as a preempted node
    process.wait()
    first = job.updates_done(log.read_text())
    assert 12 <= first < 96 and not (folder / "result.json").exists()

    rerun = study(tmp_path, *overrides)
    output = rerun.communicate(timeout=600)[0]
    assert rerun.returncode == 0, output[-3000:]
    second = log.read_text().rsplit("\n$ ", 1)[1]
    resumed = int(re.search(r"Loaded checkpoint .* \(epoch \d+ @ (\d+) updates\)", second).group(1))
    assert 12 <= resumed <= first and job.updates_done(second) == 96
    assert min(int(u) for u in re.findall(r"num_updates[ =](\d+)", second)) > resumed  # went on, not restarted
    import json
    result = json.loads((folder / "result.json").read_text())
    assert result["updates"] == 96 and result["curve"][0]["updates"] == 12 and result["curve"][-1]["updates"] == 96


def test_one_job_through_submitit_local_with_a_prune_then_fine_tune(tmp_path):
    process = study(tmp_path, "hydra/launcher=submitit_local", "model=no_td", "seed=2",
                    "finetune={models:[no_td],levels:[0.5],fraction:0.25,flags:'--lr 1e-3'}")
    output = process.communicate(timeout=600)[0]
    assert process.returncode == 0, output[-3000:]
    import json
    [folder] = tmp_path.glob("finetune=*,model=no_td,seed=2")
    result = json.loads((folder / "result.json").read_text())
    assert (result["label"], result["seed"], result["updates"]) == ("no_td", 2, 36)
    assert (tmp_path / ".submitit").is_dir()
    assert [(r["evaluation"], r["requested_sparsity"]) for r in result["rows"]] == [
        ("weight", 0.0), ("weight", 0.5), ("weight", 0.9), ("finetune_50", 0.5)]
    assert "--freeze-mask" in (folder / "finetune_50" / "train.log").read_text()
    assert job.updates_done((folder / "finetune_50" / "train.log").read_text()) == 9  # a quarter of 36
    from td_fairseq.files import load_torch
    pruned = load_torch(str(folder / "finetune_50" / "pruned" / "sparsity_0.50.pt"))["model"]
    tuned = load_torch(str(folder / "finetune_50" / "checkpoint_last.pt"))["model"]
    matrices = [k for k, v in pruned.items() if v.dim() == 2 and ".layers." in k]
    # the zeros stay where pruning put them, so sweeping at the level prunes exactly those again
    assert matrices and all(((pruned[k] == 0) == (tuned[k] == 0)).all() for k in matrices)
    assert any((pruned[k] != tuned[k]).any() for k in matrices)
    assert result["rows"][-1]["measured_sparsity"] == 0.5


def test_the_budget_study_evaluates_dense_bleu_only():
    cfg = compose("multi30k_budget")
    assert {name: spec.flags for name, spec in cfg.evaluations.items() if spec} == {"weight": "--sparsity 0"}
    assert cfg.finetune is None and cfg.budget.patience == 5


def test_the_study_fine_tunes_no_td_seed_1_only():
    cfg = compose("multi30k", "updates=100")
    assert [(label, seed) for label in ("no_td", "td") for seed in (1, 2, 3) if job.finetunes(cfg, label, seed)] == [
        ("no_td", 1)]
    assert job.finetunes(compose("smoke", "finetune={models:[td],levels:[0.5],fraction:0.5}"), "td", 2)


def test_a_finished_job_runs_only_the_evaluations_its_result_lacks(tmp_path, monkeypatch):
    import json
    folder, overrides = tmp_path / "model=td,seed=1", ["model=td", "seed=1", "updates=12"]
    first = job.run(compose("smoke", *overrides), "td", 1, overrides, str(folder), str(tmp_path))
    commands, run = [], job._run
    monkeypatch.setattr(job, "_run", lambda command, *args: commands.append(command) or run(command, *args))
    monkeypatch.setattr(job, "git_commit", lambda: "later")  # the job keeps the commit that trained it
    wider = compose("smoke", *overrides, "+evaluations.more={flags: --sparsity 0.7}")
    second = job.run(wider, "td", 1, overrides, str(folder), str(tmp_path))
    assert [os.path.basename(c[1]) for c in commands] == ["bleu_vs_sparsity.py"] * 2  # no training
    assert second["rows"][:3] == first["rows"] and second["curve"] == first["curve"]
    assert second["commit"] == first["commit"] != "later"
    assert [(r["evaluation"], r["requested_sparsity"]) for r in second["rows"][3:]] == [("more", 0.7)]
    assert json.loads((folder / "result.json").read_text())["rows"] == second["rows"]
    commands.clear()
    assert job.run(wider, "td", 1, overrides, str(folder), str(tmp_path)) == second and commands == []


def test_every_study_job_is_pruned_by_magnitude_and_sparsegpt_unstructured_and_2_4_td_ones_also_eval_scaled():
    cfg = compose("multi30k", "updates=100")
    for label in ("no_td", "td", "ramping_td_90", "gmp", "l0", "unit_td"):
        names = job.wanted(cfg, label, 2)
        assert {"weight", "sparsegpt", "pattern_2_4", "pattern_2_4_sparsegpt"} <= set(names), label
        assert ("unit" in names) == (label in ("no_td", "unit_td")) and not any("finetune" in n for n in names)
        scaled = {n for n in names if n.endswith("eval_scale")}  # TD models are also pruned as their eval-scaled net
        assert scaled == (set() if label in ("no_td", "gmp", "l0") else {
            "valid_eval_scale", "weight_eval_scale", "sparsegpt_eval_scale", "pattern_2_4_eval_scale",
            "pattern_2_4_sparsegpt_eval_scale"} | ({"unit_eval_scale"} if label == "unit_td" else set())), label
    assert job.wanted(cfg, "no_td", 1)[-2:] == ["finetune_80", "finetune_90"]


def test_finished_jobs_are_kept_in_a_folder_and_a_new_machine_takes_them_from_it(tmp_path, monkeypatch):
    import json
    overrides = ["model=no_td", "seed=1", "updates=12"]
    kept = tmp_path / "kept"  # the project's docs/.../jobs, committed
    cfg = compose("smoke", *overrides, f"finished={kept}")
    first = job.run(cfg, "no_td", 1, overrides, str(tmp_path / "a" / "model=no_td,seed=1"), str(tmp_path / "a"))
    assert json.loads((kept / "model=no_td,seed=1.json").read_text()) == first

    def refuse(*args, **kwargs):
        raise AssertionError(f"a finished job started {args[0]}")

    monkeypatch.setattr(job, "_run", refuse)  # a fresh sweep folder, as on a replaced machine: nothing runs
    monkeypatch.setattr(job, "prepare_data", refuse)
    folder = tmp_path / "b" / "model=no_td,seed=1"
    assert job.run(cfg, "no_td", 1, overrides, str(folder), str(tmp_path / "b")) == first
    assert json.loads((folder / "result.json").read_text()) == first
    # an evaluation added since cannot run without the checkpoint: the result is kept as it is
    wider = compose("smoke", *overrides, f"finished={kept}", "+evaluations.more={flags: --sparsity 0.7}")
    assert job.run(wider, "no_td", 1, overrides, str(folder), str(tmp_path / "b")) == first


def test_a_job_another_process_is_running_is_skipped_and_its_folder_left_alone(tmp_path, monkeypatch, capsys):
    import fcntl

    def refuse(*args, **kwargs):
        raise AssertionError("a job held by another process did work")

    monkeypatch.setattr(job, "_run", refuse)
    monkeypatch.setattr(job, "prepare_data", refuse)
    overrides = ["model=no_td", "seed=1", "updates=12"]
    folder = tmp_path / "model=no_td,seed=1"
    folder.mkdir()
    with open(folder / ".job.lock", "w") as held:  # as the launch that runs it holds it
        fcntl.flock(held, fcntl.LOCK_EX)
        assert job.run(compose("smoke", *overrides), "no_td", 1, overrides, str(folder), str(tmp_path)) is None
    assert "skipped, another process is running it" in capsys.readouterr().out
    assert sorted(os.listdir(folder)) == [".job.lock"]
    with pytest.raises(AssertionError, match="did work"):  # released: the job runs
        job.run(compose("smoke", *overrides), "no_td", 1, overrides, str(folder), str(tmp_path))


def test_a_job_names_the_commit_it_started_on_not_one_made_while_it_ran(tmp_path, monkeypatch):
    head, real_train = {"commit": "at start"}, job.train

    def train(*args):
        head["commit"] = "made while it trained"
        return real_train(*args)

    monkeypatch.setattr(job, "git_commit", lambda: head["commit"])
    monkeypatch.setattr(job, "train", train)
    overrides = ["model=no_td", "seed=1", "updates=12"]
    result = job.run(compose("smoke", *overrides), "no_td", 1, overrides, str(tmp_path / "j"), str(tmp_path))
    assert result["commit"] == "at start"
