"""The embedded demo (``make demo``): train no-TD and TD tiny models on a synthetic corpus,
prune them 0-90 % and print BLEU against sparsity.

    demo.py [--out demo_out] [--max-update 600] [--train-pairs 12000]
"""
import sys

from td_fairseq import cli


def parse(argv):
    p = cli.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="demo_out")
    p.add_argument("--max-update", type=int, default=600)
    p.add_argument("--train-pairs", type=int, default=12000)
    return p.parse_args(argv)


def main(argv=None):
    from td_fairseq.tools.demo import run_demo
    args = parse(argv)
    cli.quiet_fairseq_logging()
    run_demo(args.out, train_pairs=args.train_pairs, max_update=args.max_update,
             command=cli.command_line(argv, __file__))


if __name__ == "__main__":
    sys.exit(cli.run(main))
