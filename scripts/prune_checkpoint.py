"""Prune a trained checkpoint at several sparsity levels into stock fairseq checkpoints.

    prune_checkpoint.py CKPT --sparsity 0.5 0.7 0.9 [--mode weight|unit] [--scope unit|layer|global]
                        [--targets attn,ffn] --out-dir DIR
"""
import sys

from td_fairseq import cli
from td_fairseq.sparsity import MODES, SCOPES


def parse(argv):
    p = cli.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint")
    p.add_argument("--sparsity", type=float, nargs="+", required=True)
    p.add_argument("--mode", choices=MODES, default="weight")
    p.add_argument("--scope", choices=SCOPES, default="unit")
    p.add_argument("--targets", default="attn,ffn")
    p.add_argument("--out-dir", required=True)
    return p.parse_args(argv)


def main(argv=None):
    from td_fairseq.tools.checkpoint import prune_checkpoint
    args = parse(argv)
    report = prune_checkpoint(args.checkpoint, args.sparsity, args.out_dir, args.mode, args.scope, args.targets,
                              command=cli.command_line(argv, __file__))
    for level in report["levels"]:
        print(f"{level['file']}: requested {level['requested_sparsity']:.2f}, measured {level['measured_sparsity']:.4f}")


if __name__ == "__main__":
    sys.exit(cli.run(main))
