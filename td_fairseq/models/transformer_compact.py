"""``transformer_compact``: a stock Transformer whose layers have their own FFN widths and head counts.

Compacted checkpoints (``td_fairseq/tools/compact.py``) use it when stock fairseq's config cannot
say their shapes: after attention heads are removed each head keeps its size, while stock fairseq
derives the head size as embed_dim / heads; and FFN widths that differ between layers. Widths come
from the checkpoint's cfg (comma lists, one entry per layer; empty or absent means full width).

Nothing of fairseq's Transformer is copied: the parent class builds the full-width model, then each
listed layer gets smaller fc1/fc2 from its own ``build_fc1``/``build_fc2`` factories, and smaller
attention from fairseq's own head-pruning method (``_adaptive_prune_heads``, the one its AdaPrune
uses at load time). The weights then come from the checkpoint, so only shapes matter here.
"""
from fairseq.models import register_model, register_model_architecture
from fairseq.models.transformer import TransformerModel
from fairseq.models.transformer.transformer_legacy import base_architecture

# cfg key -> (side, attribute of each layer); "fc1" means the FFN width.
WIDTH_KEYS = {
    "compact_encoder_ffn": ("encoder", "fc1"),
    "compact_decoder_ffn": ("decoder", "fc1"),
    "compact_encoder_heads": ("encoder", "self_attn"),
    "compact_decoder_heads": ("decoder", "self_attn"),
    "compact_decoder_cross_heads": ("decoder", "encoder_attn"),
}


def parse_widths(text, layers: int, key: str) -> list:
    """'128,96' -> [128, 96]; None or '' -> [] (full width). Wrong counts raise ValueError."""
    if text is None or str(text).strip() == "":
        return []
    try:
        widths = [int(w) for w in str(text).split(",")]
    except ValueError:
        raise ValueError(f"--{key.replace('_', '-')} must be a comma list of integers, got {text!r}")
    if len(widths) != layers or min(widths) < 1:
        raise ValueError(f"--{key.replace('_', '-')} needs {layers} positive widths (one per layer), got {text!r}")
    return widths


def shrink_ffn(layer, width: int) -> None:
    if width == layer.fc1.out_features:
        return
    if getattr(layer, "ffn_layernorm", None) is not None:
        raise ValueError("FFN compaction does not support --scale-fc (its LayerNorm spans all FFN units)")
    q_noise, block = layer.quant_noise, layer.quant_noise_block_size
    layer.fc1 = layer.build_fc1(layer.fc1.in_features, width, q_noise, block)
    layer.fc2 = layer.build_fc2(width, layer.fc2.out_features, q_noise, block)


def shrink_heads(layer, name: str, heads: int) -> None:
    attention = getattr(layer, name)
    if heads == attention.num_heads:
        return
    if getattr(layer, "attn_ln", None) is not None or getattr(layer, "c_attn", None) is not None:
        raise ValueError("head compaction does not support --scale-attn or --scale-heads")
    size = attention.head_dim
    attention._adaptive_prune_heads([(h * size, (h + 1) * size) for h in range(heads)])
    # q/k/v are now narrower than the model: take fairseq's general path, not torch's fused one
    attention._set_skip_embed_dim_check()


@register_model("transformer_compact")
class TransformerCompactModel(TransformerModel):
    """fairseq's Transformer with per-layer FFN widths and attention head counts."""

    @classmethod
    def add_args(cls, parser):
        super().add_args(parser)
        group = parser.add_argument_group("compact widths (one comma list entry per layer)")
        for key, (side, module) in WIDTH_KEYS.items():
            what = "FFN width" if module == "fc1" else f"{module} heads"
            group.add_argument("--" + key.replace("_", "-"), metavar="LIST", help=f"{what} of each {side} layer")

    @classmethod
    def build_model(cls, args, task):
        model = super().build_model(args, task)
        for key, (side, module) in WIDTH_KEYS.items():
            layers = getattr(model, side).layers
            for layer, width in zip(layers, parse_widths(getattr(args, key, None), len(layers), key)):
                if module == "fc1":
                    shrink_ffn(layer, width)
                else:
                    shrink_heads(layer, module, width)
        return model


@register_model_architecture("transformer_compact", "transformer_compact")
def transformer_compact(args):
    for key in WIDTH_KEYS:
        setattr(args, key, getattr(args, key, None))
    base_architecture(args)
