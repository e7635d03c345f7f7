#!/usr/bin/env python
"""Accuracy of vision checkpoints under one-shot pruning of their TD-target convs.

    python scripts/accuracy_vs_sparsity.py --checkpoint a.pt b.pt --label "no TD" "TD" \
        --sparsity 0 0.5 0.7 0.9 --mode weight --scope unit --out out/sweep

Any of the three architectures; each checkpoint is evaluated on the test split of the data
it was trained on (for image folders: ROOT/val of --data-dir, whose classes must be the
checkpoint's).

Writes DIR/results.csv, DIR/results.json and DIR/accuracy_vs_sparsity.png. Weight mode
prunes by |w| (scope unit: per output unit, the paper's); unit mode prunes whole
filters by L2 norm, per layer. --bn-recalibrate N recomputes batch-norm statistics
from N training images at each level (off by default). Bad input: one line on stderr, exit 1, nothing written.
"""
import os
import sys

from td_fairseq.results import SWEEP_COLUMNS, command_line, git_commit, plot_curves, write_rows
from td_fairseq.sparsity import MODES, SCOPES, check_sparsity
from td_fairseq import cli, files
from td_fairseq.sparsity import options
from td_fairseq.vision.distributed import pick_device
from td_fairseq.vision.evaluate import sweep_checkpoints
from td_fairseq.vision.train import BAD_IMAGES, Runtime

PROG = "accuracy_vs_sparsity"
COLUMNS = SWEEP_COLUMNS + ["accuracy", "command", "commit"]


def parse_args(argv):
    p = cli.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", nargs="+", required=True)
    p.add_argument("--label", nargs="+", help="one per checkpoint (default: file names)")
    p.add_argument("--sparsity", type=float, nargs="+", default=[0.0, 0.5, 0.7, 0.9])
    p.add_argument("--mode", choices=MODES, default="weight")
    p.add_argument("--scope", choices=SCOPES, help="default: unit for weight mode, layer for unit mode")
    p.add_argument("--bn-recalibrate", type=int, default=0, metavar="N",
                   help="recompute batch-norm statistics from N training images at each level "
                        "(0: off, the paper's protocol)")
    p.add_argument("--data-dir", help="CIFAR-10/100 python files, or the image folder ROOT, for such checkpoints")
    p.add_argument("--download", action="store_true", help="fetch CIFAR-10/100 into --data-dir if missing")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="auto: the GPU when there is one")
    p.add_argument("--batch-size", type=options.POSITIVE_INT, default=256, help="evaluation batch")
    p.add_argument("--workers", type=options.NON_NEGATIVE_INT, default=0, help="image decoding processes")
    p.add_argument("--bad-images", choices=BAD_IMAGES, default="stop",
                   help="image folders: an unreadable image stops the sweep, or is skipped and counted")
    p.add_argument("--out", required=True, metavar="DIR")
    args = p.parse_args(argv)
    args.label = args.label or [os.path.splitext(os.path.basename(c))[0] for c in args.checkpoint]
    if len(args.label) != len(args.checkpoint):
        raise files.UserError(f"{len(args.checkpoint)} checkpoints but {len(args.label)} labels")
    args.scope = args.scope or ("unit" if args.mode == "weight" else "layer")
    if args.mode == "unit" and args.scope != "layer":
        raise files.UserError("unit pruning ranks the filters of each layer: use --scope layer")
    if args.bn_recalibrate < 0:
        raise files.UserError(f"--bn-recalibrate must be >= 0, got {args.bn_recalibrate}")
    with cli.user_errors():
        args.sparsity = [check_sparsity(s) for s in args.sparsity]
    return args


def body(argv):
    args = parse_args(argv)
    runtime = Runtime(device=str(pick_device(args.device)), workers=args.workers, bad_images=args.bad_images)
    rows = sweep_checkpoints(args.checkpoint, args.label, args.sparsity, args.mode, args.scope,
                             args.data_dir, args.download, args.bn_recalibrate, runtime, args.batch_size)
    command, commit = command_line(argv, __file__), git_commit()
    for row in rows:
        row.update(command=command, commit=commit)
    files.check_out_dir(args.out)
    write_rows(args.out, rows, COLUMNS)
    plot_curves(rows, "accuracy", os.path.join(args.out, "accuracy_vs_sparsity.png"), "test accuracy (%)",
                f"{rows[0]['dataset']}: one-shot {args.mode} pruning, scope {args.scope}"
                + (f"\nbatch norm recalibrated on {args.bn_recalibrate} training images" if args.bn_recalibrate else ""))
    for row in rows:
        print(f"{row['label']:>16s}  sparsity {row['measured_sparsity']:.3f}  accuracy {row['accuracy']:.2f}")


def main(argv=None):
    return cli.run(body, sys.argv[1:] if argv is None else argv, PROG)


if __name__ == "__main__":
    sys.exit(main())
