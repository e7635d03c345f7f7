"""Store weight-pruned checkpoints small, and restore them exactly.

    sparse_checkpoint.py pack CKPT OUT        nonzero values + packed bitmasks (loads weights-only)
    sparse_checkpoint.py unpack PACKED OUT.pt the original dense fairseq checkpoint, bit for bit
"""
import sys

from td_fairseq import cli


def parse(argv):
    p = cli.ArgumentParser(description=__doc__.splitlines()[0])
    commands = p.add_subparsers(dest="command", required=True)
    pack = commands.add_parser("pack", help="write the sparse form of a fairseq checkpoint")
    pack.add_argument("checkpoint")
    pack.add_argument("out")
    unpack = commands.add_parser("unpack", help="restore the dense fairseq checkpoint")
    unpack.add_argument("packed")
    unpack.add_argument("out")
    return p.parse_args(argv)


def main(argv=None):
    from td_fairseq.tools.sparse_storage import pack_file, unpack_file
    args = parse(argv)
    if args.command == "pack":
        sizes = pack_file(args.checkpoint, args.out)
        print(f"{args.out}: {sizes['packed_bytes']} bytes, {sizes['packed_bytes'] / sizes['input_bytes']:.3f} of "
              f"{args.checkpoint} ({sizes['sparse_tensors']} tensors stored sparse)")
    else:
        sizes = unpack_file(args.packed, args.out)
        print(f"{args.out}: {sizes['output_bytes']} bytes")


if __name__ == "__main__":
    sys.exit(cli.run(main))
