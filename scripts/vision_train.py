#!/usr/bin/env python
"""Train a CIFAR-style ResNet with targeted dropout; save a tensors-only checkpoint.

    python scripts/vision_train.py --dataset digits --td-type weight --td-gamma 0.75 \
        --td-alpha 0.5 --epochs 40 --out out/vision/td.pt

Options mirror the Transformer's TD and baseline options (--sparsity-method other than td
puts that baseline on the TD targets instead). Bad input: one line on stderr, exit 1.
"""
import json
import os
import sys
from dataclasses import replace

from td_fairseq.results import command_line, git_commit
from td_fairseq.sparsity import TD_TYPES, TDConfig
from td_fairseq.sparsity.baselines import L0_FORMS, METHODS, BaselineConfig
from td_fairseq.vision import BASELINE_DEFAULTS, DATASETS, TrainConfig, load_dataset, save_checkpoint, train_resnet
from td_fairseq import cli

PROG = "vision_train"
BASELINE_OPTIONS = [name for name, _ in BASELINE_DEFAULTS if name != "sparsity_method"]


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
    p.add_argument("--sparsity-method", choices=("td",) + METHODS,
                   help="td, or a baseline on the TD targets (the --td-* options then only set --drop-rate)")
    p.add_argument("--drop-rate", type=float, metavar="P",
                   help="dropout/unit_dropout rate (default: td-gamma * td-alpha, the matching rate)")
    p.add_argument("--l1-coef", type=float, metavar="C", help="l1: coef * sum |w|")
    p.add_argument("--l0-coef", type=float, metavar="C", help="l0: coef * expected open gates")
    p.add_argument("--l0-form", choices=L0_FORMS, help="l0: one gate per weight or per unit (row)")
    p.add_argument("--vd-coef", type=float, metavar="C", help="variational: coef * KL")
    p.add_argument("--gmp-sparsity", type=float, metavar="S", help="gmp: final sparsity")
    p.add_argument("--gmp-start", type=int, metavar="T0", help="gmp: first mask update")
    p.add_argument("--gmp-steps", type=int, metavar="N", help="gmp: number of mask updates")
    p.add_argument("--gmp-interval", type=int, metavar="DT", help="gmp: updates between masks")
    p.add_argument("--smallify-coef", type=float, metavar="C", help="smallify: coef * sum |switch|")
    p.add_argument("--smallify-momentum", type=float, metavar="M",
                   help="smallify: momentum of the switch-sign mean and variance")
    p.add_argument("--smallify-threshold", type=float, metavar="T",
                   help="smallify: remove a unit once its switch-sign variance exceeds T")
    p.set_defaults(**dict(BASELINE_DEFAULTS))
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
        rate = args.td_gamma * args.td_alpha if args.drop_rate is None else args.drop_rate
        # checked even under td, as the Transformer's option types check them
        checked = BaselineConfig(METHODS[0], rate, **{name: getattr(args, name) for name in BASELINE_OPTIONS})
        args.baseline = None if args.sparsity_method == "td" else replace(checked, method=args.sparsity_method)
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
                              command=command_line(argv, __file__), commit=git_commit(), baseline=args.baseline)
    save_checkpoint(args.out, checkpoint)
    summary = dict(checkpoint["metrics"], td_modules=len(checkpoint["metrics"]["td_modules"]))
    print(json.dumps({"checkpoint": args.out, **summary}))


def main(argv=None):
    return cli.run(body, sys.argv[1:] if argv is None else argv, PROG)


if __name__ == "__main__":
    sys.exit(main())
