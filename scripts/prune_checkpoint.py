"""Prune a trained checkpoint at several sparsity levels into stock fairseq checkpoints.

    prune_checkpoint.py CKPT --sparsity 0.5 0.7 0.9 [--pruner magnitude|wanda|sparsegpt] [--pattern 2:4]
                        [--mode weight|unit] [--scope unit|layer|global] [--targets attn,ffn]
                        [--data-bin DIR --calib-sentences 128] [--td-eval-scale] --out-dir DIR

Writes DIR/sparsity_S.pt per level (plain fairseq-generate loads them) and DIR/report.json with the
measured sparsity per tensor, the pattern, the pruner and its calibration.
"""
import sys

from td_fairseq import cli
from td_fairseq.sparsity import MODES, SCOPES
from td_fairseq.sparsity.options import NON_NEGATIVE_INT, PATTERN, POSITIVE_INT, TARGETS
from td_fairseq.tools.sweep import MASK_GROUPS, PRUNERS


def parse(argv):
    p = cli.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint", help="a fairseq checkpoint (TD, baseline or stock Transformer)")
    p.add_argument("--sparsity", type=float, nargs="+",
                   help="levels in [0, 1) (default with --pattern N:M: (M-N)/M; required otherwise)")
    p.add_argument("--pruner", choices=PRUNERS, default="magnitude",
                   help="magnitude (the paper's), wanda or sparsegpt (calibrated on --data-bin's training split)")
    p.add_argument("--pattern", type=PATTERN, default="unstructured",
                   help="unstructured, or N:M: in each group of M consecutive inputs of a row keep N")
    p.add_argument("--mode", choices=MODES, default="weight", help="prune weights, or whole units by L2 norm")
    p.add_argument("--scope", choices=SCOPES, default="unit", help="weight mode: rank per unit, layer or globally")
    p.add_argument("--targets", type=TARGETS, default="attn,ffn", help="comma list from attn,ffn,embed,output")
    p.add_argument("--data-bin", help="data-bin whose training split calibrates wanda and sparsegpt")
    p.add_argument("--calib-sentences", type=POSITIVE_INT, default=128, help="calibration sentences")
    p.add_argument("--calib-seed", type=NON_NEGATIVE_INT, default=1, help="seed of the calibration draw")
    p.add_argument("--mask-groups", choices=MASK_GROUPS, default="row",
                   help="sparsegpt: exactly the level per output row, or per column block (the paper's)")
    p.add_argument("--td-eval-scale", action="store_true",
                   help="prune a TD checkpoint as if trained with --td-eval-scale (its targeted set times 1 - alpha, "
                        "folded into the weights); without it, its trained weights as they are")
    p.add_argument("--bf16", action="store_true",
                   help="wanda/sparsegpt: run the calibration forward in bf16 (autocast; statistics and the "
                        "SparseGPT solve stay fp32)")
    p.add_argument("--out-dir", required=True, help="output folder (not the checkpoint's own)")
    args = p.parse_args(argv)
    if args.bf16 and args.pruner == "magnitude":
        raise cli.UserError("--bf16 sets the calibration forward's precision: it applies to --pruner wanda|sparsegpt")
    if args.sparsity is None:
        if args.pattern == "unstructured":
            raise cli.UserError("--sparsity is required (or give --pattern N:M)")
        from td_fairseq.sparsity.patterns import parse_pattern, pattern_sparsity
        args.sparsity = [pattern_sparsity(parse_pattern(args.pattern))]
    return args


def main(argv=None):
    from td_fairseq.tools.checkpoint import prune_checkpoint
    args = parse(argv)
    if args.pruner != "magnitude":
        cli.quiet_fairseq_logging()
    report = prune_checkpoint(args.checkpoint, args.sparsity, args.out_dir, args.mode, args.scope, args.targets,
                              command=cli.command_line(argv, __file__), pruner=args.pruner, pattern=args.pattern,
                              data_bin=args.data_bin,
                              calibration=(args.calib_sentences, args.calib_seed, args.mask_groups,
                                           "bf16" if args.bf16 else "fp32"),
                              td_eval_scale=args.td_eval_scale)
    for level in report["levels"]:
        print(f"{level['file']}: requested {level['requested_sparsity']:.2f}, measured "
              f"{level['measured_sparsity']:.4f}, pattern {report['pattern']}")


if __name__ == "__main__":
    sys.exit(cli.run(main))
