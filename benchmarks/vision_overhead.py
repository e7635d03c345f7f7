#!/usr/bin/env python
"""Training-step time of a vision network with targeted dropout against the same network
without it: same initial weights, same random CIFAR-shaped batches, the two models stepped
in turn (order alternating) so that machine noise hits both alike; medians and their ratio.

    python benchmarks/vision_overhead.py --arch resnet32 --device cpu
    python benchmarks/vision_overhead.py --arch wrn28_10 --device cuda --amp bf16 --batch 128 --channels-last

A step is the training loop's own (``vision.train.train_step``: forward, loss, backward, SGD).
On CUDA each step is bracketed by a device synchronisation. ``--json OUT`` writes the result.
"""
import argparse
import statistics
import sys
import time

import torch

from td_fairseq.files import write_json
from td_fairseq.results import command_line, git_commit, machine
from td_fairseq.sparsity import TD_TYPES, TDConfig, apply_targeted_dropout, options
from td_fairseq.sparsity.td import TargetedDropout
from td_fairseq.vision import ARCHS, Runtime, arch_config, build_network, td_selector, title
from td_fairseq.vision.train import AMP, decay_groups, train_step

TD_SECONDS = [0.0]  # time inside TargetedDropout.forward (selection, draw, mask), with --profile-td


def timed_td_forward(forward, device):
    def timed(self, weight):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        out = forward(self, weight)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        TD_SECONDS[0] += time.perf_counter() - start
        return out
    return timed


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--arch", choices=tuple(ARCHS), default="resnet32")
    p.add_argument("--blocks", type=int, nargs="+", help="the arch's default unless given (tiny variants)")
    p.add_argument("--widths", type=int, nargs="+")
    p.add_argument("--width-factor", type=int)
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--amp", choices=tuple(AMP), default="none")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--steps", type=int, default=30, help="timed steps per model")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps per model first")
    p.add_argument("--batches", type=int, default=4, help="distinct random batches, cycled")
    p.add_argument("--td-type", choices=[t for t in TD_TYPES if t != "none"], default=options.DEFAULTS["td_type"])
    p.add_argument("--td-gamma", type=float, default=options.DEFAULTS["td_gamma"])
    p.add_argument("--td-alpha", type=float, default=options.DEFAULTS["td_alpha"])
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    p.add_argument("--profile-td", action="store_true",
                   help="also time TD's own forward (on CUDA this adds syncs: the step ratio is then biased)")
    p.add_argument("--json", metavar="OUT", help="write the result here too")
    return p.parse_args(argv)


def arch(args) -> dict:
    return arch_config(args.arch, 3, args.classes, blocks=args.blocks, widths=args.widths,
                       width_factor=args.width_factor)


def build(args, td: TDConfig, device):
    torch.manual_seed(0)  # both models start from the same weights
    model = build_network(arch(args))
    if td is not None:
        apply_targeted_dropout(model, td, td_selector)
    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
    model.to(device=device, memory_format=memory_format).train()
    optimizer = torch.optim.SGD(decay_groups(model, 2e-4), lr=0.01, momentum=0.9)
    return model, optimizer, torch.amp.GradScaler(device.type, enabled=args.amp == "fp16")


def run(args, command: str = "") -> dict:
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    runtime = Runtime(device=str(device), amp=args.amp, channels_last=args.channels_last)
    td = TDConfig(args.td_type, args.td_gamma, args.td_alpha)
    models = {"no TD": build(args, None, device), "TD": build(args, td, device)}
    g = torch.Generator().manual_seed(1)
    batches = [(torch.randn(args.batch, 3, args.image_size, args.image_size, generator=g)
                .to(device).contiguous(memory_format=runtime.memory_format),
                torch.randint(0, args.classes, (args.batch,), generator=g).to(device)) for _ in range(args.batches)]
    times = {name: [] for name in models}
    if args.profile_td:
        TargetedDropout.forward = timed_td_forward(TargetedDropout.forward, device)
    for step in range(args.warmup + args.steps):
        x, y = batches[step % len(batches)]
        order = list(models) if step % 2 == 0 else list(models)[::-1]
        for name in order:
            model, optimizer, scaler = models[name]
            if name == "TD" and step == args.warmup:
                TD_SECONDS[0] = 0.0
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            train_step(model, model, optimizer, scaler, x, y, step, 0.01, 0.1, runtime)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if step >= args.warmup:
                times[name].append(time.perf_counter() - start)
    median = {name: statistics.median(t) for name, t in times.items()}
    result = {"arch": title(arch(args)), "device": str(device), "amp": args.amp,
              "channels_last": args.channels_last, "batch": args.batch, "image_size": args.image_size,
              "threads": torch.get_num_threads(), "steps": args.steps, "td": args.td_type,
              "td_gamma": args.td_gamma, "td_alpha": args.td_alpha,
              "median_step_seconds": median, "images_per_second": {n: args.batch / t for n, t in median.items()},
              "ratio_td_over_no_td": median["TD"] / median["no TD"],
              "command": command, "commit": git_commit(), "machine": machine()}
    if args.profile_td:
        result["td_forward_seconds_per_step"] = TD_SECONDS[0] / args.steps
    if device.type == "cuda":
        result["gpu"] = torch.cuda.get_device_name(device)
    return result


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    result = run(args, command_line(argv, __file__))
    print(f"command: {result['command']}\ncommit: {result['commit']}\nmachine: {result['machine']}"
          + (f", {result['gpu']}" if "gpu" in result else "") + f", {result['threads']} torch threads")
    print(f"{result['arch']} on {result['device']}, amp {result['amp']}, batch {result['batch']} x "
          f"{result['image_size']}^2, {result['steps']} steps each, TD {result['td']} gamma {result['td_gamma']} "
          f"alpha {result['td_alpha']}")
    for name in ("no TD", "TD"):
        print(f"  {name:>5s}: median step {1000 * result['median_step_seconds'][name]:8.2f} ms  "
              f"{result['images_per_second'][name]:9.1f} images/s")
    print(f"  TD / no TD: {result['ratio_td_over_no_td']:.3f}")
    if "td_forward_seconds_per_step" in result:
        print(f"  time inside TD's forward: {1000 * result['td_forward_seconds_per_step']:.2f} ms per step")
    if args.json:
        write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
