"""Shared fixtures. Core tests need only torch; fairseq fixtures import it lazily."""
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)
SHARED_DATA = os.path.join(os.path.dirname(REPO), "shared", "data")


def cli_env():
    """The user's environment minus any weights-only override (our checkpoints must load
    without it), with a fixed thread count: runs compared bitwise must use the same one."""
    env = {k: v for k, v in os.environ.items() if k != "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"}
    env.setdefault("OMP_NUM_THREADS", "2")
    return env


def run_cli(tool, *args, check=True, cwd=REPO, timeout=600):
    """Run a console script of this environment (fairseq-train, ...) or a repo script."""
    env = cli_env()
    command = [os.path.join(BIN, tool)] if not tool.endswith(".py") else [sys.executable, os.path.join(REPO, tool)]
    result = subprocess.run(command + [str(a) for a in args], cwd=cwd, env=env, capture_output=True,
                            text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"{tool} failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


TRAIN_ARGS = ["--task", "translation", "--arch", "transformer_td_tiny", "--user-dir", "td_fairseq",
              "--criterion", "label_smoothed_cross_entropy_td", "--label-smoothing", "0.1",
              "--optimizer", "adam", "--lr", "2e-3", "--max-tokens", "2000", "--cpu", "--seed", "1",
              "--log-format", "simple", "--log-interval", "1", "--no-epoch-checkpoints",
              "--share-all-embeddings", "--dropout", "0.1", "--num-workers", "0"]


@pytest.fixture(scope="session")
def corpus_dir(tmp_path_factory):
    from td_fairseq.synthetic import write_corpus
    root = tmp_path_factory.mktemp("corpus")
    for split, n, seed in (("train", 800, 1), ("valid", 60, 2), ("test", 40, 3)):
        write_corpus(str(root / split), n, seed)
    return root


@pytest.fixture(scope="session")
def data_bin(corpus_dir):
    dest = corpus_dir / "bin"
    run_cli("fairseq-preprocess", "--source-lang", "en", "--target-lang", "de",
            "--trainpref", corpus_dir / "train", "--validpref", corpus_dir / "valid",
            "--testpref", corpus_dir / "test", "--destdir", dest, "--joined-dictionary", "--workers", "1")
    return dest


@pytest.fixture(scope="session")
def trained_checkpoint(data_bin, tmp_path_factory):
    """A tiny weight-TD model trained for a few updates through the real CLI."""
    save_dir = tmp_path_factory.mktemp("ckpt")
    run_cli("fairseq-train", data_bin, *TRAIN_ARGS, "--max-update", "30", "--save-dir", save_dir)
    return save_dir / "checkpoint_last.pt"
