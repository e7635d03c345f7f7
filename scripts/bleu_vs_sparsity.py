"""Prune each checkpoint at each sparsity level, translate, and score BLEU and chrF.

    bleu_vs_sparsity.py --data-bin DIR --checkpoint A.pt [--checkpoint B.pt ...] [--label NAME ...]
        --sparsity 0 0.5 0.7 0.9 [--mode weight|unit] [--scope unit|layer|global] [--targets attn,ffn]
        [--score magnitude|own] [--subset test] [--beam 5] [--lenpen 1.0] [--spm SPM_MODEL]
        [--ref RAW_REF] [--reference-label NAME] [--device auto|cpu|cuda] --out DIR

    bleu_vs_sparsity.py --compact --data-bin DIR --checkpoint A.pt --sparsity 0.25 0.5 0.75 --out DIR

Writes DIR/results.csv, DIR/results.json and DIR/bleu_vs_sparsity.png; a rerun skips the rows
already present. --compact instead removes FFN units as compact_checkpoint.py does and reports
BLEU and decoding time of the compact model beside the masked one (DIR/speedup_vs_sparsity.png).
"""
import sys

from td_fairseq import cli
from td_fairseq.sparsity import MODES, SCOPES
from td_fairseq.tools.sweep import SCORES


def parse(argv):
    p = cli.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-bin", required=True)
    p.add_argument("--checkpoint", action="append", required=True)
    p.add_argument("--label", action="append")
    p.add_argument("--sparsity", type=float, nargs="+", required=True)
    p.add_argument("--mode", choices=MODES, default="weight")
    p.add_argument("--scope", choices=SCOPES, default="unit")
    p.add_argument("--targets", default="attn,ffn")
    p.add_argument("--score", choices=SCORES, default="magnitude",
                   help="own: rank by the method's own score (L0 gate, variational log alpha, Smallify "
                        "switch) where it has one for --mode, else by magnitude")
    p.add_argument("--subset", default="test")
    p.add_argument("--beam", type=int, default=5)
    p.add_argument("--lenpen", type=float, default=1.0)
    p.add_argument("--max-len-a", type=float, default=1.2, help="output length bound a*src+b (see docs)")
    p.add_argument("--max-len-b", type=int, default=10)
    p.add_argument("--max-tokens", type=int, default=4000)
    p.add_argument("--spm", help="sentencepiece model to detokenize with")
    p.add_argument("--ref", help="raw reference file, one line per test sentence")
    p.add_argument("--reference-label", help="label whose 0 %% BLEU is the denominator of 'retention'")
    p.add_argument("--compact", action="store_true",
                   help="FFN unit pruning, compact model beside masked: BLEU, identical output, speed-up")
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu or cuda[:N]")
    p.add_argument("--out", required=True)
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


def main(argv=None):
    from td_fairseq.tools.sweep import format_table, run_sweep
    args = parse(argv)
    cli.quiet_fairseq_logging()
    if args.compact:
        return compact(args, argv)
    rows = run_sweep(args.data_bin, args.checkpoint, args.label, args.sparsity, args.out, args.mode, args.scope,
                     args.targets, args.subset, args.beam, args.lenpen, args.max_len_a, args.max_len_b,
                     args.max_tokens, args.spm, args.ref, args.reference_label,
                     command=cli.command_line(argv, __file__),
                     progress=not args.no_progress, score=args.score, device=args.device)
    print(format_table(rows))


def compact(args, argv):
    from td_fairseq.tools.compact_sweep import format_compact_table, run_compact_sweep
    if args.mode != "weight" or args.scope != "unit" or args.targets != "attn,ffn" or args.score != "magnitude":
        raise cli.UserError("--compact ranks FFN units by fc1 row norm: --mode, --scope, --targets and --score "
                            "do not apply")
    rows = run_compact_sweep(args.data_bin, args.checkpoint, args.label, args.sparsity, args.out, args.subset,
                             args.beam, args.lenpen, args.max_len_a, args.max_len_b, args.max_tokens, _spm(args),
                             args.ref, cli.command_line(argv, __file__), args.device)
    print(format_compact_table(rows))


def _spm(args):
    if args.spm is None:
        return None
    from td_fairseq.tools.sweep import load_spm
    return load_spm(args.spm)


if __name__ == "__main__":
    sys.exit(cli.run(main))
