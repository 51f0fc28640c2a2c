"""Mixed precision (``train.amp`` / ``test.amp``): which autocast dtype a device can run.

bf16 runs on CUDA and on CPUs with bf16 instructions (AVX512-BF16 or AMX-BF16), where oneDNN's bf16 kernels
are faster than float32; elsewhere it falls back to float32 with one warning. fp16 is CUDA-only (on CPU it
falls back the same way). The capability is read once from the CPU's flags; ``AMCFD_CPU_BF16=0|1`` overrides it.
"""
from __future__ import annotations

import functools
import os
import warnings

import torch

from amcfd.registry import ConfigError

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
_warned: set = set()


@functools.lru_cache(maxsize=1)
def _cpu_flags() -> frozenset:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


TRUE, FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")     # AMCFD_CPU_BF16, any case


def cpu_bf16_supported() -> bool:
    """True where the CPU has bf16 instructions (AVX512-BF16 or AMX-BF16), or AMCFD_CPU_BF16=1 says so."""
    forced = os.environ.get("AMCFD_CPU_BF16")
    if forced is not None:
        value = forced.strip().lower()
        if value not in TRUE + FALSE:
            raise ConfigError(f"environment variable AMCFD_CPU_BF16 must be one of {', '.join(TRUE + FALSE)}, "
                              f"got {forced!r}")
        return value in TRUE
    return any(flag in _cpu_flags() for flag in CPU_BF16_FLAGS)


def amp_dtype(amp, device: torch.device, option: str) -> torch.dtype | None:
    """The autocast dtype for ``option`` (false/null | bf16 | fp16) on ``device``; None = float32.

    A setting this device cannot run warns once (per option, value and device) and returns None."""
    if not amp:
        return None
    if amp not in AMP_DTYPES:
        raise ConfigError(f"option '{option}' must be false, bf16 or fp16, got {amp!r}")
    device = torch.device(device)
    if device.type == "cuda" or (device.type == "cpu" and amp == "bf16" and cpu_bf16_supported()):
        return AMP_DTYPES[amp]
    why = "fp16 needs CUDA" if amp == "fp16" else f"bf16 needs CUDA or a CPU with {' or '.join(CPU_BF16_FLAGS)}"
    if (option, amp, device.type) not in _warned:
        _warned.add((option, amp, device.type))
        warnings.warn(f"option '{option}: {amp}': {why}; running in float32 on {device.type}", stacklevel=3)
    return None
