"""bf16 where it pays: the capability check and the autocast context (torch only)."""
import torch

from td_fairseq import precision


def test_the_probe_says_whether_bf16_beats_fp32_here(monkeypatch):
    precision.bf16_slow_reason.cache_clear()
    times = {torch.float32: 1.0, torch.bfloat16: 3.0}
    monkeypatch.setattr(precision, "_matmul_ms", lambda dtype: times[dtype])
    monkeypatch.setattr(precision, "_cpu_flags", lambda: {"avx512f"})
    reason = precision.bf16_slow_reason("cpu")
    assert "no native bf16 instructions" in reason and "3.0x the fp32 time" in reason
    precision.bf16_slow_reason.cache_clear()
    times[torch.bfloat16] = 0.3
    assert precision.bf16_slow_reason("cpu") is None
    precision.bf16_slow_reason.cache_clear()


def test_with_native_flags_only_a_clearly_slower_probe_says_slow(monkeypatch):
    monkeypatch.setattr(precision, "_cpu_flags", lambda: {"avx512_bf16"})
    for ratio, slow in ((0.4, False), (1.2, False), (2.0, True)):  # 1.2: a probe blurred by load
        precision.bf16_slow_reason.cache_clear()
        monkeypatch.setattr(precision, "_matmul_ms", lambda dtype: ratio if dtype == torch.bfloat16 else 1.0)
        assert (precision.bf16_slow_reason("cpu") is not None) == slow, ratio
    precision.bf16_slow_reason.cache_clear()


def test_without_the_probe_the_flags_decide(monkeypatch):
    monkeypatch.setenv("TD_FAIRSEQ_BF16_PROBE", "0")
    for flags, slow in (({"avx512_bf16"}, False), ({"amx_bf16"}, False), ({"avx2"}, True)):
        precision.bf16_slow_reason.cache_clear()
        monkeypatch.setattr(precision, "_cpu_flags", lambda: flags)
        assert (precision.bf16_slow_reason("cpu") is not None) == slow
    precision.bf16_slow_reason.cache_clear()


def test_warning_is_one_line_and_only_where_bf16_is_slow(monkeypatch):
    lines = []
    monkeypatch.setattr(precision, "bf16_slow_reason", lambda device: "no bf16 here")
    precision.warn_if_slow("cpu", lines.append)
    monkeypatch.setattr(precision, "bf16_slow_reason", lambda device: None)
    precision.warn_if_slow("cpu", lines.append)
    assert lines == ["td_fairseq: warning: no bf16 here: bf16 will be slower than fp32 here"]


def test_autocast_runs_products_in_bf16_and_is_a_no_op_for_fp32():
    linear = torch.nn.Linear(8, 4)
    x = torch.randn(3, 8)
    with precision.autocast("cpu", torch.bfloat16):
        assert linear(x).dtype == torch.bfloat16
    for dtype, enabled in ((torch.float32, True), (torch.bfloat16, False), (None, True)):
        with precision.autocast("cpu", dtype, enabled=enabled):
            assert torch.equal(linear(x), linear(x)) and linear(x).dtype == torch.float32


def test_attention_under_cpu_bf16_matches_fp32_closely():
    q, k, v = (torch.randn(2, 4, 10, 16) for _ in range(3))
    reference = torch.nn.functional.scaled_dot_product_attention(q, k, v)
    with precision.autocast("cpu", torch.bfloat16):
        out = torch.nn.functional.scaled_dot_product_attention(q.bfloat16(), k.bfloat16(), v.bfloat16())
    assert torch.allclose(out.float(), reference, atol=5e-2)
