"""benchmarks/serve_speed.py on the tiny trained model: every model and engine measured, each in a process
of its own, ratios and JSON."""
import importlib.util
import json
import os

import pytest

from td_fairseq.files import UserError

from ..conftest import REPO

_spec = importlib.util.spec_from_file_location("serve_speed", os.path.join(REPO, "benchmarks", "serve_speed.py"))
serve_speed = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(serve_speed)


def test_trained_model_figure(trained_checkpoint, data_bin, tmp_path, monkeypatch):
    started = []  # (spec, record) of every worker process

    def spy(spec, run_worker=serve_speed.run_worker):
        started.append((spec, run_worker(spec)))
        return started[-1][1]
    monkeypatch.setattr(serve_speed, "run_worker", spy)
    out = tmp_path / "speed.json"
    result = serve_speed.main(["--checkpoint", str(trained_checkpoint), "--data-bin", str(data_bin), "--skip-wmt",
                               "--compact-levels", "0.5", "--repeats", "1", "--threads", "1", "--json", str(out),
                               "--compute-types", "float32", "int8"])  # one of each stored type: the rest cost time
    assert json.loads(out.read_text()) == result and result["commit"] and "serve_speed.py" in result["command"]
    assert result["isolation"] == "process"
    rows = {(r["model"], r["engine"]): r for r in result["trained"]}
    models = {"dense", "pruned 50 % unstructured", "compact 50 % FFN units"}
    ct2 = {"CTranslate2 float32", "CTranslate2 int8"}
    engines = {"fairseq fp32", "fairseq bf16"} | ct2
    assert set(rows) == {(m, e) for m in models for e in engines}
    # one batching-tuning process per CTranslate2 compute type, then one process per (model, engine):
    # every one a fresh process (not this one), with the parent's thread count
    assert len(started) == len(ct2) + len(rows)
    assert len({record["pid"] for _, record in started} | {os.getpid()}) == len(started) + 1
    assert all(record["threads"] == 1 for _, record in started)
    measured = started[len(ct2):]
    assert all(len(spec.get("batchings", ["fairseq batches"])) == 1 for spec, _ in measured)
    for (model, engine), r in rows.items():
        assert r["sentences_per_s"] > 0 and 0 <= r["bleu"] <= 100 and len(r["round_seconds"]) == 1
        assert r["speed_vs_fairseq_fp32_same_model"] == round(
            r["sentences_per_s"] / rows[(model, "fairseq fp32")]["sentences_per_s"], 3)
    assert rows[("dense", "fairseq fp32")]["speed_vs_fairseq_fp32_dense"] == 1.0
    # CTranslate2 float32 in fairseq's batches decodes what fairseq decodes (up to the length bound)
    dense_f32 = rows[("dense", "CTranslate2 float32")]
    if dense_f32["batching"] == "fairseq batches":
        assert abs(dense_f32["bleu"] - rows[("dense", "fairseq fp32")]["bleu"]) < 1.0


def test_a_compute_type_the_cpu_lacks_is_refused_before_any_work(monkeypatch, capsys):
    import ctranslate2
    monkeypatch.setattr(ctranslate2, "get_supported_compute_types", lambda device: {"float32", "int8"})
    monkeypatch.setattr(serve_speed, "wmt_figure", lambda *a: pytest.fail("started work"))
    with pytest.raises(SystemExit) as exit_:
        serve_speed.main(["--compute-types", "int8", "bfloat16"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith(
        "this CPU's CTranslate2 does not support --compute-types bfloat16")


def test_rounds_start_every_worker_once_a_round_order_alternating(monkeypatch):
    order = []
    monkeypatch.setattr(serve_speed, "run_worker", lambda spec: order.append(spec["label"]) or {"n": len(order)})
    records = serve_speed.rounds({key: {"label": key} for key in "abc"}, 3)
    assert order == list("abccbaabc")
    assert records == {"a": [{"n": 1}, {"n": 6}, {"n": 7}], "b": [{"n": 2}, {"n": 5}, {"n": 8}],
                       "c": [{"n": 3}, {"n": 4}, {"n": 9}]}


def test_failed_worker_is_one_line(data_bin, tmp_path):
    spec = {"kind": "trained", "label": "dense, fairseq fp32", "checkpoint": str(tmp_path / "missing.pt"),
            "data_bin": str(data_bin), "subset": "test", "beam": 1, "max_len_a": 1.2, "max_len_b": 10,
            "max_tokens": 4000, "spm": None, "ref": None, "threads": 1}
    with pytest.raises(UserError, match=r"^the worker timing dense, fairseq fp32 failed: .*missing\.pt"):
        serve_speed.run_worker(spec)
