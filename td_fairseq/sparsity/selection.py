"""Which tensors are TD or pruning targets, chosen by a rule on names, not a list.

Transformer modules follow fairseq's naming (q_proj, fc1, embed_tokens, ...); this is a
naming convention only: nothing here imports fairseq.
"""
KINDS = ("attn", "ffn", "embed", "output")
DEFAULT_KINDS = ("attn", "ffn")
_SUFFIXES = {
    "attn": ("q_proj", "k_proj", "v_proj", "out_proj"),
    "ffn": ("fc1", "fc2"),
    "embed": ("embed_tokens",),
    "output": ("output_projection",),
}


def parse_kinds(text) -> tuple:
    """'attn,ffn' -> ('attn', 'ffn'); unknown names raise ValueError."""
    kinds = tuple(k.strip() for k in (text.split(",") if isinstance(text, str) else text) if k.strip())
    unknown = [k for k in kinds if k not in KINDS]
    if unknown or not kinds:
        raise ValueError(f"targets must be a comma list from {','.join(KINDS)}, got {text!r}")
    return kinds


def transformer_weight_kind(name: str):
    """'encoder.layers.0.self_attn.q_proj[.weight]' -> 'attn'; None for non-targets."""
    if name.endswith(".weight"):
        name = name[: -len(".weight")]
    last = name.rsplit(".", 1)[-1]
    for kind, suffixes in _SUFFIXES.items():
        if last in suffixes:
            return kind
    return None


def transformer_selector(kinds=DEFAULT_KINDS):
    """select(name, module) for ``apply_targeted_dropout``."""
    kinds = set(parse_kinds(kinds))
    return lambda name, module: transformer_weight_kind(name) in kinds


def is_weight_matrix_key(key: str, tensor, kinds=DEFAULT_KINDS) -> bool:
    """State-dict rule: a weight of dim >= 2 of a selected kind (never biases or norms)."""
    return key.endswith(".weight") and tensor.dim() >= 2 and transformer_weight_kind(key) in set(kinds)
