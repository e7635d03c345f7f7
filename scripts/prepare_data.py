"""Turn raw parallel files (train, valid, test in .en and .de) into a fairseq data-bin.

    prepare_data.py --raw-dir DIR --dest DIR [--vocab-size 32000] [--src en] [--tgt de]

Leaves DEST/bin (the data-bin), DEST/spm.model and DEST/clean/test.de (the raw reference).
"""
import sys

from td_fairseq import cli


def parse(argv):
    p = cli.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--raw-dir", required=True)
    p.add_argument("--dest", required=True)
    p.add_argument("--vocab-size", type=int, default=32000)
    p.add_argument("--src", default="en")
    p.add_argument("--tgt", default="de")
    p.add_argument("--workers", type=int, default=1)
    return p.parse_args(argv)


def main(argv=None):
    from td_fairseq.tools.prepare import prepare
    args = parse(argv)
    data_bin = prepare(args.raw_dir, args.dest, args.vocab_size, args.src, args.tgt, args.workers)
    print(data_bin)


if __name__ == "__main__":
    sys.exit(cli.run(main))
