#!/usr/bin/env python
"""Train a ResNet-32, Wide ResNet-28-10 or ResNet-50 with targeted dropout.

Saves a tensors-only checkpoint.

    python scripts/vision_train.py --dataset digits --td-type weight --td-gamma 0.75 \\
        --td-alpha 0.5 --epochs 40 --out out/vision/td.pt
    torchrun --nproc_per_node 8 scripts/vision_train.py --arch resnet50 --dataset folder \\
        --data-dir /data/imagenet --workers 8 --amp bf16 --channels-last --out out/r50.pt

Options mirror the Transformer's TD and baseline options (--sparsity-method other than td
puts that baseline on the TD targets instead). Under torchrun, --batch-size is per process,
rank 0 alone writes --out (atomically, after every epoch), and --resume CKPT continues a run
(same command plus --resume). Bad input: one line on stderr, exit 1.
"""
import json
import os
import sys

from td_fairseq import cli, files
from td_fairseq.results import command_line, git_commit
from td_fairseq.sparsity import options
from td_fairseq.vision import (ARCHS, DATASETS, Runtime, TrainConfig, arch_config, distributed, load_dataset,
                               read_checkpoint, title, train_resnet)
from td_fairseq.vision.experiment import check_resumable
from td_fairseq.vision.train import AMP, BAD_IMAGES

PROG = "vision_train"
# --td-targets names Transformer layers (the ResNets' are chosen by td_selector); the frozen-mask
# fine-tune is the Transformer's
SKIPPED_OPTIONS = ("td_targets", "freeze_mask")


def parse_args(argv):
    p = cli.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
    g = p.add_argument_group("data")
    g.add_argument("--dataset", choices=DATASETS, default="digits")
    g.add_argument("--data-dir", help="cifar10/100: the python pickle files; folder: ROOT with "
                                      "ROOT/train/CLASS/*.jpg|png and ROOT/val/CLASS/...")
    g.add_argument("--download", action="store_true", help="fetch CIFAR-10/100 into --data-dir if missing")
    g.add_argument("--image-size", type=options.POSITIVE_INT, default=224, metavar="S",
                   help="folder: train on random resized S x S crops, evaluate on the centre crop")
    g.add_argument("--bad-images", choices=BAD_IMAGES, default="stop",
                   help="folder: an unreadable image stops the run (naming it), or is skipped and counted")
    g.add_argument("--workers", type=options.NON_NEGATIVE_INT, default=0, help="data loading processes")
    g = p.add_argument_group("network")
    g.add_argument("--arch", choices=tuple(ARCHS), default="resnet32")
    g.add_argument("--blocks", type=options.POSITIVE_INT, nargs="+",
                   help="blocks per stage (resnet32: 5, wrn28_10: 4 = (28-4)/6, resnet50: 3 4 6 3)")
    g.add_argument("--widths", type=options.POSITIVE_INT, nargs="+",
                   help="base filters per stage (resnet32, wrn28_10: 16 32 64; resnet50: 64 128 256 512)")
    g.add_argument("--width-factor", type=options.POSITIVE_INT, help="wrn28_10: widths times k (10)")
    g.add_argument("--dropout", type=options.UNIT_INTERVAL, help="wrn28_10: dropout between the convs (0)")
    options.add_arguments(p, skip=SKIPPED_OPTIONS)
    g = p.add_argument_group("training")
    g.add_argument("--epochs", type=options.POSITIVE_INT, default=30)
    g.add_argument("--lr", type=options.POSITIVE, default=0.1)
    g.add_argument("--lr-milestones", type=float, nargs="+", default=[0.5, 0.75], metavar="F",
                   help="multiply the lr by --lr-factor after these fractions of the updates")
    g.add_argument("--lr-factor", type=options.UNIT_INTERVAL, default=0.1, metavar="F")
    g.add_argument("--batch-size", type=options.POSITIVE_INT, default=128, help="per process")
    g.add_argument("--momentum", type=options.MOMENTUM, default=0.9)
    g.add_argument("--weight-decay", type=options.NON_NEGATIVE, default=2e-4)
    g.add_argument("--label-smoothing", type=options.UNIT_INTERVAL, default=0.1)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--resume", metavar="CKPT", help="continue the run that wrote CKPT (the same command)")
    g = p.add_argument_group("execution")
    g.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="auto: this process's GPU when there is one")
    g.add_argument("--amp", choices=tuple(AMP), default="none", help="mixed precision: bf16 on a CPU or GPU, fp16 on a GPU")
    g.add_argument("--channels-last", action="store_true", help="NHWC memory format (faster convs on GPUs)")
    g.add_argument("--sync-bn", action="store_true",
                   help="under torchrun: batch-norm statistics of the whole global batch, not per process")
    g.add_argument("--quiet", action="store_true", help="no progress bar and no per-epoch log")
    p.add_argument("--out", required=True, metavar="CKPT", help="checkpoint path to write")
    args = p.parse_args(argv)
    with cli.user_errors():
        options.check_combination(args)
        args.td = options.td_config(args)
        args.baseline = options.baseline_config(args)
        args.train = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                                 momentum=args.momentum, weight_decay=args.weight_decay,
                                 label_smoothing=args.label_smoothing, lr_milestones=tuple(args.lr_milestones),
                                 lr_factor=args.lr_factor, seed=args.seed)
        args.shape = dict(blocks=args.blocks, widths=args.widths, width_factor=args.width_factor,
                          dropout=args.dropout)
        arch_config(args.arch, 3, 10, **args.shape)  # checked before any data is read
    if os.path.isdir(args.out):
        raise files.UserError(f"--out {args.out} is a directory; give the checkpoint file to write")
    return args


def log_epoch(entry):
    skipped = f" skipped {entry['skipped_images']} unreadable images" if entry.get("skipped_images") else ""
    print(f"epoch {entry['epoch']:3d} updates {entry['updates']:6d} lr {entry['lr']:.4g} "
          f"loss {entry['train_loss']:.4f} test acc {entry['test_accuracy']:.2f} "
          f"{entry['images_per_second']:.0f} images/s ({entry['seconds']:.1f}s){skipped}", file=sys.stderr, flush=True)


def progress_bar(iterable, total, epoch):
    from tqdm import tqdm
    return tqdm(iterable, total=total, desc=f"epoch {epoch}", unit="batch", leave=False, file=sys.stderr)


def run(args, argv):
    ranks, device = distributed.setup(args.device)
    with cli.user_errors():
        runtime = Runtime(device=str(device), workers=args.workers, amp=args.amp, channels_last=args.channels_last,
                          sync_bn=args.sync_bn, bad_images=args.bad_images)
    if args.amp == "bf16" and ranks.is_main:
        from td_fairseq.precision import warn_if_slow
        warn_if_slow(str(device).split(":")[0], lambda line: print(line, file=sys.stderr))
    data = load_dataset(args.dataset, args.data_dir, args.download, args.image_size)
    with cli.user_errors():
        arch = arch_config(args.arch, data.in_channels, data.num_classes, **args.shape)
    resume = None
    if args.resume:
        resume = read_checkpoint(args.resume)
        check_resumable(resume, args.resume, arch, args.td, args.baseline, args.train, data)
    if ranks.is_main:
        files.check_out_dir(os.path.dirname(os.path.abspath(args.out)))  # before training, not after
    quiet = args.quiet or not ranks.is_main
    if not quiet:
        print(f"{title(arch)} on {data.name} ({data.num_classes} classes), {ranks.world} process(es) on {device}, "
              f"batch {args.batch_size} per process, amp {args.amp}", file=sys.stderr, flush=True)
    save = (lambda checkpoint: files.save_torch(checkpoint, args.out)) if ranks.is_main else None
    checkpoint = train_resnet(data, args.td, args.train, arch, log=None if quiet else log_epoch,
                              command=command_line(argv, __file__), commit=git_commit(), baseline=args.baseline,
                              runtime=runtime, resume=resume, on_epoch=save,
                              progress=None if quiet else progress_bar)
    if ranks.is_main:
        files.save_torch(checkpoint, args.out)
        summary = dict(checkpoint["metrics"], td_modules=len(checkpoint["metrics"]["td_modules"]))
        print(json.dumps({"checkpoint": args.out, **summary}))


def body(argv):
    args = parse_args(argv)
    try:
        run(args, argv)
    finally:
        distributed.teardown()


def main(argv=None):
    return cli.run(body, sys.argv[1:] if argv is None else argv, PROG)


if __name__ == "__main__":
    sys.exit(main())
