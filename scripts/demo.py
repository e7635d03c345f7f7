"""The embedded demo (make demo): no-TD and TD models on a synthetic corpus, BLEU against sparsity.

Trains a tiny model without and one with targeted dropout, prunes both 0-90 % and prints BLEU.

    demo.py [--out demo_out] [--max-update N] [--train-pairs 12000] [--test-pairs 500] [--levels 0 0.5 ...]

The recipe (learning rate, TD rates, batch size) is in td_fairseq/tools/demo.py; its measured
result and timing are in docs/RESULTS.md §2.
"""
import argparse
import sys

from td_fairseq import cli
from td_fairseq.sparsity.options import POSITIVE_INT
from td_fairseq.sparsity.prune import check_sparsity


def _sparsity(text):
    try:
        return check_sparsity(float(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"a sparsity level must be a number in [0, 1), not {text!r}")


def parse(argv):
    from td_fairseq.tools.demo import LEVELS, MAX_UPDATE
    p = cli.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="demo_out", help="folder for the corpus, data-bin, checkpoints and sweep; "
                   "a rerun into it skips every finished stage")
    p.add_argument("--max-update", type=POSITIVE_INT, default=MAX_UPDATE, help="training updates of each model")
    p.add_argument("--train-pairs", type=POSITIVE_INT, default=12000, help="synthetic training pairs")
    p.add_argument("--test-pairs", type=POSITIVE_INT, default=500, help="synthetic validation and test pairs (each)")
    p.add_argument("--levels", type=_sparsity, nargs="+", default=LEVELS, help="sparsity levels of the sweep")
    p.add_argument("--dtype", choices=("fp32", "bf16"),
                   help="training and decoding precision (default: bf16 where this CPU runs it natively)")
    return p.parse_args(argv)


def main(argv=None):
    from td_fairseq.tools.demo import run_demo
    args = parse(argv)
    cli.quiet_fairseq_logging()
    run_demo(args.out, train_pairs=args.train_pairs, test_pairs=args.test_pairs, max_update=args.max_update,
             levels=args.levels, command=cli.command_line(argv, __file__), dtype=args.dtype)


if __name__ == "__main__":
    sys.exit(cli.run(main))
