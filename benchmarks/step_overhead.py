"""Training-step time of weight-TD transformer_td vs --td-type none vs stock transformer.

Same model size, same batches, models stepped in turn (the order alternates every step) so that
machine noise hits all alike; reports medians and ratios. Each step is what fairseq-train does
for one update: forward, backward through fairseq's own optimizer wrapper for the precision
(FP16Optimizer with fp32 master weights for --fp16/--bf16, MemoryEfficientFP16Optimizer for
--memory-efficient-fp16, plain Adam for fp32), gradient norm, step.

    python benchmarks/step_overhead.py [--steps 30] [--tokens 4096] [--size small|multi30k|wmt]
        [--device cpu|cuda] [--precision fp32 fp16 bf16 bf16-fairseq memory-efficient-fp16]
        [--variants td_weight td_none stock ...] [--bf16] [--json OUT.json]

Variants: td_weight (gamma .75, alpha .66), td_interval10 (the same with --td-mask-interval 10),
td_pattern24 (--td-pattern 2:4), td_none, stock. On CUDA each step is bracketed by a device
synchronisation, so a step's time includes its kernels; the "TD forward" column is host time
inside the TD views (on CUDA it counts launches, not kernels).

Precisions: bf16 is what ``fairseq-train --user-dir td_fairseq --bf16`` does (autocast around the
forward over fp32 weights, plain Adam; the stock variant gets the same autocast); bf16-fairseq is
fairseq's own bf16 path (the model cast to bf16, FP16Optimizer with fp32 master weights, --tpu
undone). ``--bf16`` is short for ``--precision fp32 bf16 bf16-fairseq`` and adds each variant's
bf16/fp32 ratio.
"""
import argparse
import logging
import os
import statistics
import sys
import time
import warnings

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from td_fairseq.results import git_commit, machine  # noqa: E402
from td_fairseq.sparsity import td as td_module  # noqa: E402
from td_fairseq.tools import inprocess  # noqa: E402

TD_SECONDS = [0.0]  # time spent inside TD views' forward (select, draw, mask), on the --clock
CLOCK = [time.perf_counter]

SIZES = {
    "small": ["--encoder-layers", "3", "--decoder-layers", "3", "--encoder-embed-dim", "256",
              "--decoder-embed-dim", "256", "--encoder-ffn-embed-dim", "1024", "--decoder-ffn-embed-dim",
              "1024", "--encoder-attention-heads", "4", "--decoder-attention-heads", "4"],
    "multi30k": ["--encoder-layers", "3", "--decoder-layers", "3", "--encoder-embed-dim", "256",
                 "--decoder-embed-dim", "256", "--encoder-ffn-embed-dim", "512", "--decoder-ffn-embed-dim",
                 "512", "--encoder-attention-heads", "4", "--decoder-attention-heads", "4"],  # the study's
    "wmt": [],
    "tiny": ["--encoder-layers", "1", "--decoder-layers", "1", "--encoder-embed-dim", "32",
             "--decoder-embed-dim", "32", "--encoder-ffn-embed-dim", "64", "--decoder-ffn-embed-dim", "64",
             "--encoder-attention-heads", "2", "--decoder-attention-heads", "2"],  # smoke runs only
}
TD = ["--td-type", "weight", "--td-gamma", "0.75", "--td-alpha", "0.66"]
VARIANTS = {  # name: (TD arch?, extra options)
    "td_weight": (True, TD),
    "td_interval10": (True, TD + ["--td-mask-interval", "10"]),
    "td_pattern24": (True, TD + ["--td-pattern", "2:4"]),
    "td_none": (True, ["--td-type", "none"]),
    "stock": (False, []),
}
PRECISIONS = {"fp32": [], "fp16": ["--fp16"], "bf16": ["--bf16"], "bf16-fairseq": ["--bf16"],
              "memory-efficient-fp16": ["--memory-efficient-fp16"]}  # --memory-efficient-bf16: refused by the plugin
# cpu: this process's CPU time, which other work on a shared machine barely moves (1 thread only:
# with more, the threads' spin-waits count too); wall: elapsed time, the only one on CUDA
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
COMMON = ["--optimizer", "adam", "--lr", "5e-4", "--label-smoothing", "0.1", "--share-all-embeddings",
          "--dropout", "0.1"]


def _timed_td_forward(forward):
    def timed(self, weight):
        start = CLOCK[0]()
        out = forward(self, weight)
        TD_SECONDS[0] += CLOCK[0]() - start
        return out
    return timed


def build(variant, size, precision, vocab, device):
    """(model, criterion, fairseq optimizer) as fairseq-train builds them for ``precision``."""
    from fairseq import optim
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf

    is_td, extra = VARIANTS[variant]
    wmt = size == "wmt"
    arch = ("transformer_td_wmt_en_de" if wmt else "transformer_td") if is_td else \
        ("transformer_wmt_en_de" if wmt else "transformer")
    cpu = ["--fp16-no-flatten-grads"] if torch.device(device).type == "cpu" and precision != "fp32" else []
    task, args = inprocess.translation_task(arch, [*COMMON, *SIZES[size], *PRECISIONS[precision], *cpu, *extra],
                                            vocab)
    args.tpu = False  # fairseq 0.12: --bf16 implies --tpu
    if precision == "bf16-fairseq":  # undo td_fairseq's autocast choice: fairseq's own bf16 path
        args.bf16, args.autocast_bf16 = True, False
    torch.manual_seed(0)
    model, criterion = task.build_model(args), task.build_criterion(args)
    dtype = {"fp16": torch.float16, "bf16-fairseq": torch.bfloat16}.get(precision.replace("memory-efficient-", ""))
    model = model.to(device=device, dtype=dtype) if dtype else model.to(device)
    if precision == "bf16" and not getattr(model, "autocast_dtype", None):  # stock: the same autocast
        forward = model.forward
        model.forward = lambda *a, **k: _autocast_call(forward, device, *a, **k)
    cfg = convert_namespace_to_omegaconf(args)
    params = [p for p in model.parameters() if p.requires_grad]
    if precision in ("fp32", "bf16"):
        optimizer = optim.build_optimizer(cfg.optimizer, params)
    elif precision.startswith("memory-efficient"):
        optimizer = optim.MemoryEfficientFP16Optimizer.build_optimizer(cfg, params)
    else:
        optimizer = optim.FP16Optimizer.build_optimizer(cfg, params)
    return model, criterion, optimizer


def _autocast_call(forward, device, *args, **kwargs):
    from td_fairseq.precision import autocast
    with autocast(torch.device(device).type, torch.bfloat16):
        return forward(*args, **kwargs)


def sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def step(model, criterion, optimizer, sample, update, device="cpu", clock=time.perf_counter):
    """One update as fairseq's Trainer does it; an fp16 overflow skips the step (timed all the same)."""
    model.train()
    model.set_num_updates(update)
    sync(device)
    start = clock()
    optimizer.zero_grad()
    loss, sample_size, _ = criterion(model, sample)
    optimizer.backward(loss)
    optimizer.multiply_grads(1.0 / float(sample_size))
    try:
        optimizer.clip_grad_norm(0.0)  # computes the norm (and finds overflows) as fairseq always does
        optimizer.step()
    except OverflowError:
        pass
    sync(device)
    return clock() - start


def measure(args, precision, vocab):
    variants = {name: build(name, args.size, precision, vocab, args.device) for name in args.variants}
    times = {name: [] for name in variants}
    td_times = {name: [] for name in variants}
    batches = inprocess.random_batches(vocab, args.warmup + args.steps, args.tokens, args.length, device=args.device)
    for i, sample in enumerate(batches):
        order = list(variants) if i % 2 else list(variants)[::-1]
        for name in order:
            TD_SECONDS[0] = 0.0
            t = step(*variants[name], sample, i, args.device, CLOCK[0])
            if i >= args.warmup:
                times[name].append(t)
                td_times[name].append(TD_SECONDS[0])
    if args.profile:
        from torch.profiler import ProfilerActivity, profile
        for name, built in variants.items():
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                for i, sample in enumerate(batches[-3:]):
                    step(*built, sample, len(batches) + i, args.device)
            print(f"{name}: 3 steps")
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))
    median = {name: statistics.median(ts) for name, ts in times.items()}
    row = {"precision": precision, "median_seconds": median,
           "td_forward_seconds": {n: statistics.median(ts) for n, ts in td_times.items() if n.startswith("td_")}}
    for name in median:
        for base in ("td_none", "stock"):
            if name != base and base in median and name != "stock":
                row[f"{name}/{base}"] = median[name] / median[base]
    return row


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--tokens", type=int, default=4096, help="target tokens per batch")
    p.add_argument("--length", type=int, default=32)
    p.add_argument("--vocab", type=int, default=8000)
    p.add_argument("--size", choices=sorted(SIZES), default="small")
    p.add_argument("--precision", nargs="+", choices=sorted(PRECISIONS), default=["fp32"])
    p.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=["td_weight", "td_none", "stock"])
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    p.add_argument("--clock", choices=sorted(CLOCKS), default="wall")
    p.add_argument("--profile", action="store_true", help="print torch.profiler's top ops for each variant")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    p.add_argument("--bf16", action="store_true", help="--precision fp32 bf16 bf16-fairseq, with bf16/fp32 ratios")
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args(argv)
    if args.bf16:
        args.precision = ["fp32", "bf16", "bf16-fairseq"]
    logging.disable(logging.INFO)  # fairseq's and hydra's chatter; the table is the output
    warnings.filterwarnings("ignore")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.clock == "cpu" and (torch.device(args.device).type != "cpu" or torch.get_num_threads() != 1):
        p.error("--clock cpu needs --device cpu and --threads 1")
    CLOCK[0] = CLOCKS[args.clock]
    vocab = inprocess.dictionary(args.vocab)
    td_module.TargetedDropout.forward = _timed_td_forward(td_module.TargetedDropout.forward)
    command = "python benchmarks/step_overhead.py " + " ".join(argv if argv is not None else sys.argv[1:])
    gpu = torch.cuda.get_device_name(args.device) if torch.device(args.device).type == "cuda" else None
    result = {"command": command, "commit": git_commit(), "machine": machine(), "gpu": gpu,
              "torch": torch.__version__, "threads": torch.get_num_threads(), "size": args.size,
              "tokens": args.tokens, "steps": args.steps, "clock": args.clock, "load_before": os.getloadavg()[0], "rows": []}
    for precision in args.precision:
        result["rows"].append(measure(args, precision, vocab))
    result["load_after"] = os.getloadavg()[0]
    by_precision = {row["precision"]: row["median_seconds"] for row in result["rows"]}
    if "fp32" in by_precision:
        result["precision_ratios"] = {f"{name} {precision}/fp32": seconds / by_precision["fp32"][name]
                                      for precision, medians in by_precision.items() if precision != "fp32"
                                      for name, seconds in medians.items()}
    print(f"commit {result['commit']} | {result['machine']}{' | ' + gpu if gpu else ''} | torch {torch.__version__}, "
          f"threads {result['threads']} | load {result['load_before']:.1f} -> {result['load_after']:.1f}")
    print(f"command: {command}")
    print(f"size {args.size}, {args.tokens} target tokens/batch, {args.steps} timed steps, median {args.clock} seconds:")
    for row in result["rows"]:
        print(f"[{row['precision']}]")
        for name, value in row["median_seconds"].items():
            inside = row["td_forward_seconds"].get(name)
            print(f"  {name:14s} {value:.4f}" + (f"   inside TD forward {inside:.4f}" if inside else ""))
        for key, value in row.items():
            if "/" in key:
                print(f"  ratio {key:24s} = {value:.3f}")
    for key, value in result.get("precision_ratios", {}).items():
        print(f"ratio {key:30s} = {value:.3f}")
    if args.json:
        from td_fairseq.files import write_json
        write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
