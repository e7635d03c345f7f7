"""Turn raw parallel files (train, valid and test, in two languages) into a fairseq data-bin.

    prepare_data.py --raw-dir DIR --dest DIR [--vocab-size 32000] [--src en] [--tgt de] [--workers 1]

DIR holds train.SRC, train.TGT, valid.SRC, valid.TGT, test.SRC and test.TGT: UTF-8, one sentence
a line, aligned, untokenized. Leaves DEST/bin (the data-bin), DEST/spm.model and
DEST/clean/test.TGT (the raw reference); each stage is skipped when its output exists.
"""
import sys

from td_fairseq import cli
from td_fairseq.sparsity.options import POSITIVE_INT


def parse(argv):
    p = cli.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--raw-dir", required=True, help="folder with train, valid and test, each in .SRC and .TGT")
    p.add_argument("--dest", required=True, help="output folder (created; an existing one is resumed)")
    p.add_argument("--vocab-size", type=POSITIVE_INT, default=32000, help="joint sentencepiece vocabulary")
    p.add_argument("--src", default="en", help="source language: the raw files' suffix")
    p.add_argument("--tgt", default="de", help="target language: the raw files' suffix")
    p.add_argument("--workers", type=POSITIVE_INT, default=1, help="processes for sentencepiece and binarizing")
    return p.parse_args(argv)


def main(argv=None):
    from td_fairseq.tools.prepare import prepare
    args = parse(argv)
    data_bin = prepare(args.raw_dir, args.dest, args.vocab_size, args.src, args.tgt, args.workers)
    print(data_bin)


if __name__ == "__main__":
    sys.exit(cli.run(main))
