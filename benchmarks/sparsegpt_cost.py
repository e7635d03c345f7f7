"""Seconds to prune a Multi30k-sized Transformer once with magnitude, Wanda and SparseGPT.

A randomly initialised transformer_td model (3+3 layers, dim 256, FFN 512, 4 heads; the
Multi30k size), every attention and FFN matrix selected, calibration on ``--sentences`` random
sentences of ``--length`` tokens fed as teacher-forced batches. Each time includes the
calibration passes the pruner needs: none for magnitude, one for Wanda (then reused by every
level), one per input group and level for SparseGPT (31 groups for 3+3 layers; the first
level adds one pass that finds them, later levels reuse the first group's). "next level" is
0.7 (the same pattern again for 2:4). Target: SparseGPT under 60 s on a 2-core CPU.

    python benchmarks/sparsegpt_cost.py [--threads N] [--level 0.5]
"""
import argparse
import os
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def random_batches(vocab, sentences, length, batch, seed=1):
    import torch
    g = torch.Generator().manual_seed(seed)
    out = []
    for start in range(0, sentences, batch):
        bsz = min(batch, sentences - start)
        src = torch.randint(vocab.nspecial, len(vocab), (bsz, length), generator=g)
        tgt = torch.randint(vocab.nspecial, len(vocab), (bsz, length), generator=g)
        src[:, -1] = tgt[:, -1] = vocab.eos()
        out.append({"src_tokens": src, "src_lengths": torch.full((bsz,), length),
                    "prev_output_tokens": torch.cat([tgt[:, -1:], tgt[:, :-1]], dim=1)})
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sentences", type=int, default=128)
    p.add_argument("--length", type=int, default=14)
    p.add_argument("--vocab", type=int, default=8000)
    p.add_argument("--level", type=float, default=0.5)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    args = p.parse_args(argv)
    sys.path.insert(0, REPO)
    import torch

    from td_fairseq.results import git_commit, machine
    from td_fairseq.sparsity.pruners import make_pruner
    from td_fairseq.sparsity.selection import is_weight_matrix_key
    from td_fairseq.tools.calibration import make_feed
    from td_fairseq.tools.inprocess import build, dictionary

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(1)
    dims = ["--encoder-layers", "3", "--decoder-layers", "3", "--encoder-embed-dim", "256",
            "--decoder-embed-dim", "256", "--encoder-ffn-embed-dim", "512", "--decoder-ffn-embed-dim", "512",
            "--encoder-attention-heads", "4", "--decoder-attention-heads", "4"]
    model, _, vocab = build("transformer_td", ["--td-type", "none", "--share-all-embeddings", *dims],
                            dictionary(args.vocab))
    feed = make_feed(model, random_batches(vocab, args.sentences, args.length, 32))
    weights = {k: p for k, p in model.named_parameters() if is_weight_matrix_key(k, p)}
    start = time.perf_counter()
    feed()
    rows = [("one calibration pass (forward only)", time.perf_counter() - start)]
    for kind, pattern in (("magnitude", None), ("wanda", None), ("sparsegpt", None), ("sparsegpt", "2:4")):
        start = time.perf_counter()
        pruner = make_pruner(kind, model, weights, feed)
        pruner.prune(args.level if pattern is None else None, pattern)
        first = time.perf_counter() - start
        start = time.perf_counter()
        pruner.prune(0.7 if pattern is None else None, pattern)
        passes = f" ({pruner.info['passes']} groups)" if kind == "sparsegpt" else ""
        rows.append((f"{kind} {pattern or args.level}{passes}", first, time.perf_counter() - start))
    print("command: python benchmarks/sparsegpt_cost.py " + " ".join(argv if argv is not None else sys.argv[1:]))
    print(f"commit {git_commit()} | {machine()} | torch threads {torch.get_num_threads()}")
    print(f"model: 3+3 layers, dim 256, FFN 512, 4 heads, vocab {args.vocab}, {len(weights)} matrices; "
          f"{args.sentences} sentences x {args.length} tokens")
    print(f"{'pruner':<36} {'first level s':>14} {'next level s':>13}")
    for row in rows:
        print(f"{row[0]:<36} {row[1]:>14.2f} " + (f"{row[2]:>13.2f}" if len(row) > 2 else ""))
    sparsegpt = rows[3][1]
    print(f"SparseGPT {'meets' if sparsegpt < 60 else 'misses'} the 60 s target ({sparsegpt:.1f} s)")


if __name__ == "__main__":
    main()
