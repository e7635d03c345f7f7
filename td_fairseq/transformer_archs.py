"""The TD architectures and the stock fairseq arch each exports to: the one list of arch names.

Fairseq-free on purpose: export and checkpoint checks use it without importing fairseq, and
``models.transformer_td`` registers one TD arch per entry (stock arch plus TD). It lives outside
``models`` and ``tools`` so that the plugin reads it without knowing the tools.
"""
STOCK_ARCH = {
    "transformer_td": "transformer",
    "transformer_td_tiny": "transformer_tiny",
    "transformer_td_iwslt_de_en": "transformer_iwslt_de_en",
    "transformer_td_wmt_en_de": "transformer_wmt_en_de",
    "transformer_td_vaswani_wmt_en_de_big": "transformer_vaswani_wmt_en_de_big",
}
TINY_ARCH = "transformer_td_tiny"  # also sets FFN width 256 (the stock tiny arch has 64)


def is_transformer_arch(arch) -> bool:
    return arch in STOCK_ARCH or arch in STOCK_ARCH.values()
