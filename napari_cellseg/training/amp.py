"""Which autocast precision to use on which device, and why.

CUDA: fp16 with a GradScaler. CPU: bf16 only pays off on CPUs with native bf16 units
(AVX512-BF16 or AMX); on an AVX2-only CPU bf16 training measured slower than fp32
(0.77-0.79x its speed, BENCHMARKS.md "AMP"), so automatic mode trains such CPUs in fp32 and says so.
``amp=True`` forces bf16 anyway.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from .._torch import torch


@lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """True when the CPU advertises bf16 arithmetic (AVX512-BF16 or AMX-BF16)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def autocast_dtype(device: torch.device, amp: bool | None) -> tuple[torch.dtype | None, str | None]:
    """The autocast dtype for ``device`` (None: fp32) and a note for the user when it matters.

    ``amp`` is True (on), False (off) or None (automatic: on where it is faster).
    """
    if amp is False:
        return None, None
    if device.type == "cuda":
        return torch.float16, None
    if device.type == "cpu":
        if cpu_has_native_bf16():
            return torch.bfloat16, None
        if amp:
            return torch.bfloat16, "bf16 autocast on a CPU without native bf16 (AVX2 only) is much slower than fp32"
        return None, "AMP off: this CPU has no native bf16 units, fp32 is faster here (use --amp to force bf16)"
    return None, f"AMP is not used on {device.type}; training in fp32"
