"""The embedded demo: synthetic corpus -> data-bin -> no-TD and TD models -> BLEU vs sparsity.

Everything is seeded, so a rerun gives the same numbers; every stage is skipped when its
output exists (training resumes from checkpoint_last.pt and stops at once when done).
"""
import os
import subprocess
import sys

from ..cli import UserError
from ..synthetic import write_corpus
from .prepare import prepare
from ..sparsity.sweep import SweepConfig
from .sweep import format_table, run_sweep
from .translate import DecodeConfig

MODELS = {
    "no_td": ["--td-type", "none"],
    "td": ["--td-type", "weight", "--td-gamma", "0.75", "--td-alpha", "0.66"],
}
TRAIN = ["--task", "translation", "--arch", "transformer_td_tiny", "--share-all-embeddings",
         "--criterion", "label_smoothed_cross_entropy_td", "--label-smoothing", "0.1", "--dropout", "0.1",
         "--optimizer", "adam", "--adam-betas", "(0.9, 0.98)", "--lr", "3e-3", "--lr-scheduler", "inverse_sqrt",
         "--warmup-updates", "100", "--max-tokens", "12000", "--cpu", "--seed", "1", "--num-workers", "0",
         "--no-epoch-checkpoints", "--log-format", "simple", "--log-interval", "100"]
LEVELS = [0.0, 0.5, 0.6, 0.7, 0.8, 0.9]


def _log(message):
    print(message, flush=True)  # progress must show at once, also through a pipe


def train(data_bin, save_dir, td_args, max_update, log):
    """fairseq's own trainer, through its command-line entry point."""
    os.makedirs(save_dir, exist_ok=True)
    command = [os.path.join(os.path.dirname(sys.executable), "fairseq-train"), data_bin, "--user-dir",
               os.path.dirname(os.path.dirname(os.path.abspath(__file__))), *TRAIN, *td_args,
               "--max-update", str(max_update), "--save-dir", save_dir]
    with open(os.path.join(save_dir, "train.log"), "a", encoding="utf-8") as log_file:
        result = subprocess.run(command, stdout=log_file, stderr=subprocess.STDOUT)
    if result.returncode != 0:
        raise UserError(f"fairseq-train failed; see {os.path.join(save_dir, 'train.log')}")
    return os.path.join(save_dir, "checkpoint_last.pt")


def run_demo(out_dir="demo_out", train_pairs=12000, test_pairs=500, vocab_size=240, max_update=600,
             levels=LEVELS, log=_log, command=None):
    raw = os.path.join(out_dir, "raw")
    if not os.path.isfile(os.path.join(raw, "test.de")):
        log(f"corpus: {train_pairs} synthetic training pairs, {test_pairs} valid and test pairs")
        os.makedirs(raw, exist_ok=True)
        for split, n, seed in (("train", train_pairs, 1), ("valid", test_pairs, 2), ("test", test_pairs, 3)):
            write_corpus(os.path.join(raw, split), n, seed)
    data = os.path.join(out_dir, "data")
    data_bin = prepare(raw, data, vocab_size, log=log)
    checkpoints = []
    for label, td_args in MODELS.items():
        log(f"train {label}: {max_update} updates of transformer_td_tiny ({' '.join(td_args)})")
        checkpoints.append(train(data_bin, os.path.join(out_dir, "checkpoints", label), td_args, max_update, log))
    log("sweep: weight pruning per unit, beam 4, sacreBLEU against the raw test references")
    decode = DecodeConfig(beam=4, spm=os.path.join(data, "spm.model"), ref=os.path.join(data, "clean", "test.de"))
    rows = run_sweep(data_bin, checkpoints, list(MODELS), SweepConfig(tuple(levels)), decode,
                     os.path.join(out_dir, "sweep"), reference_label="no_td", command=command, progress=False)
    log(format_table(rows))
    log(f"results: {os.path.join(out_dir, 'sweep', 'results.csv')}, plot: "
        f"{os.path.join(out_dir, 'sweep', 'bleu_vs_sparsity.png')}")
    return rows
