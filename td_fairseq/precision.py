"""bf16 mixed precision on CPUs and GPUs: where it pays, and the autocast that applies it.

Pure PyTorch (no fairseq). Training and decoding in bf16 mean ``torch.autocast`` around the
forward: the weights stay fp32 (so the targeted set is ranked on the fp32 weights and a dropped
or frozen weight's gradient is exactly zero, as in fp32), matrix products run in bf16, and the
caller casts logits up before the log-softmax. A CPU without native bf16 instructions runs it
through a slow emulation; ``bf16_slow_reason`` says so in one line instead of a silent slowdown.
"""
import contextlib
import functools
import os
import time

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def _cpu_flags() -> set:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def _matmul_ms(dtype, size=384, repeats=4) -> float:
    """The fastest of ``repeats`` products: the minimum is what a busy machine blurs least."""
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    a @ b  # first call pays for kernel selection
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return best * 1e3


@functools.lru_cache(maxsize=None)
def bf16_slow_reason(device_type: str = "cpu"):
    """None where bf16 is expected to be faster than fp32 on ``device_type``, else why not.

    CPU: native bf16 needs AVX-512 BF16 or AMX (x86) or BF16 (Arm) instructions; without them
    oneDNN emulates bf16 and a product is several times slower. The flags alone can mislead (a
    hypervisor may hide them), so a short timing probe confirms: without the flags bf16 must beat
    fp32; with them it must not be clearly slower (1.5x: a loaded machine blurs a 10 ms probe, and
    an emulated product is 3x or more). ``TD_FAIRSEQ_BF16_PROBE=0`` trusts the flags alone."""
    if device_type == "cuda":
        ok = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        return None if ok else "this GPU has no bf16 support"
    if device_type != "cpu":
        return None
    flags = _cpu_flags()
    native = bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})
    capability = torch.backends.cpu.get_cpu_capability()
    if os.environ.get("TD_FAIRSEQ_BF16_PROBE", "1") == "0":
        return None if native else f"this CPU ({capability}) has no native bf16 instructions"
    fp32_ms, bf16_ms = _matmul_ms(torch.float32), _matmul_ms(torch.bfloat16)
    if bf16_ms < fp32_ms * (1.5 if native else 1.0):
        return None
    what = "native bf16 instructions" if native else f"no native bf16 instructions ({capability})"
    return f"this CPU has {what} but a bf16 product took {bf16_ms / fp32_ms:.1f}x the fp32 time"


def warn_if_slow(device_type: str, log) -> None:
    reason = bf16_slow_reason(device_type)
    if reason:
        log(f"td_fairseq: warning: {reason}: bf16 will be slower than fp32 here")


def autocast(device_type: str, dtype: torch.dtype = torch.bfloat16, enabled: bool = True):
    """``torch.autocast`` for ``dtype``, or a no-op context for fp32 (or when not enabled).

    On a CPU in bf16 attention also takes the math kernel: torch 2.13's CPU flash-attention
    kernel is slower in bf16 than in fp32 (its backward 2.5x the fp32 time at Multi30k shapes,
    docs/RESULTS.md), while the math kernel's bf16 matrix products are the fastest of the four."""
    on = enabled and dtype not in (None, torch.float32)
    stack = contextlib.ExitStack()
    stack.enter_context(torch.autocast(device_type=device_type, dtype=dtype if on else torch.bfloat16, enabled=on))
    if on and device_type == "cpu":
        stack.enter_context(sdpa_kernel([SDPBackend.MATH]))
    return stack
