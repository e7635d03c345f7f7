"""bleu_vs_sparsity.py --compact: compact models beside their masked twins."""
import json

from td_fairseq import cli

from .test_sweep import sweep_script


def compact_sweep(data_bin, ckpt, out, levels, *extra):
    argv = ["--compact", "--data-bin", str(data_bin), "--checkpoint", str(ckpt), "--label", "td", "--sparsity",
            *map(str, levels), "--beam", "2", "--out", str(out), "--no-progress", *extra]
    return cli.run(sweep_script.main, argv)


def test_compact_rows_match_the_masked_model_and_resume(trained_checkpoint, data_bin, tmp_path, capsys):
    out = tmp_path / "c"
    assert compact_sweep(data_bin, trained_checkpoint, out, [0, 0.5]) == 0
    rows = json.loads((out / "results.json").read_text())
    assert [r["requested_sparsity"] for r in rows] == [0.0, 0.5]
    for r in rows:
        assert r["compact_bleu"] == r["bleu"] and r["identical_hypotheses"] == 1.0
        assert r["speedup"] > 0 and r["decode_seconds"] > 0 and r["device"] == "cpu"
    assert rows[0]["compact_parameters"] == rows[0]["parameters"]
    assert rows[1]["compact_parameters"] < rows[1]["parameters"] and rows[1]["measured_sparsity"] > 0
    assert (out / "speedup_vs_sparsity.png").read_bytes()[:4] == b"\x89PNG"
    assert "| td | 50 % |" in capsys.readouterr().out
    assert compact_sweep(data_bin, trained_checkpoint, out, [0, 0.5, 0.75]) == 0  # only 0.75 is new
    again = json.loads((out / "results.json").read_text())
    assert again[:2] == rows and again[2]["requested_sparsity"] == 0.75


def test_compact_rejects_options_that_do_not_apply(trained_checkpoint, data_bin, tmp_path, capsys):
    assert compact_sweep(data_bin, trained_checkpoint, tmp_path / "c", [0.5], "--score", "own") == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--compact" in err[0]
    assert not (tmp_path / "c").exists()
