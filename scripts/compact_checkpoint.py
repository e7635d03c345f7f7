"""Remove pruned FFN units (and optionally attention heads) from a checkpoint, so it decodes faster.

    compact_checkpoint.py CKPT --unit-sparsity 0.5 [--heads] --out OUT.pt [--masked-out MASKED.pt]

Units are ranked per layer by the L2 norm of their fc1 row (as prune_checkpoint.py --mode unit);
--heads also removes the same fraction of each attention module's heads. Without --heads the
output is a stock fairseq checkpoint; with heads removed it needs --user-dir td_fairseq.
--masked-out also writes the reference: the same units zeroed at full width, which translates
identically.
"""
import sys

from td_fairseq import cli


def parse(argv):
    p = cli.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint")
    p.add_argument("--unit-sparsity", type=float, required=True, help="fraction of FFN units removed per layer")
    p.add_argument("--heads", action="store_true", help="also remove that fraction of each module's attention heads")
    p.add_argument("--out", required=True)
    p.add_argument("--masked-out", help="also write the masked (zeroed, full-width) reference here")
    return p.parse_args(argv)


def main(argv=None):
    from td_fairseq.tools.compact import compact_checkpoint
    args = parse(argv)
    report = compact_checkpoint(args.checkpoint, args.unit_sparsity, args.out, args.heads, args.masked_out,
                                command=cli.command_line(argv, __file__))
    before, after = report["parameters_before"], report["parameters_after"]
    print(f"{args.out}: arch {report['arch']}, parameters {before} -> {after} ({after / before:.3f})")
    for name, values in report["widths"].items():
        if values:
            print(f"  {name}: {','.join(map(str, values))}")


if __name__ == "__main__":
    sys.exit(cli.run(main))
