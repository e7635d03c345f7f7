"""bleu_vs_sparsity.py --engine ctranslate2: every level converted and decoded in CTranslate2."""
import json

from .test_compact_sweep import compact_sweep
from .test_sweep import sweep


def rows_of(out):
    return json.loads((out / "results.json").read_text())


def test_rows_record_the_engine_resume_and_refuse_another(trained_checkpoint, data_bin, tmp_path, capsys):
    out = tmp_path / "s"
    assert sweep(data_bin, trained_checkpoint, out, [0, 0.5], "--engine", "ctranslate2", "--quantization", "int8") == 0
    assert "decode seconds (ctranslate2 int8)" in capsys.readouterr().out
    rows = rows_of(out)
    assert [(r["engine"], r["quantization"], r["requested_sparsity"]) for r in rows] == [
        ("ctranslate2", "int8", 0.0), ("ctranslate2", "int8", 0.5)]
    assert all(r["convert_seconds"] > 0 and r["decode_seconds"] >= 0 and r["sentences"] == 40 for r in rows)
    header = (out / "results.csv").read_text().splitlines()[0].split(",")
    assert {"engine", "quantization", "convert_seconds", "decode_seconds"} <= set(header)
    assert sweep(data_bin, trained_checkpoint, out, [0, 0.5, 0.9], "--engine", "ctranslate2",
                 "--quantization", "int8") == 0  # only 0.9 is new
    again = rows_of(out)
    assert again[:2] == rows and again[2]["requested_sparsity"] == 0.9
    for extra, setting in (([], "engine"), (["--engine", "ctranslate2"], "quantization")):
        capsys.readouterr()
        assert sweep(data_bin, trained_checkpoint, out, [0], *extra) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"made with {setting} =" in err[0], err
    assert rows_of(out) == again


def test_fairseq_rows_refuse_ctranslate2_and_quantization_needs_it(trained_checkpoint, data_bin, tmp_path, capsys):
    out = tmp_path / "s"
    assert sweep(data_bin, trained_checkpoint, out, [0]) == 0
    assert rows_of(out)[0]["engine"] == "fairseq" and rows_of(out)[0]["quantization"] is None
    capsys.readouterr()
    assert sweep(data_bin, trained_checkpoint, out, [0], "--engine", "ctranslate2") == 1
    assert "made with engine = 'fairseq'" in capsys.readouterr().err
    assert sweep(data_bin, trained_checkpoint, tmp_path / "t", [0], "--quantization", "int8") == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--engine ctranslate2 only" in err[0]
    assert not (tmp_path / "t").exists()


def test_compact_sweep_on_ctranslate2(trained_checkpoint, data_bin, tmp_path, capsys):
    out = tmp_path / "c"
    assert compact_sweep(data_bin, trained_checkpoint, out, [0.5], "--engine", "ctranslate2") == 0
    row = rows_of(out)[0]
    assert (row["engine"], row["quantization"]) == ("ctranslate2", "float32")
    assert row["compact_bleu"] == row["bleu"] and row["identical_hypotheses"] == 1.0
    assert row["compact_parameters"] < row["parameters"]
    capsys.readouterr()
    assert compact_sweep(data_bin, trained_checkpoint, out, [0.75]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "engine ctranslate2" in err[0]
