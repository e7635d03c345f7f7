"""benchmarks/multi30k.sh and multi30k_report.py end to end on a tiny synthetic corpus."""
import csv
import os
import subprocess
import sys

from td_fairseq.synthetic import write_corpus

from ..conftest import REPO

SCRIPT = os.path.join(REPO, "benchmarks", "multi30k.sh")
REPORT = os.path.join(REPO, "benchmarks", "multi30k_report.py")


def multi30k(data, out, labels, timeout=600):
    env = dict(os.environ, PYTHON=sys.executable, MULTI30K=str(data), VOCAB="100", UPDATES="2", RAMPS="1 2",
               PARALLEL="2", LABELS=labels, OMP_NUM_THREADS="1")
    return subprocess.run(["bash", SCRIPT, str(out)], env=env, capture_output=True, text=True, timeout=timeout)


def small_multi30k(tmp_path):
    """A folder laid out like ../shared/data/multi30k, with a tiny synthetic corpus."""
    data = tmp_path / "m30k"
    data.mkdir()
    for split, n, seed in (("train", 200, 1), ("val", 20, 2), ("test_2016_flickr", 8, 3)):
        write_corpus(str(data / split), n, seed)
    return data


def rows(path):
    with open(path, encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_trains_tunes_sweeps_and_reports(tmp_path):
    data, out = small_multi30k(tmp_path), tmp_path / "out"
    result = multi30k(data, out, "no_td ramping_td_90 l0")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "FAILED" not in result.stdout + result.stderr

    tuning = (out / "tuning.txt").read_text().splitlines()
    assert len([line for line in tuning if line.startswith("ramping_td_90 ramp ")]) == 2
    chosen = [line for line in tuning if "chose ramp" in line]
    assert len(chosen) == 1 and os.readlink(out / "checkpoints" / "ramping_td_90") == \
        "ramping_td_90@" + chosen[0].split()[-1]

    sweeps = out / "sweeps"
    for name, count in (("weight_no_td", 7), ("weight_ramping_td_90", 7), ("weight_l0", 7),
                        ("weight_own_l0", 7), ("unit_no_td", 8)):
        assert len(rows(sweeps / name / "results.csv")) == count, name
    assert {r["ranked_by"] for r in rows(sweeps / "weight_own_l0" / "results.csv")} == {"l0_log_alpha"}

    docs = tmp_path / "docs"
    report = subprocess.run([sys.executable, REPORT, str(out), "--docs", str(docs)], capture_output=True,
                            text=True, timeout=120)
    assert report.returncode == 0, report.stderr[-3000:]
    assert len(rows(docs / "results.csv")) == 7 * 4 + 8
    for png in ("bleu_vs_sparsity.png", "methods.png", "unit_pruning.png"):
        assert (docs / png).read_bytes()[:4] == b"\x89PNG"
    assert "l0 (gate)" in (docs / "tables.md").read_text()


def fake_sweep(out, name, label, bleus, mode="weight", score="magnitude", **extra):
    folder = out / "sweeps" / name
    folder.mkdir(parents=True)
    with open(folder / "results.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, ["label", "checkpoint", "mode", "scope", "score", "ranked_by",
                                    "requested_sparsity", "measured_sparsity", "bleu", "chrf", *extra])
        writer.writeheader()
        for level, bleu in bleus.items():
            writer.writerow({"label": label, "checkpoint": f"/x/out/{label}.pt", "mode": mode, "scope": "unit",
                             "score": score, "ranked_by": "l0_log_alpha" if score == "own" else "magnitude",
                             "requested_sparsity": level, "measured_sparsity": level, "bleu": bleu, "chrf": 1,
                             **extra})


def test_report_ratios_and_verdicts(tmp_path):
    out, docs = tmp_path / "out", tmp_path / "docs"
    fake_sweep(out, "weight_no_td", "no_td", {0.0: 20.0, 0.7: 10.0, 0.8: 1.0})
    fake_sweep(out, "weight_td", "td", {0.0: 18.0, 0.7: 19.5, 0.8: 18.9})
    fake_sweep(out, "weight_own_l0", "l0", {0.0: 17.0}, score="own")
    report = subprocess.run([sys.executable, REPORT, str(out), "--docs", str(docs)], capture_output=True,
                            text=True, timeout=120)
    assert report.returncode == 0, report.stderr
    merged = {(r["label"], r["score"], float(r["requested_sparsity"])): r for r in rows(docs / "results.csv")}
    assert merged[("td", "magnitude", 0.7)]["retention"] == "0.975"
    assert merged[("l0", "own", 0.0)]["checkpoint"] == "out/l0.pt"
    tables = (docs / "tables.md").read_text()
    assert "| td | 70 % | 1 | 19.50 | 0.975 | 0.97 | yes |" in tables
    assert "| td | 80 % | 1 | 18.90 | 0.945 | 0.95 | no (short by 0.005) |" in tables
    assert "| td | 0 % | 1 | 18.00 | 0.900 | 0.97 | no (short by 0.070) |" in tables
    assert "| ramping_td_90 | 90 % | 0 | not measured |" in tables
    assert "| pruned | no_td | td | l0 (gate) |" in tables


def test_report_names_the_best_one_shot_row_per_level_and_each_pruners_cost(tmp_path):
    out, docs = tmp_path / "out", tmp_path / "docs"
    fake_sweep(out, "no_td", "no_td", {0.0: 20.0, 0.5: 15.0, 0.8: 1.0}, pruner="magnitude", prune_seconds=0.1)
    fake_sweep(out, "no_td_sgpt", "no_td", {0.5: 18.0, 0.8: 5.0}, pruner="sparsegpt", mask_groups="row",
               prune_seconds=10.0)
    fake_sweep(out, "no_td_sgpt_block", "no_td", {0.5: 18.5}, pruner="sparsegpt", mask_groups="block",
               prune_seconds=12.0)
    fake_sweep(out, "td", "td", {0.0: 18.0, 0.5: 17.5, 0.8: 16.0}, pruner="magnitude", prune_seconds=0.1)
    fake_sweep(out, "td_wanda", "td", {0.5: 17.9, 0.8: 15.0}, pruner="wanda", prune_seconds=2.0)
    fake_sweep(out, "no_td_24", "no_td", {0.5: 3.0}, pruner="magnitude", pattern="2:4", prune_seconds=0.2)
    fake_sweep(out, "td_24", "td", {0.5: 9.0}, pruner="magnitude", pattern="2:4", prune_seconds=0.2)
    fake_sweep(out, "td_2_4_model", "td_2_4", {0.5: 23.0}, pruner="sparsegpt", pattern="2:4", mask_groups="row",
               prune_seconds=9.0)
    report = subprocess.run([sys.executable, REPORT, str(out), "--docs", str(docs)], capture_output=True,
                            text=True, timeout=120)
    assert report.returncode == 0, report.stderr
    tables = (docs / "tables.md").read_text()
    assert "| 50 % | 18.50 (sparsegpt, block) | 17.50 (magnitude) | 17.90 (wanda) | no_td + sparsegpt, block | 0.60 |" \
        in tables
    assert "| 80 % | 5.00 (sparsegpt) | 16.00 (magnitude) | 16.00 (magnitude) | td + magnitude | 11.00 |" in tables
    assert "| 2:4 | 3.00 (magnitude) | 9.00 (magnitude) | 23.00 (td_2_4, sparsegpt) | td_2_4 + sparsegpt | 14.00 |" \
        in tables
    assert "| no_td | sparsegpt, block | unstructured | 1 | 12.00 | 12.00 |" in tables
    assert "| no_td | sparsegpt | unstructured | 2 | 10.00 | 10.00 |" in tables


def test_report_without_a_dense_reference_warns_and_writes_no_ratios(tmp_path):
    out, docs = tmp_path / "out", tmp_path / "docs"
    fake_sweep(out, "weight_td", "td", {0.0: 18.0})
    report = subprocess.run([sys.executable, REPORT, str(out), "--docs", str(docs)], capture_output=True,
                            text=True, timeout=120)
    assert report.returncode == 0 and "warning: no no_td row" in report.stderr
    assert rows(docs / "results.csv")[0]["retention"] == ""
    assert "Targets: no reference" in (docs / "tables.md").read_text()


def test_unknown_label_is_one_error_line_before_any_work(tmp_path):
    result = multi30k(tmp_path, tmp_path / "out", "no_td magic")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == ["multi30k.sh: error: unknown label magic"]
    assert not (tmp_path / "out").exists()


def test_missing_data_is_one_error_line(tmp_path):
    result = multi30k(tmp_path / "nowhere", tmp_path / "out", "no_td")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [f"multi30k.sh: error: no Multi30k at {tmp_path / 'nowhere'}"]


PRUNERS = os.path.join(REPO, "benchmarks", "multi30k_pruners.sh")


def test_pruner_table_end_to_end(tmp_path):
    data, out = small_multi30k(tmp_path), tmp_path / "out"
    assert multi30k(data, out, "no_td td td_2_4").returncode == 0
    env = dict(os.environ, PYTHON=sys.executable, LEVELS="0.5", FT_LEVELS="0.8", FT_UPDATES="2", OMP_NUM_THREADS="1")
    result = subprocess.run(["bash", PRUNERS, str(out)], env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    made = rows(out / "sweeps" / "pruners" / "results.csv")
    combos = {(r["label"], r["pruner"], r["pattern"], r["mask_groups"], float(r["requested_sparsity"])) for r in made}
    for label in ("no_td", "td"):
        for pruner in ("magnitude", "wanda", "sparsegpt"):
            assert (label, pruner, "unstructured", "row", 0.5) in combos
            assert (label, pruner, "2:4", "row", 0.5) in combos
        assert (label, "sparsegpt", "unstructured", "block", 0.5) in combos
    assert ("no_td_ft80", "magnitude", "unstructured", "row", 0.0) in combos
    for pruner in ("magnitude", "wanda", "sparsegpt"):
        assert ("td_2_4", pruner, "2:4", "row", 0.5) in combos
    calibrated = [r for r in made if r["pruner"] != "magnitude"]
    assert {(r["calib_sentences"], r["calib_seed"], r["calib_split"]) for r in calibrated} == {("128", "1", "train")}
    finetuned = [r for r in rows(out / "report" / "results.csv") if r["label"] == "no_td_ft80"]
    assert finetuned[0]["finetune_updates"] == "2" and "magnitude to 0.8" in finetuned[0]["finetune_from"]
    tables = (out / "report" / "tables.md").read_text()
    assert "The best one-shot row per level" in tables and "| 2:4 |" in tables
    assert (out / "report" / "pruners.png").read_bytes()[:4] == b"\x89PNG"
