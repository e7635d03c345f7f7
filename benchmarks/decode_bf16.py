"""Beam decoding in fp32 against bf16 (autocast, as ``bleu_vs_sparsity.py --bf16``): seconds,
identical hypotheses, BLEU.

    python benchmarks/decode_bf16.py --checkpoint CKPT --data-bin BIN [--subset test] [--spm SPM]
        [--ref RAW_REF] [--beam 4] [--threads 2] [--repeats 2] [--json OUT.json]

One model, loaded once; the two precisions decode the whole subset in turn, ``--repeats`` times
(alternating which goes first), and the fastest pass of each counts. Wall-clock seconds: run it
on an idle machine.
"""
import argparse
import logging
import os
import sys
import warnings
from dataclasses import replace

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from td_fairseq.files import write_json  # noqa: E402
from td_fairseq.results import git_commit, machine  # noqa: E402
from td_fairseq.tools.loading import load_translation_model  # noqa: E402
from td_fairseq.tools.translate import (DecodeConfig, bleu_chrf, load_spm, load_subset, read_reference,  # noqa: E402
                                        translate)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--data-bin", required=True)
    p.add_argument("--subset", default="test")
    p.add_argument("--spm")
    p.add_argument("--ref", help="raw reference (default: the data-bin's target side, detokenized)")
    p.add_argument("--beam", type=int, default=4)
    p.add_argument("--max-tokens", type=int, default=4000)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--json")
    args = p.parse_args(argv)
    logging.disable(logging.WARNING)
    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)
    model, task, _ = load_translation_model(args.checkpoint, args.data_bin)
    sentences = load_subset(task, args.data_bin, args.subset)
    spm = load_spm(args.spm) if args.spm else None
    decode = DecodeConfig(args.subset, args.beam, ref=args.ref, spm=args.spm)
    seconds, hyps = {"fp32": [], "bf16": []}, {}
    for repeat in range(args.repeats):
        for dtype in (["fp32", "bf16"] if repeat % 2 == 0 else ["bf16", "fp32"]):
            out, refs, took = translate(model, task, replace(decode, dtype=dtype), args.max_tokens, spm)
            seconds[dtype].append(took)
            hyps[dtype] = out
    refs = read_reference(args.ref, sentences) if args.ref else refs
    scores = {dtype: bleu_chrf(hyps[dtype], refs) for dtype in hyps}
    same = sum(a == b for a, b in zip(hyps["fp32"], hyps["bf16"])) / sentences
    result = {"command": "python benchmarks/decode_bf16.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "commit": git_commit(), "machine": machine(), "torch": torch.__version__, "threads": args.threads,
              "sentences": sentences, "beam": args.beam, "load": os.getloadavg()[0],
              "seconds": {d: min(s) for d, s in seconds.items()}, "all_seconds": seconds,
              "bleu": {d: s[0] for d, s in scores.items()}, "chrf": {d: s[1] for d, s in scores.items()},
              "signature": scores["fp32"][2], "identical_hypotheses": same}
    result["bf16/fp32 seconds"] = result["seconds"]["bf16"] / result["seconds"]["fp32"]
    result["bleu bf16 - fp32"] = result["bleu"]["bf16"] - result["bleu"]["fp32"]
    print(f"commit {result['commit']} | {result['machine']} | torch {torch.__version__}, {args.threads} threads, "
          f"load {result['load']:.1f}")
    print(f"{sentences} sentences, beam {args.beam}: fp32 {result['seconds']['fp32']:.1f} s, bf16 "
          f"{result['seconds']['bf16']:.1f} s (ratio {result['bf16/fp32 seconds']:.3f}); BLEU fp32 "
          f"{result['bleu']['fp32']:.2f}, bf16 {result['bleu']['bf16']:.2f}; identical hypotheses {same:.3f}")
    if args.json:
        write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
