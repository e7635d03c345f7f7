"""Bad-input cases not covered by the earlier tests (docs/hardening.md lists them all).

Each builds its command line from fresh ``Inputs``; ``expect`` is part of the one error line.
"""
import argparse
import os

from .harness import Case

def relabelled(arch):
    return lambda i: [i.with_arch(arch), "--sparsity", "0.5", "--out-dir", i.out]


class _Evil:
    """A class torch's safe loader must refuse to unpickle."""


def _evil_pickle(i):
    import torch
    path = i.path("in/evil.pt")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    torch.save({"model": {}, "cfg": {"model": argparse.Namespace(arch="transformer_td_tiny")}, "x": _Evil()}, path)
    return path


def _sweep(i, *extra, checkpoint=None, data_bin=None, out=None, sparsity=("0",), beam="1"):
    return ["--data-bin", data_bin or i.data_bin, "--checkpoint", checkpoint or i.ckpt, "--out", out or i.out,
            "--sparsity", *sparsity, "--beam", beam, "--no-progress", *extra]


# fairseq-train arguments of the cases (shown as $TRAIN in docs/hardening.md)
TRAIN = ["--task", "translation", "--arch", "transformer_td_tiny", "--user-dir", "td_fairseq", "--criterion",
         "label_smoothed_cross_entropy_td", "--optimizer", "adam", "--lr", "1e-3", "--cpu", "--max-tokens", "2000",
         "--max-update", "1"]


def _train(i, *extra, data_bin=None, save_dir=None):
    return [data_bin or i.data_bin, *TRAIN, "--save-dir", save_dir or i.path("save"), *extra]


NOT_UTF8 = b"caf\xe9 au lait\n" * 40  # Latin-1
P, S, F = "prune_checkpoint.py", "bleu_vs_sparsity.py", "fairseq-train"
L, R = "launch_distributed.py", "prepare_data.py"

NEW_CASES = [
    # prune_checkpoint.py
    Case("prune: made-up arch name in cfg", P, relabelled("transformer_bogus"), "is not a Transformer this tool knows"),
    Case("prune: non-Transformer arch (lstm) in cfg", P, relabelled("lstm"), "arch 'lstm' is not a Transformer"),
    Case("prune: empty checkpoint file", P, lambda i: [i.write("in/empty.pt", b""), "--sparsity", "0.5",
                                                       "--out-dir", i.out], "cannot read checkpoint"),
    Case("prune: pickle with a class the safe loader refuses", P,
         lambda i: [_evil_pickle(i), "--sparsity", "0.5", "--out-dir", i.out], "Weights only load failed"),
    Case("prune: checkpoint path is a folder", P, lambda i: [i.root, "--sparsity", "0.5", "--out-dir", i.out],
         "checkpoint not found"),
    Case("prune: sparsity NaN", P, lambda i: [i.ckpt, "--sparsity", "nan", "--out-dir", i.out],
         "sparsity must be in [0, 1), got nan"),
    Case("prune: sparsity not a number", P, lambda i: [i.ckpt, "--sparsity", "half", "--out-dir", i.out],
         "invalid float value: 'half'"),
    Case("prune: output path is the input checkpoint", P, lambda i: [i.ckpt, "--sparsity", "0.5", "--out-dir", i.ckpt],
         "exists and is not a directory"),
    Case("prune: output folder under a regular file", P,
         lambda i: [i.ckpt, "--sparsity", "0.5", "--out-dir", os.path.join(i.write("afile", "x"), "sub")],
         "Not a directory"),
    Case("prune: empty --targets", P, lambda i: [i.ckpt, "--sparsity", "0.5", "--targets", "", "--out-dir", i.out],
         "targets must be a comma list"),
    Case("prune: --pruner sparsegpt without --data-bin", P,
         lambda i: [i.ckpt, "--sparsity", "0.5", "--pruner", "sparsegpt", "--out-dir", i.out], "give --data-bin"),
    Case("prune: --pattern 2:3 on 64-wide rows", P,
         lambda i: [i.ckpt, "--pattern", "2:3", "--out-dir", i.out], "not a multiple of M=3"),
    Case("prune: unknown --mode", P, lambda i: [i.ckpt, "--sparsity", "0.5", "--mode", "random", "--out-dir", i.out],
         "invalid choice: 'random'"),
    # bleu_vs_sparsity.py
    Case("sweep: made-up arch name in cfg", S, lambda i: _sweep(i, checkpoint=i.with_arch("transformer_bogus")),
         "arch 'transformer_bogus', not a Transformer"),
    Case("sweep: non-Transformer arch (lstm) in cfg", S, lambda i: _sweep(i, checkpoint=i.with_arch("lstm")),
         "arch 'lstm', not a Transformer"),
    Case("sweep: empty checkpoint file", S, lambda i: _sweep(i, checkpoint=i.write("in/empty.pt", b"")),
         "cannot read checkpoint"),
    Case("sweep: data-bin without its target dictionary", S,
         lambda i: _sweep(i, data_bin=i.data_bin_without("dict.de.txt")), "lacks a file"),
    Case("sweep: data-bin is a file", S, lambda i: _sweep(i, data_bin=i.write("afile", "x")),
         "data-bin directory not found"),
    Case("sweep: empty test set", S, lambda i: _sweep(i, data_bin=i.data_bin_with_test([], [])), "is empty"),
    Case("sweep: misaligned test set (40 source, 39 target sentences)", S,
         lambda i: _sweep(i, data_bin=i.data_bin_with_test(i.test_lines("en"), i.test_lines("de")[:-1])),
         "Source and target must contain the same number of examples"),
    Case("sweep: --ref not UTF-8", S, lambda i: _sweep(i, "--ref", i.write("ref.de", NOT_UTF8)), "is not UTF-8"),
    Case("sweep: --ref missing", S, lambda i: _sweep(i, "--ref", i.path("none.de")), "reference file not found"),
    Case("sweep: --spm missing", S, lambda i: _sweep(i, "--spm", i.path("none.model")),
         "sentencepiece model not found"),
    Case("sweep: --spm not a sentencepiece model", S, lambda i: _sweep(i, "--spm", i.write("spm.model", "x")),
         "cannot read sentencepiece model"),
    Case("sweep: --beam 0", S, lambda i: _sweep(i, beam="0"), "--beam: expected a positive integer, got '0'"),
    Case("sweep: --data-bin is the parent of the data-bin", S, lambda i: _sweep(i, data_bin=os.path.dirname(i.data_bin)),
         "is not a fairseq data-bin: it has no dict.*.txt (did you mean"),
    Case("sweep: --max-tokens below the longest test sentence", S, lambda i: _sweep(i, "--max-tokens", "5"),
         "--max-tokens 5 is below the longest sentence of the 'test' subset"),
    Case("sweep: a vision checkpoint", S, lambda i: _sweep(i, checkpoint=_vision_checkpoint(i)),
         "is a vision checkpoint (td_fairseq.vision"),
    Case("sweep: the same --label twice", S, lambda i: _sweep(i, "--checkpoint", i.ckpt, "--label", "a", "--label", "a"),
         "labels must be unique"),
    Case("sweep: --pattern 4:2", S, lambda i: _sweep(i, "--pattern", "4:2"), "pattern N:M needs 0 <= N < M"),
    Case("sweep: --pruner wanda with --mode unit", S, lambda i: _sweep(i, "--pruner", "wanda", "--mode", "unit"),
         "prunes weights per output row"),
    Case("sweep: --reference-label not a label", S, lambda i: _sweep(i, "--reference-label", "dense"),
         "is not one of the labels"),
    Case("sweep: sparsity NaN", S, lambda i: _sweep(i, sparsity=["nan"]), "sparsity must be in [0, 1), got nan"),
    Case("sweep: --targets output on tied embeddings", S, lambda i: _sweep(i, "--targets", "output"),
         "selects no weight"),
    Case("sweep: output path is the input checkpoint", S, lambda i: _sweep(i, out=i.ckpt),
         "exists and is not a directory"),
    Case("sweep: output folder under a regular file", S,
         lambda i: _sweep(i, out=os.path.join(i.write("afile", "x"), "sub")), "Not a directory"),
    Case("train: --freeze-mask with targeted dropout", F, lambda i: _train(i, "--freeze-mask"),
         "--freeze-mask holds a pruned model's zeros and cannot be combined"),
    # fairseq-train with the TD options (argument parser)
    Case("train: --td-alpha nan", F, lambda i: _train(i, "--td-alpha", "nan"), "--td-alpha: expected a number in [0, 1]",
         exit_code=2),
    Case("train: --td-alpha 1.0001", F, lambda i: _train(i, "--td-alpha", "1.0001"), "--td-alpha: expected a number",
         exit_code=2),
    Case("train: --td-gamma inf", F, lambda i: _train(i, "--td-gamma", "inf"), "--td-gamma: expected a number",
         exit_code=2),
    Case("train: --td-gamma -0.25", F, lambda i: _train(i, "--td-gamma", "-0.25"), "--td-gamma: expected a number",
         exit_code=2),
    Case("train: --td-ramp-updates 1.5", F, lambda i: _train(i, "--td-ramp-updates", "1.5"),
         "expected a non-negative integer", exit_code=2),
    Case("train: --td-targets ','", F, lambda i: _train(i, "--td-targets", ","), "targets must be a comma list",
         exit_code=2),
    # launch_distributed.py
    Case("launch: --nprocs 0", L, lambda i: ["--nprocs", "0", "--", *_train(i)], "--nprocs must be at least 1"),
    Case("launch: no -- before fairseq-train's arguments", L, lambda i: ["--nprocs", "2", *_train(i)[:1]],
         "put fairseq-train's arguments after --"),
    Case("launch: nothing after --", L, lambda i: ["--nprocs", "2", "--"], "no fairseq-train arguments"),
    Case("launch: a distributed option the launcher sets", L,
         lambda i: ["--nprocs", "2", "--", *_train(i, "--distributed-world-size", "4")], "is set by the launcher"),
    Case("launch: --port 70000", L, lambda i: ["--nprocs", "2", "--port", "70000", "--", *_train(i)],
         "--port must be in 1..65535"),
    # prepare_data.py
    Case("prepare: empty test set", R, lambda i: ["--raw-dir", i.raw_dir(test_en=[], test_de=[]), "--dest", i.out],
         "empty test set"),
    Case("prepare: misaligned test set", R,
         lambda i: ["--raw-dir", i.raw_dir(test_de=i.test_lines("de")[:-1]), "--dest", i.out], "misaligned test"),
    Case("prepare: --dest is a regular file", R, lambda i: ["--raw-dir", i.raw_dir(), "--dest", i.write("afile", "x")],
         "exists and is not a directory"),
    # vision scripts
    Case("vision_train: --td-alpha nan", "vision_train.py", lambda i: ["--td-alpha", "nan", "--out", i.path("o/c.pt")],
         "argument --td-alpha: expected a number in [0, 1], got 'nan'"),
    Case("vision_train: --td-ramp-updates -1", "vision_train.py",
         lambda i: ["--td-ramp-updates", "-1", "--out", i.path("o/c.pt")],
         "argument --td-ramp-updates: expected a non-negative integer, got '-1'"),
    Case("vision_train: --out is a folder", "vision_train.py", lambda i: ["--out", i.root], "is a directory"),
    Case("vision_train: --out under a regular file", "vision_train.py",
         lambda i: ["--epochs", "1", "--out", os.path.join(i.write("afile", "x"), "c.pt")],
         "exists and is not a directory"),
    Case("dependence_analysis: --prune-fraction 1", "dependence_analysis.py",
         lambda i: ["--prune-fraction", "1", "--out", i.out], "sparsity must be in [0, 1)"),
    Case("accuracy_vs_sparsity: a fairseq checkpoint", "accuracy_vs_sparsity.py",
         lambda i: ["--checkpoint", i.ckpt, "--out", i.out], "cannot load checkpoint"),
]

def _vision_checkpoint(i):
    from td_fairseq.files import save_torch
    path = i.path("in/vision.pt")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    save_torch({"version": 1, "arch": {"name": "resnet32"}, "td": {}, "state_dict": {}}, path)
    return path


# fairseq's own handling of bad input: not ours to shorten; listed in docs/hardening.md.
FAIRSEQ_CASES = [
    Case("train: data-bin without its target dictionary", F,
         lambda i: _train(i, data_bin=i.data_bin_without("dict.de.txt")), "dict.de.txt", ours=False),
    Case("train: truncated checkpoint_last.pt in --save-dir", F,
         lambda i: _train(i, save_dir=os.path.dirname(
             i.write("resume/checkpoint_last.pt", open(i.checkpoint, "rb").read()[:5000]))),
         "Invalid argument", ours=False),
]
