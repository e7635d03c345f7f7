"""examples/wmt_en_de/train.sh: each recipe's options as fairseq parses them, a real (tiny) run, the sweep."""
import json
import os
import shlex
import shutil
import subprocess
import sys

import pytest

from td_fairseq.synthetic import write_corpus

from ..conftest import REPO

TRAIN = os.path.join(REPO, "examples", "wmt_en_de", "train.sh")
PREPARE = os.path.join(REPO, "examples", "wmt_en_de", "prepare.sh")
RECIPES = {  # the paper's settings: (type, alpha, gamma)
    "baseline": ("none", None, None), "td_75": ("weight", 0.66, 0.75), "td_90": ("weight", 0.66, 0.90),
    "ramping": ("weight", 0.99, 0.95), "unit": ("unit", 0.5, 0.5)}
# what fairseq's own parser makes of a recipe's command line, run in a fresh interpreter
PARSE = """
import json, sys
from fairseq import options
out = {}
for name, argv in json.load(sys.stdin).items():
    args = options.parse_args_and_arch(options.get_training_parser(), argv)
    out[name] = {k: getattr(args, k, None) for k in json.loads(sys.argv[1])}
print(json.dumps(out))
"""
FIELDS = ["arch", "share_all_embeddings", "criterion", "label_smoothing", "optimizer", "adam_betas", "lr",
          "lr_scheduler", "warmup_updates", "dropout", "max_tokens", "update_freq", "max_update", "fp16",
          "td_type", "td_alpha", "td_gamma", "td_ramp_updates", "td_eval_mask", "save_dir"]


def train_sh(*args, cwd, env=None, timeout=120):
    full_env = dict(os.environ, PYTHON=sys.executable, OMP_NUM_THREADS="1", **(env or {}))
    return subprocess.run(["bash", TRAIN, *map(str, args)], cwd=cwd, env=full_env, capture_output=True,
                          text=True, timeout=timeout)


def dry_run(*args, ngpu, cwd):
    result = train_sh(*args, cwd=cwd, env={"DRY_RUN": "1", "NGPU": str(ngpu)})
    assert result.returncode == 0, result.stderr
    command = shlex.split(result.stdout.strip().splitlines()[-1])
    return command[1:]  # without the executable


def parsed(commands, cwd):
    result = subprocess.run([sys.executable, "-c", PARSE, json.dumps(FIELDS)], input=json.dumps(commands),
                            cwd=cwd, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_recipes_parse_with_the_papers_settings(tmp_path):
    (tmp_path / "data" / "bin").mkdir(parents=True)
    (tmp_path / "data" / "bin" / "dict.en.txt").write_text("hallo 1\n")
    commands = {name: dry_run(name, "data/bin", f"ckpt/{name}", ngpu=8, cwd=tmp_path) for name in RECIPES}
    commands["one_gpu"] = dry_run("td_75", "data/bin", "ckpt/x", ngpu=1, cwd=tmp_path)
    commands["cpu_override"] = dry_run("td_75", "data/bin", "ckpt/x", "--max-update", 7, "--td-gamma", 0.5,
                                       ngpu=0, cwd=tmp_path)
    args = parsed(commands, tmp_path)
    for name, (td_type, alpha, gamma) in RECIPES.items():
        a = args[name]
        assert a["arch"] == "transformer_td_wmt_en_de" and a["share_all_embeddings"]
        assert a["criterion"] == "label_smoothed_cross_entropy_td" and a["label_smoothing"] == 0.1
        assert (a["optimizer"], a["adam_betas"], a["lr"]) == ("adam", "(0.9, 0.98)", [7e-4])
        assert (a["lr_scheduler"], a["warmup_updates"], a["dropout"]) == ("inverse_sqrt", 4000, 0.1)
        assert (a["max_tokens"], a["update_freq"], a["max_update"], a["fp16"]) == (4096, [1], 100000, True)
        assert a["save_dir"] == f"ckpt/{name}"
        assert a["td_type"] == td_type, name
        if alpha is not None:
            assert (a["td_alpha"], a["td_gamma"]) == (alpha, gamma), name
        assert bool(a["td_eval_mask"]) == (name == "ramping")
        assert (a["td_ramp_updates"] or 0) == (20000 if name == "ramping" else 0)
    assert args["one_gpu"]["update_freq"] == [8] and args["one_gpu"]["fp16"]
    assert not args["cpu_override"]["fp16"]
    assert (args["cpu_override"]["max_update"], args["cpu_override"]["td_gamma"]) == (7, 0.5)


@pytest.mark.parametrize("args, code, message", [
    (["dropconnect", "data/bin", "ckpt"], 2, "unknown recipe 'dropconnect'"),
    ([], 2, "no recipe given"),
    (["td_75", "data/bin"], 2, "td_75 needs DATA_BIN and SAVE_DIR"),
    (["td_75", "nowhere", "ckpt"], 1, "nowhere is not a data-bin"),
    (["sweep", "nowhere", "ckpt"], 1, "nowhere/bin/dict.en.txt not found"),
])
def test_bad_usage_is_one_line(tmp_path, args, code, message):
    result = train_sh(*args, cwd=tmp_path, env={"NGPU": "0"})
    assert result.returncode == code
    err = result.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("train.sh: error: ") and message in err[0], result.stderr


def test_tiny_run_and_sweep(tmp_path):
    """A recipe trains for 2 updates (tiny arch by override) and the sweep scores its copies."""
    raw = tmp_path / "raw"
    raw.mkdir()
    for split, n, seed in (("train", 200, 1), ("valid", 20, 2), ("test", 12, 3)):
        write_corpus(str(raw / split), n, seed)
    env = dict(os.environ, PYTHON=sys.executable, OMP_NUM_THREADS="1")
    prep = subprocess.run(["bash", PREPARE, "--raw-dir", raw, "--dest", tmp_path / "data", "--vocab-size", "100"],
                          env=env, capture_output=True, text=True, timeout=120)
    assert prep.returncode == 0, prep.stderr
    ckpt = tmp_path / "ckpt"
    tiny = ["--arch", "transformer_td_tiny", "--max-update", 2, "--max-tokens", 500, "--cpu", "--num-workers", 0]
    result = train_sh("ramping", "data/bin", ckpt / "ramping", *tiny, cwd=tmp_path, env={"NGPU": "0"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "num_updates 2" in result.stdout + result.stderr
    for name in RECIPES:
        if name != "ramping":
            (ckpt / name).mkdir()
            shutil.copy(ckpt / "ramping" / "checkpoint_best.pt", ckpt / name)
    result = train_sh("sweep", "data", "ckpt", "--sparsity", 0, "--beam", 1, "--no-progress", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = json.loads((ckpt / "sweep" / "results.json").read_text())
    assert sorted(r["label"] for r in rows) == sorted(RECIPES)
    assert all(r["sentences"] == 12 for r in rows)


def test_uses_the_repo_venv_without_python_set(tmp_path):
    """With PYTHON unset and nothing on PATH, train.sh takes the repo's .venv (as make leaves it)."""
    if not os.access(os.path.join(REPO, ".venv", "bin", "fairseq-train"), os.X_OK):
        pytest.skip("no .venv in the repo (make install creates it)")
    (tmp_path / "data" / "bin").mkdir(parents=True)
    (tmp_path / "data" / "bin" / "dict.en.txt").write_text("hallo 1\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHON"}
    env.update(PATH="/usr/bin:/bin", DRY_RUN="1", NGPU="0")
    result = subprocess.run(["bash", TRAIN, "td_75", "data/bin", "ckpt"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert shlex.split(result.stdout.strip().splitlines()[-1])[0] == os.path.join(REPO, ".venv", "bin", "fairseq-train")
