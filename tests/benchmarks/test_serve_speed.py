"""benchmarks/serve_speed.py on the tiny trained model: every model and engine measured, ratios and JSON."""
import importlib.util
import json
import os

from ..conftest import REPO

_spec = importlib.util.spec_from_file_location("serve_speed", os.path.join(REPO, "benchmarks", "serve_speed.py"))
serve_speed = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(serve_speed)


def test_trained_model_figure(trained_checkpoint, data_bin, tmp_path):
    out = tmp_path / "speed.json"
    result = serve_speed.main(["--checkpoint", str(trained_checkpoint), "--data-bin", str(data_bin), "--skip-wmt",
                               "--compact-levels", "0.5", "--repeats", "1", "--threads", "1", "--json", str(out)])
    assert json.loads(out.read_text()) == result and result["commit"] and "serve_speed.py" in result["command"]
    rows = {(r["model"], r["engine"]): r for r in result["trained"]}
    models = {"dense", "pruned 50 % unstructured", "compact 50 % FFN units"}
    engines = {"fairseq fp32", "fairseq bf16"} | {f"CTranslate2 {c}" for c in result["ctranslate2_cpu_compute_types"]}
    assert set(rows) == {(m, e) for m in models for e in engines}
    for (model, engine), r in rows.items():
        assert r["sentences_per_s"] > 0 and 0 <= r["bleu"] <= 100
        assert r["speed_vs_fairseq_fp32_same_model"] == round(
            r["sentences_per_s"] / rows[(model, "fairseq fp32")]["sentences_per_s"], 3)
    assert rows[("dense", "fairseq fp32")]["speed_vs_fairseq_fp32_dense"] == 1.0
    # CTranslate2 float32 in fairseq's batches decodes what fairseq decodes (up to the length bound)
    dense_f32 = rows[("dense", "CTranslate2 float32")]
    if dense_f32["batching"] == "fairseq batches":
        assert abs(dense_f32["bleu"] - rows[("dense", "fairseq fp32")]["bleu"]) < 1.0
