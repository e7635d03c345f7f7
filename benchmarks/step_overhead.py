"""Training-step time of weight-TD transformer_td vs --td-type none vs stock transformer.

Same model size (3+3 layers, dim 256, ffn 1024, 4 heads), same batches, models stepped in
turn so that machine noise hits all three alike; reports medians and ratios.

    python benchmarks/step_overhead.py [--steps 30] [--tokens 4096] [--size small|wmt] [--device cpu|cuda]

On CUDA each step is bracketed by a device synchronisation, so a step's time includes its
kernels.
"""
import argparse
import statistics
import sys
import time

import torch
from fairseq import options
from fairseq.data import Dictionary
from fairseq.tasks.translation import TranslationTask

import td_fairseq.criterions  # noqa: F401  (registers the criterion)
import td_fairseq.models  # noqa: F401
from td_fairseq.results import git_commit, machine
from td_fairseq.sparsity import td as td_module

TD_SECONDS = [0.0]  # time spent inside TD controllers' forward (select, draw, mask)


def _timed_td_forward(forward):
    def timed(self, weight):
        start = time.perf_counter()
        out = forward(self, weight)
        TD_SECONDS[0] += time.perf_counter() - start
        return out
    return timed

SIZES = {
    "small": ["--encoder-layers", "3", "--decoder-layers", "3", "--encoder-embed-dim", "256",
              "--decoder-embed-dim", "256", "--encoder-ffn-embed-dim", "1024", "--decoder-ffn-embed-dim",
              "1024", "--encoder-attention-heads", "4", "--decoder-attention-heads", "4"],
    "wmt": [],
}


def build(arch, extra, size, dictionary, device):
    parser = options.get_training_parser()
    argv = ["/nonexistent", "--arch", arch, "--task", "translation", "--optimizer", "adam", "--lr", "5e-4",
            "--criterion", "label_smoothed_cross_entropy_td", "--label-smoothing", "0.1",
            "--share-all-embeddings", "--dropout", "0.1", *SIZES[size], *extra]
    args = options.parse_args_and_arch(parser, argv)
    task = TranslationTask(args, dictionary, dictionary)
    model = task.build_model(args).to(device)
    criterion = task.build_criterion(args)
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-4)
    return model, criterion, optimizer


def make_batches(dictionary, n, tokens, length, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    bsz = max(1, tokens // length)
    for _ in range(n):
        src = torch.randint(dictionary.nspecial, len(dictionary), (bsz, length), generator=g)
        tgt = torch.randint(dictionary.nspecial, len(dictionary), (bsz, length), generator=g)
        tgt[:, -1] = dictionary.eos()
        prev = torch.cat([tgt[:, -1:], tgt[:, :-1]], dim=1)
        yield {"net_input": {"src_tokens": src.to(device), "src_lengths": torch.full((bsz,), length, device=device),
                             "prev_output_tokens": prev.to(device)},
               "target": tgt.to(device), "ntokens": tgt.numel()}


def sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def step(model, criterion, optimizer, sample, update, device="cpu"):
    model.train()
    model.set_num_updates(update)
    sync(device)
    start = time.perf_counter()
    optimizer.zero_grad(set_to_none=True)
    loss, _, _ = criterion(model, sample)
    loss.backward()
    optimizer.step()
    sync(device)
    return time.perf_counter() - start


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--tokens", type=int, default=4096, help="target tokens per batch")
    p.add_argument("--length", type=int, default=32)
    p.add_argument("--vocab", type=int, default=8000)
    p.add_argument("--size", choices=sorted(SIZES), default="small")
    p.add_argument("--profile", action="store_true", help="print torch.profiler's top ops for each variant")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    args = p.parse_args(argv)
    torch.manual_seed(0)
    dictionary = Dictionary()
    for i in range(args.vocab):
        dictionary.add_symbol(f"w{i}")
    td_arch = "transformer_td_wmt_en_de" if args.size == "wmt" else "transformer_td"
    stock_arch = "transformer_wmt_en_de" if args.size == "wmt" else "transformer"
    variants = {
        "td_weight": build(td_arch, ["--td-type", "weight", "--td-gamma", "0.75", "--td-alpha", "0.66"],
                           args.size, dictionary, args.device),
        "td_none": build(td_arch, ["--td-type", "none"], args.size, dictionary, args.device),
        "stock": build(stock_arch, [], args.size, dictionary, args.device),
    }
    times = {name: [] for name in variants}
    td_times = []
    batches = list(make_batches(dictionary, args.warmup + args.steps, args.tokens, args.length, args.device))
    td_module.TargetedDropout.forward = _timed_td_forward(td_module.TargetedDropout.forward)
    for i, sample in enumerate(batches):
        for name, (model, criterion, optimizer) in variants.items():
            TD_SECONDS[0] = 0.0
            t = step(model, criterion, optimizer, sample, i, args.device)
            if i >= args.warmup:
                times[name].append(t)
                if name == "td_weight":
                    td_times.append(TD_SECONDS[0])
    median = {name: statistics.median(ts) for name, ts in times.items()}
    if args.profile:
        from torch.profiler import ProfilerActivity, profile
        for name, (model, criterion, optimizer) in variants.items():
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                for i, sample in enumerate(batches[-3:]):
                    step(model, criterion, optimizer, sample, len(batches) + i, args.device)
            print(f"{name}: 3 steps")
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))
    gpu = f" | {torch.cuda.get_device_name(args.device)}" if torch.device(args.device).type == "cuda" else ""
    print(f"commit {git_commit()} | {machine()}{gpu} | torch threads {torch.get_num_threads()}")
    print(f"command: python benchmarks/step_overhead.py {' '.join(argv if argv is not None else sys.argv[1:])}")
    print(f"size {args.size}, {args.tokens} target tokens/batch, {args.steps} timed steps, median seconds:")
    for name, value in median.items():
        print(f"  {name:10s} {value:.4f}")
    print(f"  inside TD forward (select, draw, mask) per td_weight step: {statistics.median(td_times):.4f}")
    print(f"ratio td_weight / td_none = {median['td_weight'] / median['td_none']:.3f}")
    print(f"ratio td_weight / stock   = {median['td_weight'] / median['stock']:.3f}")
    print(f"ratio td_none / stock     = {median['td_none'] / median['stock']:.3f}")
    return median


if __name__ == "__main__":
    main()
