import csv
import json
import os

import pytest
import torch

from ..conftest import run_cli
from .conftest import load_script, make_image_folder

vision_train = load_script("vision_train")
accuracy_vs_sparsity = load_script("accuracy_vs_sparsity")
dependence_analysis = load_script("dependence_analysis")

TINY = ["--dataset", "digits", "--blocks", "1", "--widths", "4", "8", "8", "--epochs", "1", "--quiet"]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ckpt")
    paths = {}
    for name, td in (("none", ["--td-type", "none"]),
                     ("ramp", ["--td-type", "weight", "--td-gamma", "0.5", "--td-alpha", "0.5",
                               "--td-ramp-updates", "3", "--td-eval-mask"])):
        paths[name] = str(folder / name / f"{name}.pt")  # the folder is created on success
        assert vision_train.main(TINY + td + ["--out", paths[name]]) == 0
    return paths


def test_train_writes_a_tensors_only_checkpoint(checkpoints):
    checkpoint = torch.load(checkpoints["ramp"], weights_only=True)  # no allow-list needed
    assert checkpoint["arch"] == {"name": "resnet32", "blocks": 1, "widths": [4, 8, 8], "in_channels": 1,
                                  "num_classes": 10}
    assert checkpoint["td"]["gamma"] == 0.5 and checkpoint["td"]["eval_mask"]
    assert len(checkpoint["metrics"]["td_modules"]) == 8
    assert checkpoint["metrics"]["test_accuracy_as_configured"] == checkpoint["metrics"]["test_accuracy_eval_mask"]
    assert checkpoint["history"][0]["updates"] == 12
    assert checkpoint["command"].endswith("--td-eval-mask --out " + checkpoints["ramp"]) and checkpoint["commit"]
    assert torch.load(checkpoints["none"], weights_only=True)["metrics"]["test_accuracy_eval_mask"] is None


def test_sweep_writes_results_and_plot(checkpoints, tmp_path):
    out = tmp_path / "sweep"
    argv = ["--checkpoint", checkpoints["none"], checkpoints["ramp"], "--label", "no TD", "TD",
            "--sparsity", "0", "0.5", "0.9", "--out", str(out)]
    assert accuracy_vs_sparsity.main(argv) == 0
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["label", "checkpoint", "mode", "scope", "requested_sparsity", "measured_sparsity",
                             "accuracy", "command", "commit"]
    assert [(r["label"], r["requested_sparsity"]) for r in rows] == [
        ("no TD", "0.0"), ("no TD", "0.5"), ("no TD", "0.9"), ("TD", "0.0"), ("TD", "0.5"), ("TD", "0.9")]
    assert all(r["mode"] == "weight" and r["scope"] == "unit" for r in rows)
    assert 0.85 < float(rows[2]["measured_sparsity"]) <= 0.9
    full = json.loads((out / "results.json").read_text())
    assert full[1]["per_layer_sparsity"]["stages.0.0.conv1.weight"] == pytest.approx(0.5, abs=0.03)
    assert (out / "accuracy_vs_sparsity.png").stat().st_size > 1000
    assert full[0]["bn_recalibration_images"] == 0


def test_sweep_with_bn_recalibration(checkpoints, tmp_path):
    out = tmp_path / "sweep"
    argv = ["--checkpoint", checkpoints["ramp"], "--sparsity", "0", "--bn-recalibrate", "200", "--out", str(out)]
    assert accuracy_vs_sparsity.main(argv) == 0
    row = json.loads((out / "results.json").read_text())[0]
    assert row["label"] == "ramp" and row["bn_recalibration_images"] == 200


def test_dependence_analysis_end_to_end(tmp_path):
    out = tmp_path / "dep"
    assert dependence_analysis.main(["--epochs", "3", "--out", str(out)]) == 0
    result = json.loads((out / "delta_e.json").read_text())
    for key in ("no_td", "td"):
        entry = result[key]
        assert entry["delta_e"] >= 0 and 0 <= entry["pruned_accuracy"] <= 100 and entry["accuracy"] > 50
        assert entry["removed_weights"] == 480 and entry["weights"] == 640  # 48 of 64 per hidden unit
    assert result["td"]["td"]["gamma"] == 0.75 and result["td"]["td"]["alpha"] == 0.5
    assert result["no_td"]["td"]["td_type"] == "none"
    assert (out / "delta_e.png").stat().st_size > 1000


def bad_inputs(tmp):
    ckpt = os.path.join(tmp, "missing.pt")
    return {
        "missing checkpoint": (accuracy_vs_sparsity, ["--checkpoint", ckpt, "--out", os.path.join(tmp, "o")],
                               "checkpoint not found"),
        "sparsity 1": (accuracy_vs_sparsity, ["--checkpoint", ckpt, "--sparsity", "0.5", "1.0",
                                              "--out", os.path.join(tmp, "o")], "sparsity must be in [0, 1)"),
        "missing cifar dir": (vision_train, ["--dataset", "cifar10", "--data-dir", os.path.join(tmp, "no_cifar"),
                                             "--out", os.path.join(tmp, "o", "c.pt")], "not found"),
        "gamma out of range": (vision_train, ["--td-gamma", "1.5", "--out", os.path.join(tmp, "o", "c.pt")],
                               "argument --td-gamma: expected a number in [0, 1], got '1.5'"),
        "dependence gamma": (dependence_analysis, ["--td-gamma", "-0.1", "--out", os.path.join(tmp, "o")],
                             "gamma"),
        "no out": (vision_train, ["--epochs", "1"], "--out"),
        "negative l1 coef": (vision_train, ["--sparsity-method", "l1", "--l1-coef", "-1",
                                            "--out", os.path.join(tmp, "o", "c.pt")],
                             "argument --l1-coef: expected a non-negative number, got '-1'"),
        "gmp sparsity 2": (vision_train, ["--sparsity-method", "gmp", "--gmp-sparsity", "2",
                                          "--out", os.path.join(tmp, "o", "c.pt")],
                           "argument --gmp-sparsity: expected a number in [0, 1], got '2'"),
        "unused bad option": (vision_train, ["--smallify-threshold", "0", "--out", os.path.join(tmp, "o", "c.pt")],
                              "argument --smallify-threshold: expected a positive number, got '0'"),
        "eval mask and eval scale": (vision_train, ["--td-eval-mask", "--td-eval-scale", "--out",
                                                    os.path.join(tmp, "o", "c.pt")], "give one of them"),
        "unknown method": (vision_train, ["--sparsity-method", "l2", "--out", os.path.join(tmp, "o", "c.pt")],
                           "invalid choice"),
        "unit scope": (accuracy_vs_sparsity, ["--checkpoint", ckpt, "--mode", "unit", "--scope", "global",
                                              "--out", os.path.join(tmp, "o")], "--scope layer"),
        "fp16 amp on the cpu": (vision_train, ["--amp", "fp16", "--device", "cpu", "--out", os.path.join(tmp, "o", "c.pt")],
                                "--amp fp16 is for CUDA devices; this run is on cpu: use --amp bf16 or none"),
        "width factor of resnet32": (vision_train, ["--width-factor", "2", "--out", os.path.join(tmp, "o", "c.pt")],
                                     "--width-factor does not apply to --arch resnet32"),
        "folder without root": (vision_train, ["--dataset", "folder", "--out", os.path.join(tmp, "o", "c.pt")],
                                "--dataset folder needs --data-dir ROOT"),
        "folder without train": (vision_train, ["--dataset", "folder", "--data-dir", tmp,
                                                "--out", os.path.join(tmp, "o", "c.pt")], "no folder"),
        "resume missing": (vision_train, ["--resume", ckpt, "--out", os.path.join(tmp, "o", "c.pt")],
                           "checkpoint not found"),
    }


@pytest.mark.parametrize("case", list(bad_inputs("/x")))
def test_bad_input_is_one_line_and_writes_nothing(case, tmp_path, capsys):
    script, argv, expected = bad_inputs(str(tmp_path))[case]
    assert script.main(argv) == 1
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "error:" in lines[0] and expected in lines[0], captured.err
    assert captured.out == ""
    assert os.listdir(tmp_path) == []


def test_corrupt_checkpoint_is_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"garbage")
    assert accuracy_vs_sparsity.main(["--checkpoint", str(bad), "--out", str(tmp_path / "o")]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "cannot read checkpoint" in lines[0] and "truncated or not a torch file" in lines[0]
    assert sorted(os.listdir(tmp_path)) == ["bad.pt"]


def test_command_line_bad_input_exits_1_with_one_line(tmp_path):
    result = run_cli("scripts/vision_train.py", "--td-alpha", "2", "--out", tmp_path / "c.pt", check=False)
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.strip() == "vision_train: error: argument --td-alpha: expected a number in [0, 1], got '2'"
    assert os.listdir(tmp_path) == []


def test_vision_never_imports_fairseq():
    import subprocess
    import sys
    code = ("import sys, runpy; import td_fairseq.vision; "
            "[runpy.run_path(f'scripts/{n}.py') for n in ('vision_train', 'accuracy_vs_sparsity', 'dependence_analysis')]; "
            "assert 'fairseq' not in sys.modules, 'fairseq imported'")
    result = subprocess.run([sys.executable, "-c", code], cwd=os.path.join(os.path.dirname(__file__), "..", ".."),
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_translation_checkpoint_says_what_it_is(tmp_path, capsys):
    fairseq_like = tmp_path / "checkpoint_best.pt"  # the keys fairseq writes, no fairseq needed
    torch.save({"cfg": {"model": {"arch": "transformer_td"}}, "model": {"encoder.w": torch.zeros(2)},
                "optimizer_history": [], "extra_state": {}}, fairseq_like)
    assert accuracy_vs_sparsity.main(["--checkpoint", str(fairseq_like), "--out", str(tmp_path / "o")]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "is a fairseq translation checkpoint" in lines[0], lines
    assert "expected a vision checkpoint written by scripts/vision_train.py" in lines[0]
    assert sorted(os.listdir(tmp_path)) == ["checkpoint_best.pt"]


@pytest.fixture(scope="module")
def folder_checkpoints(tmp_path_factory):
    """A tiny WRN and a tiny bottleneck ResNet trained one epoch on a made image folder."""
    root = make_image_folder(tmp_path_factory.mktemp("images"), train=4, val=2)
    out = tmp_path_factory.mktemp("folder_ckpt")
    shapes = {"wrn28_10": ["--blocks", "1", "--widths", "4", "4", "4", "--width-factor", "1", "--dropout", "0.1"],
              "resnet50": ["--blocks", "1", "--widths", "2", "2", "2", "2"]}
    paths = {}
    for arch, shape in shapes.items():
        paths[arch] = str(out / f"{arch}.pt")
        argv = ["--dataset", "folder", "--data-dir", root, "--image-size", "16", "--arch", arch, *shape,
                "--epochs", "1", "--batch-size", "4", "--workers", "1", "--quiet", "--out", paths[arch]]
        assert vision_train.main(argv) == 0
    return root, paths


def test_folder_training_records_how_to_find_the_data(folder_checkpoints):
    root, paths = folder_checkpoints
    checkpoint = torch.load(paths["resnet50"], weights_only=True)
    assert checkpoint["data"] == {"name": "folder", "root": root, "image_size": 16, "classes": ["cat", "dog"]}
    assert checkpoint["arch"]["name"] == "resnet50" and checkpoint["arch"]["blocks"] == [1, 1, 1, 1]
    assert len(checkpoint["metrics"]["td_modules"]) == 4 * 4  # 3 convs per bottleneck, a shortcut in each stage
    assert checkpoint["history"][0]["images_per_second"] > 0 and checkpoint["history"][0]["updates"] == 2
    assert checkpoint["runtime"]["workers"] == 1 and checkpoint["resume"]["optimizer"]["state"]


def test_sweep_on_each_arch_and_the_folder_val_split(folder_checkpoints, tmp_path):
    root, paths = folder_checkpoints
    out = tmp_path / "sweep"
    argv = ["--checkpoint", paths["wrn28_10"], paths["resnet50"], "--sparsity", "0", "0.5", "--data-dir", root,
            "--bn-recalibrate", "6", "--workers", "1", "--out", str(out)]
    assert accuracy_vs_sparsity.main(argv) == 0
    rows = json.loads((out / "results.json").read_text())
    assert [(r["label"], r["requested_sparsity"]) for r in rows] == [
        ("wrn28_10", 0.0), ("wrn28_10", 0.5), ("resnet50", 0.0), ("resnet50", 0.5)]
    assert all(r["dataset"] == "folder" and r["bn_recalibration_images"] == 6 for r in rows)
    assert rows[3]["per_layer_sparsity"]["stages.3.0.conv3.weight"] == 0.5
    assert all(r["accuracy"] in (0.0, 25.0, 50.0, 75.0, 100.0) for r in rows)  # 4 val images


def test_sweep_refuses_a_folder_with_other_classes(folder_checkpoints, tmp_path, capsys):
    _, paths = folder_checkpoints
    other = make_image_folder(tmp_path / "other", classes=("ant", "bee"), train=2, val=1)
    assert accuracy_vs_sparsity.main(["--checkpoint", paths["wrn28_10"], "--data-dir", other,
                                      "--out", str(tmp_path / "o")]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "the checkpoint was trained on cat, dog" in lines[0]
