"""benchmarks/vision_overhead.py runs end to end on a tiny setting and records what it ran."""
import importlib.util
import json
import os

BENCHMARK = os.path.join(os.path.dirname(__file__), "..", "..", "benchmarks", "vision_overhead.py")


def test_overhead_benchmark_smoke(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("vision_overhead", BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "overhead.json"
    assert module.main(["--arch", "wrn28_10", "--blocks", "1", "--widths", "4", "4", "4", "--width-factor", "1",
                        "--batch", "2", "--image-size", "8", "--steps", "2", "--warmup", "0",
                        "--batches", "1", "--profile-td", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "TD / no TD:" in printed and "commit:" in printed and "images/s" in printed
    result = json.loads(out.read_text())
    assert result["arch"] == "WRN-10-1" and set(result["median_step_seconds"]) == {"no TD", "TD"}
    assert result["ratio_td_over_no_td"] > 0 and result["td_forward_seconds_per_step"] > 0
    assert result["command"].startswith("python benchmarks/vision_overhead.py --arch wrn28_10")
