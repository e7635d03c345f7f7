#!/usr/bin/env python
"""Train a CIFAR-style ResNet with targeted dropout; save a tensors-only checkpoint.

    python scripts/vision_train.py --dataset digits --td-type weight --td-gamma 0.75 \
        --td-alpha 0.5 --epochs 40 --out out/vision/td.pt

Options mirror the Transformer's TD options. Bad input: one line on stderr, exit 1.
"""
import json
import os
import sys

from td_fairseq.results import command_line, git_commit
from td_fairseq.sparsity import TD_TYPES, TDConfig
from td_fairseq.vision import DATASETS, TrainConfig, load_dataset, save_checkpoint, train_resnet
from td_fairseq import cli

PROG = "vision_train"


def parse_args(argv):
    p = cli.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
    p.add_argument("--dataset", choices=DATASETS, default="digits")
    p.add_argument("--data-dir", help="CIFAR-10 python batches (data_batch_1..5, test_batch)")
    p.add_argument("--download", action="store_true", help="fetch CIFAR-10 into --data-dir if missing")
    p.add_argument("--blocks", type=int, default=5, help="basic blocks per stage (5: ResNet-32)")
    p.add_argument("--widths", type=int, nargs="+", default=[16, 32, 64], help="filters per stage")
    p.add_argument("--td-type", choices=TD_TYPES, default="weight", help="what is targeted (none disables TD)")
    p.add_argument("--td-gamma", type=float, default=0.75, help="targeted fraction")
    p.add_argument("--td-alpha", type=float, default=0.66, help="drop probability of a targeted element")
    p.add_argument("--td-ramp-updates", type=int, default=0,
                   help="R: ramp gamma and alpha over R and 2R updates (0: constant)")
    p.add_argument("--td-eval-mask", action="store_true",
                   help="evaluate with the whole targeted set removed (the official code's evaluation)")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--weight-decay", type=float, default=2e-4)
    p.add_argument("--label-smoothing", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true", help="no per-epoch log")
    p.add_argument("--out", required=True, metavar="CKPT", help="checkpoint path to write")
    args = p.parse_args(argv)
    with cli.user_errors():
        args.td = TDConfig(td_type=args.td_type, gamma=args.td_gamma, alpha=args.td_alpha,
                           ramp_updates=args.td_ramp_updates, eval_mask=args.td_eval_mask)
        args.train = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                                 momentum=args.momentum, weight_decay=args.weight_decay,
                                 label_smoothing=args.label_smoothing, seed=args.seed)
        if args.blocks < 1 or min(args.widths) < 1:
            raise ValueError("--blocks and --widths must be positive")
    if os.path.isdir(args.out):
        raise cli.UserError(f"--out {args.out} is a directory; give the checkpoint file to write")
    return args


def log_epoch(entry):
    print(f"epoch {entry['epoch']:3d} updates {entry['updates']:6d} lr {entry['lr']:.4g} "
          f"loss {entry['train_loss']:.4f} test acc {entry['test_accuracy']:.2f} "
          f"({entry['seconds']:.1f}s)", file=sys.stderr, flush=True)


def body(argv):
    args = parse_args(argv)
    data = load_dataset(args.dataset, args.data_dir, args.download)
    cli.check_out_dir(os.path.dirname(os.path.abspath(args.out)))  # before training, not after
    checkpoint = train_resnet(data, args.td, args.train, args.blocks, args.widths,
                              log=None if args.quiet else log_epoch,
                              command=command_line(argv, __file__), commit=git_commit())
    save_checkpoint(args.out, checkpoint)
    summary = dict(checkpoint["metrics"], td_modules=len(checkpoint["metrics"]["td_modules"]))
    print(json.dumps({"checkpoint": args.out, **summary}))


def main(argv=None):
    return cli.run(body, sys.argv[1:] if argv is None else argv, PROG)


if __name__ == "__main__":
    sys.exit(main())
