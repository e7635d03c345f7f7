"""Data-parallel fairseq-train on CPU: one process per rank on this machine, gloo backend.

    launch_distributed.py --nprocs N [--port P] -- DATA_BIN --user-dir td_fairseq --arch ... (fairseq-train args)

Adds --cpu and the distributed options for each rank, waits for all ranks, and if one fails
stops the others and exits non-zero. On GPUs use plain fairseq-train (docs/distributed.md).
"""
import sys

from td_fairseq import cli


def parse(argv):
    argv = list(sys.argv[1:] if argv is None else argv)
    p = cli.ArgumentParser(description=__doc__.splitlines()[0],
                           usage="%(prog)s --nprocs N [--port P] -- DATA_BIN <fairseq-train args>")
    p.add_argument("--nprocs", type=int, required=True, help="number of ranks (processes)")
    p.add_argument("--port", type=int, help="rendezvous port on 127.0.0.1 (default: a free one)")
    if "--" not in argv:
        if {"-h", "--help"} & set(argv):
            p.parse_args(["--help"])  # prints the usage and exits 0
        raise cli.UserError("put fairseq-train's arguments after --, e.g. --nprocs 2 -- DATA_BIN --arch ...")
    split = argv.index("--")
    args = p.parse_args(argv[:split])
    args.train_args = argv[split + 1:]
    return args


def main(argv=None):
    from td_fairseq.tools.distributed import launch
    args = parse(argv)
    launch(args.train_args, args.nprocs, args.port)


if __name__ == "__main__":
    sys.exit(cli.run(main))
