"""Export a checkpoint of ours to CTranslate2 (its own fairseq converter), for serving.

    export_ctranslate2.py CKPT --data-bin BIN --out DIR [--quantization int8|int8_float32|float32] [--spm SPM]

CKPT: a TD or baseline checkpoint (exported to the stock Transformer first), a stock one, a pruned
one (prune_checkpoint.py) or a compact one (compact_checkpoint.py, FFN units; removed heads are
refused). DIR must not exist; it is built beside DIR and renamed when complete, and holds the
CTranslate2 model, the sentencepiece model when given, and export.json (source, quantization,
FFN width per layer, versions, command, commit).
"""
import sys

from td_fairseq import cli
from td_fairseq.tools.ctranslate2_export import QUANTIZATIONS


def parse(argv):
    p = cli.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint", help="a fairseq translation checkpoint of ours")
    p.add_argument("--data-bin", required=True, help="fairseq data-bin with the checkpoint's dict.*.txt")
    p.add_argument("--out", required=True, help="new CTranslate2 model folder")
    p.add_argument("--quantization", choices=QUANTIZATIONS, default="int8", help="weight type stored")
    p.add_argument("--spm", help="sentencepiece model, copied beside the model")
    return p.parse_args(argv)


def main(argv=None):
    from td_fairseq.tools.ctranslate2_export import export_ctranslate2
    args = parse(argv)
    cli.quiet_fairseq_logging()
    info = export_ctranslate2(args.checkpoint, args.data_bin, args.out, args.quantization, args.spm,
                              command=cli.command_line(argv, __file__))
    widths = "; ".join(f"{side} FFN {','.join(map(str, w))}" for side, w in info["ffn_widths"].items())
    print(f"{args.out}: CTranslate2 {info['ctranslate2']}, {info['quantization']}, from {info['source_arch']} "
          f"({widths}; attn+ffn weight sparsity {info['attn_ffn_weight_sparsity']:.4f})")


if __name__ == "__main__":
    sys.exit(cli.run(main))
