"""Prune each checkpoint at each sparsity level, translate, and score BLEU and chrF.

    bleu_vs_sparsity.py --data-bin DIR --checkpoint A.pt [--checkpoint B.pt ...] [--label NAME ...]
        --sparsity 0 0.5 0.7 0.9 [--pruner magnitude|wanda|sparsegpt] [--pattern unstructured|2:4]
        [--mode weight|unit] [--scope unit|layer|global] [--targets attn,ffn] [--score magnitude|own]
        [--subset test] [--beam 5] [--spm SPM_MODEL] [--ref RAW_REF] [--reference-label NAME]
        [--td-eval-scale] [--engine fairseq|ctranslate2 [--quantization int8]] --out DIR

    bleu_vs_sparsity.py --compact --data-bin DIR --checkpoint A.pt --sparsity 0.25 0.5 0.75 --out DIR

Writes DIR/results.csv, DIR/results.json and DIR/bleu_vs_sparsity.png. A rerun adds only missing
rows; it refuses a DIR whose rows were made with other data, subset, reference, decoding or
targets (one folder, one set of settings). Labels must be unique; by default a checkpoint's label
is its file name, or its folder's name for fairseq's checkpoint_last.pt / checkpoint_best.pt /
checkpointN.pt. --compact instead removes FFN units as compact_checkpoint.py does and reports BLEU
and decoding time of the compact model beside the masked one (DIR/speedup_vs_sparsity.png).
--engine ctranslate2 converts each level with CTranslate2's fairseq converter and decodes it there
(same batches, length bound and detokenization); every row records the engine and quantization,
and a folder holds one engine.
"""
import sys

from td_fairseq import cli
from td_fairseq.sparsity import MODES, SCOPES
from td_fairseq.sparsity.options import NON_NEGATIVE, NON_NEGATIVE_INT, PATTERN, POSITIVE_INT, TARGETS
from td_fairseq.tools.ctranslate2_export import QUANTIZATIONS
from td_fairseq.tools.sweep import MASK_GROUPS, PRUNERS, SCORES
from td_fairseq.tools.translate import ENGINES


def parse(argv):
    p = cli.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-bin", required=True, help="fairseq data-bin (the folder with dict.*.txt)")
    p.add_argument("--checkpoint", action="append", required=True, help="a checkpoint; repeat for several")
    p.add_argument("--label", action="append", help="one per checkpoint, unique (default: see above)")
    p.add_argument("--sparsity", type=float, nargs="+", help="levels in [0, 1) (default with --pattern N:M: "
                   "0 and (M-N)/M; required otherwise)")
    p.add_argument("--pruner", choices=PRUNERS, default="magnitude",
                   help="magnitude (the paper's), wanda (|w| * input norm) or sparsegpt (OBS updates); the last "
                        "two calibrate on --calib-sentences training sentences")
    p.add_argument("--pattern", type=PATTERN, default="unstructured",
                   help="unstructured, or N:M: in each group of M consecutive inputs of a row keep N")
    p.add_argument("--mask-groups", choices=MASK_GROUPS, default="row",
                   help="sparsegpt: exactly the level per output row (TD's target set) or per column block "
                        "(the paper's)")
    p.add_argument("--calib-sentences", type=POSITIVE_INT, default=128, help="wanda/sparsegpt calibration size")
    p.add_argument("--calib-seed", type=NON_NEGATIVE_INT, default=1, help="seed of the calibration draw")
    p.add_argument("--mode", choices=MODES, default="weight", help="prune weights, or whole units by L2 norm")
    p.add_argument("--scope", choices=SCOPES, default="unit", help="weight mode: rank per unit, layer or globally")
    p.add_argument("--targets", type=TARGETS, default="attn,ffn", help="comma list from attn,ffn,embed,output")
    p.add_argument("--score", choices=SCORES, default="magnitude",
                   help="own: rank by the method's own score (L0 gate, variational log alpha, Smallify "
                        "switch) where it has one for --mode, else by magnitude")
    p.add_argument("--subset", default="test", help="data-bin subset to translate")
    p.add_argument("--beam", type=POSITIVE_INT, default=5, help="beam size")
    p.add_argument("--lenpen", type=NON_NEGATIVE, default=1.0, help="length penalty")
    p.add_argument("--max-len-a", type=NON_NEGATIVE, default=1.2, help="output length bound a*src+b (see docs)")
    p.add_argument("--max-len-b", type=NON_NEGATIVE_INT, default=10, help="output length bound a*src+b")
    p.add_argument("--max-tokens", type=POSITIVE_INT, default=4000, help="tokens per decoding batch")
    p.add_argument("--spm", help="sentencepiece model to detokenize with")
    p.add_argument("--ref", help="raw reference file, one line per sentence of the subset")
    p.add_argument("--reference-label", help="label whose 0 %% BLEU is the denominator of 'retention'")
    p.add_argument("--td-eval-scale", action="store_true",
                   help="evaluate each TD checkpoint as if trained with --td-eval-scale (its targeted set times "
                        "1 - alpha); without it, as trained with plain TD. Rows of both share a folder")
    p.add_argument("--compact", action="store_true",
                   help="FFN unit pruning, compact model beside masked: BLEU, identical output, speed-up")
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu or cuda[:N]")
    p.add_argument("--engine", choices=ENGINES, default="fairseq",
                   help="decode with fairseq, or convert each level with CTranslate2's converter and decode there")
    p.add_argument("--bf16", action="store_true",
                   help="decode in bf16 (autocast over the pruned fp32 weights; fairseq engine). A folder holds "
                        "rows of one dtype")
    p.add_argument("--quantization", choices=QUANTIZATIONS,
                   help="--engine ctranslate2: weight type of the converted model (default float32)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    if args.sparsity is None and args.pattern == "unstructured":
        raise cli.UserError("--sparsity is required (or give --pattern N:M)")
    return args


def configs(args):
    from td_fairseq.sparsity.patterns import parse_pattern, pattern_sparsity
    from td_fairseq.sparsity.sweep import SweepConfig
    from td_fairseq.tools.translate import DecodeConfig
    with cli.user_errors():
        pattern = parse_pattern(args.pattern)
        levels = args.sparsity if args.sparsity is not None else [0.0, pattern_sparsity(pattern)]
        config = SweepConfig(tuple(levels), args.mode, args.scope, pattern, args.pruner)
        decode = DecodeConfig(args.subset, args.beam, args.lenpen, args.max_len_a, args.max_len_b, args.ref, args.spm,
                              engine=args.engine, quantization=args.quantization,
                              dtype="bf16" if args.bf16 else "fp32")
    if config.pattern is not None and any(s not in (0, config.level_of(1)) for s in config.levels):
        raise cli.UserError(f"with --pattern {args.pattern} the sparsity is {config.level_of(1):g}: give "
                            f"--sparsity 0 {config.level_of(1):g}, or leave it out")
    return config, decode


def main(argv=None):
    from td_fairseq.tools.sweep import format_seconds, format_table, run_sweep
    args = parse(argv)
    config, decode = configs(args)
    cli.quiet_fairseq_logging()
    if args.bf16:
        from td_fairseq.precision import warn_if_slow
        from td_fairseq.tools.translate import resolve_device
        warn_if_slow(resolve_device(args.device).split(":")[0], lambda line: print(line, file=sys.stderr))
    if args.compact:
        return compact(args, argv, decode)
    rows = run_sweep(args.data_bin, args.checkpoint, args.label, config, decode, args.out, args.targets,
                     args.max_tokens, args.reference_label, command=cli.command_line(argv, __file__),
                     progress=not args.no_progress, score=args.score, device=args.device,
                     calibration=(args.calib_sentences, args.calib_seed, args.mask_groups),
                     td_eval_scale=args.td_eval_scale)
    print(format_table(rows))
    print(format_seconds(rows))


def compact(args, argv, decode):
    if args.td_eval_scale:
        raise cli.UserError("--compact evaluates each checkpoint as its options say: --td-eval-scale does not apply")
    from td_fairseq.tools.compact_sweep import format_compact_table, run_compact_sweep
    if (args.mode, args.scope, args.targets, args.score, args.pruner, args.pattern) != (
            "weight", "unit", "attn,ffn", "magnitude", "magnitude", "unstructured"):
        raise cli.UserError("--compact ranks FFN units by fc1 row norm: --mode, --scope, --targets, --score, "
                            "--pruner and --pattern do not apply")
    rows = run_compact_sweep(args.data_bin, args.checkpoint, args.label, args.sparsity, args.out, decode,
                             args.max_tokens, cli.command_line(argv, __file__), args.device)
    print(format_compact_table(rows))


if __name__ == "__main__":
    sys.exit(cli.run(main))
