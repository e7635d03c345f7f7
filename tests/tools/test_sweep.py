"""bleu_vs_sparsity.py: rows, resume, plot, and bad input."""
import importlib.util
import json
import os
import shutil

import pytest
import torch

from td_fairseq import cli
from td_fairseq.tools.sweep import add_retention

from ..conftest import REPO, TRAIN_ARGS, run_cli

_spec = importlib.util.spec_from_file_location("bleu_vs_sparsity", os.path.join(REPO, "scripts", "bleu_vs_sparsity.py"))
sweep_script = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(sweep_script)

STABLE = ("label", "mode", "scope", "requested_sparsity", "measured_sparsity", "bleu", "chrf", "signature",
          "sentences", "retention")


def sweep(data_bin, ckpt, out, levels, *extra):
    argv = ["--data-bin", str(data_bin), "--checkpoint", str(ckpt), "--label", "td", "--sparsity",
            *map(str, levels), "--beam", "2", "--out", str(out), "--no-progress", "--reference-label", "td", *extra]
    return cli.run(sweep_script.main, argv)


def stable(rows):
    return [{k: r[k] for k in STABLE} for r in rows]


def test_sweep_writes_rows_and_plot_and_resumes_identically(trained_checkpoint, data_bin, tmp_path):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert sweep(data_bin, trained_checkpoint, straight, [0, 0.5, 0.9]) == 0
    assert sweep(data_bin, trained_checkpoint, resumed, [0, 0.5]) == 0
    assert sweep(data_bin, trained_checkpoint, resumed, [0, 0.5, 0.9]) == 0
    rows = json.loads((straight / "results.json").read_text())
    assert stable(json.loads((resumed / "results.json").read_text())) == stable(rows)
    assert [r["requested_sparsity"] for r in rows] == [0.0, 0.5, 0.9]
    assert rows[1]["measured_sparsity"] == pytest.approx(0.5)
    assert rows[0]["signature"].startswith("nrefs:1|case:mixed|eff:no|tok:13a")
    assert all(r["commit"] and "bleu_vs_sparsity" in r["command"] for r in rows)
    header = (straight / "results.csv").read_text().splitlines()[0].split(",")
    for column in ("label", "checkpoint", "mode", "scope", "requested_sparsity", "measured_sparsity", "bleu",
                   "chrf", "signature", "decode_seconds", "command", "commit", "retention"):
        assert column in header
    assert (straight / "bleu_vs_sparsity.png").read_bytes()[:4] == b"\x89PNG"


def test_sweep_matches_plain_fairseq_generate_of_the_pruned_checkpoint(trained_checkpoint, data_bin, tmp_path):
    """In-memory pruning gives exactly what the exported pruned checkpoint gives."""
    from ..tools.test_checkpoint import prune_script
    assert cli.run(prune_script.main, [str(trained_checkpoint), "--sparsity", "0.7", "--out-dir",
                                       str(tmp_path / "pruned")]) == 0
    assert sweep(data_bin, trained_checkpoint, tmp_path / "s", [0.7]) == 0
    row = json.loads((tmp_path / "s" / "results.json").read_text())[0]
    result = run_cli("fairseq-generate", data_bin, "--path", tmp_path / "pruned" / "sparsity_0.70.pt", "--beam", "2",
                     "--cpu", "--max-tokens", "4000", "--max-len-a", "1.2", "--max-len-b", "10",
                     "--scoring", "sacrebleu", "--required-batch-size-multiple", "1", cwd=tmp_path)
    hyps = {int(l.split("\t")[0][2:]): l.split("\t")[2] for l in result.stdout.splitlines() if l.startswith("D-")}
    refs = {int(l.split("\t")[0][2:]): l.split("\t")[1] for l in result.stdout.splitlines() if l.startswith("T-")}
    import sacrebleu
    ids = sorted(hyps)
    bleu = sacrebleu.corpus_bleu([hyps[i] for i in ids], [[refs[i] for i in ids]]).score
    assert row["bleu"] == pytest.approx(bleu, abs=0.01)


@pytest.fixture(scope="module")
def l0_checkpoint(data_bin, tmp_path_factory):
    """A tiny L0-gated model trained a few updates, then given spread-out gates."""
    save_dir = tmp_path_factory.mktemp("l0")
    run_cli("fairseq-train", data_bin, *TRAIN_ARGS, "--sparsity-method", "l0", "--max-update", "4",
            "--save-dir", save_dir)
    path = save_dir / "checkpoint_last.pt"
    state = torch.load(path, weights_only=False)
    g = torch.Generator().manual_seed(0)
    for key, value in state["model"].items():
        if key.endswith(".td.log_alpha"):
            state["model"][key] = torch.randn(value.shape, generator=g) * 3
    torch.save(state, path)
    return path


def test_baseline_models_are_evaluated_with_their_views_folded(l0_checkpoint, data_bin):
    from td_fairseq.sparsity import views_of
    from td_fairseq.sparsity.baseline_views import l0_eval_gate
    from td_fairseq.tools.loading import load_translation_model
    model, _, state = load_translation_model(str(l0_checkpoint), str(data_bin))
    assert views_of(model) == []
    gated = [k for k in state if k.endswith(".td.log_alpha")]
    assert gated
    for key in gated:
        owner = key[: -len("td.log_alpha")]
        expected = state[owner + "weight"] * l0_eval_gate(state[key])
        assert torch.equal(model.state_dict()[owner + "weight"], expected)


def test_score_own_ranks_by_the_gates_and_is_recorded(l0_checkpoint, data_bin, tmp_path):
    from td_fairseq.tools.sweep import ranking_scores
    state = torch.load(l0_checkpoint, weights_only=False)["model"]
    weights = {k: v for k, v in state.items() if k.endswith(("fc1.weight", "q_proj.weight"))}
    scores, ranked_by = ranking_scores(state, weights, "weight", "own")
    assert ranked_by == "l0_log_alpha" and set(scores) == set(weights)
    assert all(torch.equal(scores[k], state[k[: -len("weight")] + "td.log_alpha"]) for k in weights)
    assert ranking_scores(state, weights, "weight", "magnitude") == (None, "magnitude")
    assert ranking_scores(state, weights, "unit", "own")[1] == "magnitude"  # weight gates rank no units

    out = tmp_path / "s"
    for score in ("own", "magnitude"):  # both kept in one directory: the score is part of a row's key
        assert sweep(data_bin, l0_checkpoint, out, [0.5], "--score", score) == 0
    rows = json.loads((out / "results.json").read_text())
    assert [(r["score"], r["ranked_by"]) for r in rows] == [("own", "l0_log_alpha"), ("magnitude", "magnitude")]
    assert all(r["measured_sparsity"] >= 0.5 for r in rows)


@pytest.fixture(scope="module")
def other_data_bin(tmp_path_factory):
    """A data-bin whose dictionary differs from the training one."""
    root = tmp_path_factory.mktemp("other")
    for split in ("train", "valid", "test"):
        for lang in ("en", "de"):
            (root / f"{split}.{lang}").write_text("".join(f"x{i} y{i % 7} z\n" for i in range(30)))
    run_cli("fairseq-preprocess", "--source-lang", "en", "--target-lang", "de", "--trainpref", root / "train",
            "--validpref", root / "valid", "--testpref", root / "test", "--destdir", root / "bin",
            "--joined-dictionary", "--workers", "1")
    return root / "bin"


def bad_argv(case, ckpt, data_bin, other_bin, tmp_path):
    out = str(tmp_path / "out")
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(open(ckpt, "rb").read()[:4000])
    short_ref = tmp_path / "short.de"
    short_ref.write_text("only one line\n")
    base = ["--data-bin", str(data_bin), "--checkpoint", str(ckpt), "--out", out, "--no-progress"]
    return {
        "sparsity one": base + ["--sparsity", "1"],
        "sparsity negative": base + ["--sparsity", "-0.5"],
        "missing checkpoint": ["--data-bin", str(data_bin), "--checkpoint", str(tmp_path / "no.pt"), "--out", out,
                               "--sparsity", "0"],
        "truncated checkpoint": ["--data-bin", str(data_bin), "--checkpoint", str(truncated), "--out", out,
                                 "--sparsity", "0"],
        "missing data-bin": ["--data-bin", str(tmp_path / "nobin"), "--checkpoint", str(ckpt), "--out", out,
                             "--sparsity", "0"],
        "dictionary mismatch": ["--data-bin", str(other_bin), "--checkpoint", str(ckpt), "--out", out,
                                "--sparsity", "0"],
        "unknown targets": base + ["--sparsity", "0", "--targets", "attn,nope"],
        "out is checkpoint dir": ["--data-bin", str(data_bin), "--checkpoint", str(ckpt), "--out", str(ckpt.parent),
                                  "--sparsity", "0"],
        "reference length": base + ["--sparsity", "0", "--ref", str(short_ref)],
        "missing subset": base + ["--sparsity", "0", "--subset", "test7"],
        "labels count": base + ["--sparsity", "0", "--label", "a", "--label", "b"],
    }[case]


@pytest.mark.parametrize("case", ["sparsity one", "sparsity negative", "missing checkpoint", "truncated checkpoint",
                                  "missing data-bin", "dictionary mismatch", "unknown targets",
                                  "out is checkpoint dir", "reference length", "missing subset", "labels count"])
def test_bad_input(trained_checkpoint, data_bin, other_data_bin, tmp_path, capsys, case):
    ckpt = tmp_path / "in" / "model.pt"
    ckpt.parent.mkdir()
    shutil.copy(trained_checkpoint, ckpt)
    assert cli.run(sweep_script.main, bad_argv(case, ckpt, data_bin, other_data_bin, tmp_path)) == 1
    err = [line for line in capsys.readouterr().err.strip().splitlines() if "error:" in line]
    assert len(err) == 1, case
    out = tmp_path / "out"
    assert not out.exists() or not any(p.name.startswith("results") for p in out.iterdir())
    assert sorted(os.listdir(ckpt.parent)) == ["model.pt"]


def rows_of(out):
    return json.loads((out / "results.json").read_text())


def test_rerun_with_other_settings_is_refused_naming_the_setting(trained_checkpoint, data_bin, tmp_path, capsys):
    """Before: a rerun with --beam 1 --subset valid into a beam-2 test folder printed the old rows, exit 0."""
    out = tmp_path / "s"
    assert sweep(data_bin, trained_checkpoint, out, [0, 0.5]) == 0
    before = (out / "results.json").read_text()
    for extra, setting in ((["--beam", "1"], "beam"), (["--subset", "valid"], "subset"),
                           (["--lenpen", "2"], "lenpen"), (["--targets", "attn,ffn,embed"], "targets"),
                           (["--max-len-b", "3"], "max_len_b")):
        capsys.readouterr()
        argv = ["--data-bin", str(data_bin), "--checkpoint", str(trained_checkpoint), "--label", "td",
                "--sparsity", "0", "0.5", "--beam", "2", "--out", str(out), "--no-progress", *extra]
        argv[argv.index("--beam") + 1] = extra[1] if extra[0] == "--beam" else "2"
        assert cli.run(sweep_script.main, argv) == 1, setting
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"made with {setting} =" in err[0], err
    assert (out / "results.json").read_text() == before


def test_a_changed_checkpoint_is_not_answered_with_old_rows(trained_checkpoint, data_bin, tmp_path):
    ckpt = tmp_path / "in" / "model.pt"
    ckpt.parent.mkdir()
    shutil.copy(trained_checkpoint, ckpt)
    out = tmp_path / "s"
    assert sweep(data_bin, ckpt, out, [0.5]) == 0
    os.utime(ckpt, (1, 1))  # a retrained model at the same path
    assert sweep(data_bin, ckpt, out, [0.5]) == 0
    rows = rows_of(out)
    assert len(rows) == 2 and rows[0]["checkpoint_mtime"] != rows[1]["checkpoint_mtime"]


def test_same_file_names_get_their_folder_as_label_and_duplicates_are_refused(trained_checkpoint, data_bin,
                                                                               tmp_path, capsys):
    """Before: two checkpoint_last.pt were both labelled checkpoint_last and drawn as one line."""
    paths = []
    for name in ("no_td", "td"):
        (tmp_path / name).mkdir()
        paths.append(tmp_path / name / "checkpoint_last.pt")
        shutil.copy(trained_checkpoint, paths[-1])
    out = tmp_path / "s"
    argv = ["--data-bin", str(data_bin), "--checkpoint", str(paths[0]), "--checkpoint", str(paths[1]),
            "--sparsity", "0", "--beam", "1", "--no-progress", "--out", str(out)]
    assert cli.run(sweep_script.main, argv) == 0
    assert [r["label"] for r in rows_of(out)] == ["no_td", "td"]
    capsys.readouterr()
    assert cli.run(sweep_script.main, argv[:-1] + [str(tmp_path / "t"), "--label", "a", "--label", "a"]) == 1
    assert "labels must be unique" in capsys.readouterr().err
    # a label already in the folder may not be given to another checkpoint
    assert cli.run(sweep_script.main, ["--data-bin", str(data_bin), "--checkpoint", str(paths[1]), "--label",
                                       "no_td", "--sparsity", "0", "--beam", "1", "--no-progress", "--out",
                                       str(out)]) == 1
    assert "belongs to" in capsys.readouterr().err


def test_reference_label_may_come_from_the_folder(trained_checkpoint, data_bin, tmp_path):
    """One model per call, the reference swept by an earlier call."""
    other = tmp_path / "other" / "model.pt"
    other.parent.mkdir()
    shutil.copy(trained_checkpoint, other)
    out = tmp_path / "s"
    assert sweep(data_bin, trained_checkpoint, out, [0]) == 0
    argv = ["--data-bin", str(data_bin), "--checkpoint", str(other), "--label", "other", "--sparsity", "0", "0.5",
            "--beam", "2", "--no-progress", "--out", str(out), "--reference-label", "td"]
    assert cli.run(sweep_script.main, argv) == 0
    assert {(r["label"], float(r["requested_sparsity"])) for r in rows_of(out)} == {
        ("td", 0.0), ("other", 0.0), ("other", 0.5)}
    # the tiny model scores 0 BLEU, so the ratio itself is checked on made-up rows
    rows = [{"label": "td", "requested_sparsity": 0.0, "bleu": 20.0},
            {"label": "other", "requested_sparsity": 0.5, "bleu": 15.0}]
    add_retention(rows, "td")
    assert [r["retention"] for r in rows] == [1.0, 0.75]


def test_more_bad_input_is_one_line(trained_checkpoint, data_bin, tmp_path, capsys):
    from td_fairseq.files import save_torch
    vision = tmp_path / "in" / "vision.pt"
    vision.parent.mkdir()
    save_torch({"version": 1, "arch": {"blocks": 1}, "state_dict": {}, "td": {}}, str(vision))
    truncated = tmp_path / "in" / "truncated.pt"
    truncated.write_bytes(open(trained_checkpoint, "rb").read()[:4000])
    base = ["--sparsity", "0", "--beam", "1", "--no-progress", "--out", str(tmp_path / "out")]
    cases = {
        "parent of the data-bin": (["--data-bin", str(data_bin.parent), "--checkpoint", str(trained_checkpoint)],
                                   "not a fairseq data-bin"),
        "max tokens below longest": (["--data-bin", str(data_bin), "--checkpoint", str(trained_checkpoint),
                                      "--max-tokens", "5"], "--max-tokens 5 is below the longest sentence"),
        "vision checkpoint": (["--data-bin", str(data_bin), "--checkpoint", str(vision)], "is a vision checkpoint"),
        "truncated, whole message": (["--data-bin", str(data_bin), "--checkpoint", str(truncated)], ")"),
    }
    for case, (argv, expected) in cases.items():
        capsys.readouterr()
        assert cli.run(sweep_script.main, argv + base) == 1, case
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and expected in err[0] and err[0].endswith((")", "it", "expected a fairseq "
                                                                        "translation checkpoint with 'model' and "
                                                                        "'cfg' entries")), (case, err)
        assert not (tmp_path / "out").exists(), case


def test_calibrated_pruners_and_patterns_share_a_folder(trained_checkpoint, data_bin, tmp_path):
    from td_fairseq.sparsity import follows_pattern
    out = tmp_path / "s"
    assert sweep(data_bin, trained_checkpoint, out, [0, 0.5], "--pruner", "wanda", "--calib-sentences", "16") == 0
    argv = ["--data-bin", str(data_bin), "--checkpoint", str(trained_checkpoint), "--label", "td", "--beam", "2",
            "--out", str(out), "--no-progress", "--pruner", "sparsegpt", "--pattern", "2:4", "--calib-sentences",
            "16"]
    assert cli.run(sweep_script.main, argv) == 0
    assert sweep(data_bin, trained_checkpoint, out, [0.5]) == 0  # magnitude beside them
    rows = rows_of(out)
    assert [(r["pruner"], r["pattern"], r["requested_sparsity"]) for r in rows] == [
        ("wanda", "unstructured", 0.0), ("wanda", "unstructured", 0.5), ("sparsegpt", "2:4", 0.0),
        ("sparsegpt", "2:4", 0.5), ("magnitude", "unstructured", 0.5)]
    assert all(r["measured_sparsity"] == pytest.approx(float(r["requested_sparsity"])) for r in rows)
    calibrated = [r for r in rows if r["pruner"] != "magnitude"]
    assert all((r["calib_sentences"], r["calib_seed"], r["calib_split"]) == (16, 1, "train") for r in calibrated)
    assert all(r["prune_seconds"] >= 0 for r in rows)
    assert rows[0]["bleu"] == rows[2]["bleu"]  # level 0 is the dense model, whatever the pruner
    from td_fairseq.sparsity.patterns import parse_pattern
    from td_fairseq.sparsity.sweep import MagnitudePruner  # the pattern holds for magnitude too
    state = torch.load(trained_checkpoint, weights_only=False)["model"]
    weights = {k: v for k, v in state.items() if k.endswith(("fc1.weight", "q_proj.weight", "out_proj.weight"))}
    pruned = MagnitudePruner(weights).prune(0.5, parse_pattern("2:4"))
    assert all(follows_pattern(t, (2, 4)) for t in pruned.values())
