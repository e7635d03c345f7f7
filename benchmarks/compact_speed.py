"""Decoding speed of compact checkpoints against the dense model, and file size of the sparse form.

A randomly initialised transformer_td (TD off) where the FFN dominates, on a made-up dictionary:
trained weights do not change the work per token. Every output is forced to the same length
(min_len = max_len), so dense and compact models decode exactly the same number of steps and the
tokens-per-second ratio is the time ratio. Models are timed in turn, repeatedly, and medians kept,
so that machine noise hits all alike. Checkpoints go through the real files and fairseq's loader.

    python benchmarks/compact_speed.py [--layers 6] [--dim 256] [--ffn 2048] [--levels 0.25 0.5 0.75]
                                       [--threads 1] [--size-checkpoint CKPT] [--device cpu|cuda]

Target: compact / dense decode speed >= 1.5 at 50 % unit sparsity.
"""
import argparse
import logging
import os
import statistics
import sys
import tempfile
import time
import warnings

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


def dense_checkpoint(directory: str, args) -> str:
    """The random model built through fairseq's own option parsing, saved as a stock checkpoint."""
    from td_fairseq.tools.inprocess import random_checkpoint
    dims = ["--encoder-layers", args.layers, "--decoder-layers", args.layers, "--encoder-embed-dim", args.dim,
            "--decoder-embed-dim", args.dim, "--encoder-ffn-embed-dim", args.ffn, "--decoder-ffn-embed-dim",
            args.ffn, "--encoder-attention-heads", args.heads, "--decoder-attention-heads", args.heads]
    return random_checkpoint(directory, ["--td-type", "none", *dims], name="dense.pt")


def load(path: str, data: str, device="cpu"):
    from fairseq import checkpoint_utils
    models, _, task = checkpoint_utils.load_model_ensemble_and_task([path], {"data": data})
    return models[0].eval().to(device), task


def decode_seconds(model, task, samples, beam: int, out_len: int):
    """(seconds, output tokens) to decode ``samples`` with every output forced to ``out_len`` tokens."""
    from fairseq.dataclass.configs import GenerationConfig
    generator = task.build_generator([model], GenerationConfig(beam=beam, max_len_a=0, max_len_b=out_len,
                                                               min_len=out_len))
    tokens = 0
    cuda = next(model.parameters()).is_cuda
    if cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    with torch.no_grad():
        for sample in samples:
            for hypos in task.inference_step(generator, [model], sample):
                tokens += hypos[0]["tokens"].numel()
    if cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - start, tokens


def speed_table(dense_path, data, args):
    from td_fairseq.tools.compact import compact_checkpoint
    from td_fairseq.tools.inprocess import source_batches
    paths = {"dense": dense_path}
    for level in args.levels:
        paths[f"{level:.2f}"] = os.path.join(os.path.dirname(dense_path), f"compact_{level:.2f}.pt")
        compact_checkpoint(dense_path, level, paths[f"{level:.2f}"])
    models = {name: load(path, data, args.device) for name, path in paths.items()}
    params = {name: sum(p.numel() for p in m.parameters()) for name, (m, _) in models.items()}
    dictionary = models["dense"][1].source_dictionary
    settings = {1: source_batches(dictionary, args.sentences_batch1, 1, args.src_len, device=args.device),
                64: source_batches(dictionary, args.sentences_batch64, 64, args.src_len, seed=1, device=args.device)}
    times = {(name, b): [] for name in models for b in settings}
    tokens = {}
    for repeat in range(args.repeats + 1):  # pass 0 warms up (allocator, first calls) and is not kept
        order = list(models) if repeat % 2 else list(models)[::-1]  # alternate, so drift hits all alike
        for b, samples in settings.items():
            for name in order:
                model, task = models[name]
                seconds, tokens[(name, b)] = decode_seconds(model, task, samples, args.beam, args.out_len)
                if repeat:
                    times[(name, b)].append(seconds)
    rows = []
    for name in models:
        row = {"model": name, "parameters": params[name]}
        for b in settings:
            median = statistics.median(times[(name, b)])
            row[f"tok_s_b{b}"] = tokens[(name, b)] / median
            row[f"ratio_b{b}"] = statistics.median(times[("dense", b)]) / median
        rows.append(row)
    return rows


def size_table(dense_path, levels, kinds="attn,ffn"):
    """Dense-file and packed-file bytes of the weight-pruned checkpoint at each level."""
    from td_fairseq.sparsity import PruneRanking
    from td_fairseq.files import save_torch
    from td_fairseq.tools.checkpoint import prunable_weights, stock_checkpoint
    from td_fairseq.tools.loading import load_checkpoint
    from td_fairseq.tools.sparse_storage import encode_tensor, pack_file
    state = stock_checkpoint(load_checkpoint(dense_path))
    weights = prunable_weights(state["model"], kinds)
    ranking = PruneRanking(weights, "weight", "unit")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for level in levels:
            pruned = ranking.prune(weights, level)
            dense, packed = os.path.join(tmp, "pruned.pt"), os.path.join(tmp, "pruned.packed")
            save_torch(dict(state, model={**state["model"], **pruned}), dense)
            pack_file(dense, packed)
            entries = [encode_tensor(t) for t in pruned.values()]
            sparse_bytes = sum(e["values"].numel() * e["values"].element_size() + e["mask"].numel()
                               if e is not None else t.numel() * t.element_size()
                               for e, t in zip(entries, pruned.values()))
            dense_bytes = sum(t.numel() * t.element_size() for t in pruned.values())
            rows.append({"sparsity": level, "dense_bytes": os.path.getsize(dense),
                         "packed_bytes": os.path.getsize(packed),
                         "file_ratio": os.path.getsize(packed) / os.path.getsize(dense),
                         "pruned_tensors_ratio": sparse_bytes / dense_bytes,
                         "pruned_share": dense_bytes / os.path.getsize(dense)})
    return rows


def print_sizes(title, rows):
    print(f"\n{title}")
    print("| weight sparsity (attn+ffn) | dense file | packed file | file ratio | pruned tensors ratio |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['sparsity'] * 100:.0f} % | {r['dense_bytes']} | {r['packed_bytes']} | {r['file_ratio']:.3f} "
              f"| {r['pruned_tensors_ratio']:.3f} |")
    print(f"(attn+ffn weights are {rows[0]['pruned_share'] * 100:.0f} % of the dense file)")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--layers", type=int, default=6)
    p.add_argument("--dim", type=int, default=256)
    p.add_argument("--ffn", type=int, default=2048)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--vocab", type=int, default=1000, help="made-up dictionary size")
    p.add_argument("--levels", type=float, nargs="+", default=[0.25, 0.5, 0.75], help="FFN unit sparsity")
    p.add_argument("--beam", type=int, default=5)
    p.add_argument("--src-len", type=int, default=20)
    p.add_argument("--out-len", type=int, default=20, help="every output is forced to this many tokens")
    p.add_argument("--sentences-batch1", type=int, default=8)
    p.add_argument("--sentences-batch64", type=int, default=64)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--size-levels", type=float, nargs="+", default=[0.0, 0.5, 0.7, 0.8, 0.9, 0.95])
    p.add_argument("--size-checkpoint", help="also measure sparse file sizes of this (trained) checkpoint")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N] (decoding only)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    logging.disable(logging.INFO)  # fairseq's loading chatter; the tables are the output
    warnings.filterwarnings("ignore")
    from td_fairseq.results import git_commit, machine
    print("command: python benchmarks/compact_speed.py " + " ".join(argv if argv is not None else sys.argv[1:]))
    gpu = f" | {torch.cuda.get_device_name(args.device)}" if args.device.startswith("cuda") else ""
    print(f"commit {git_commit()} | {machine()}{gpu} | torch {torch.__version__}, {torch.get_num_threads()} thread(s)")
    from td_fairseq.tools.inprocess import write_dictionaries
    with tempfile.TemporaryDirectory() as tmp:
        write_dictionaries(tmp, args.vocab)
        dense = dense_checkpoint(tmp, args)
        rows = speed_table(dense, tmp, args)
        sizes = size_table(dense, args.size_levels)
    print(f"\nmodel: {args.layers}+{args.layers} layers, dim {args.dim}, ffn {args.ffn}, {args.heads} heads, "
          f"vocab {args.vocab}; beam {args.beam}, source {args.src_len} tokens, output forced to {args.out_len}; "
          f"batch 1: {args.sentences_batch1} sentences, batch 64: {args.sentences_batch64}; "
          f"median of {args.repeats} interleaved runs after one warm-up pass")
    print("| FFN units removed | parameters | tok/s batch 1 | speed-up batch 1 | tok/s batch 64 | speed-up batch 64 |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        label = "0 % (dense)" if r["model"] == "dense" else f"{float(r['model']) * 100:.0f} %"
        print(f"| {label} | {r['parameters']} | {r['tok_s_b1']:.1f} | {r['ratio_b1']:.2f} | {r['tok_s_b64']:.1f} "
              f"| {r['ratio_b64']:.2f} |")
    print_sizes("sparse storage, the same random model, weight pruning per unit (prune_checkpoint.py default):", sizes)
    if args.size_checkpoint:
        print_sizes(f"sparse storage, {args.size_checkpoint}:", size_table(args.size_checkpoint, args.size_levels))
    return rows, sizes


if __name__ == "__main__":
    main()
