"""Process-level settings that make CPU inference faster.

Matching allocates and frees tensors of tens of MB per pair. glibc serves such blocks with fresh ``mmap``
pages and hands them back on free, so every pair pays for page faults again; with several threads the
faults contend and, measured on a 2-core VM, cost more than the arithmetic (a 640×480 pair: 1.85 s →
1.17 s). :func:`keep_freed_memory` makes glibc keep freed memory for reuse instead (the same effect as
the jemalloc/tcmalloc preloading that PyTorch's CPU tuning guide recommends). The resident size then stays
at its peak rather than shrinking between pairs. ``IMAMatch`` calls it unless ``IMAMATCH_MALLOC=system``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

import torch

_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_done: bool | None = None


def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        return ctypes.CDLL(name)
    except OSError:
        return None


def keep_freed_memory() -> bool:
    """Ask glibc's malloc to serve large blocks from its heap and not return freed memory to the OS.

    Returns True when applied (glibc found; idempotent), False where it does not apply (other C
    libraries, Windows, macOS) or ``IMAMATCH_MALLOC=system`` is set.
    """
    global _done
    if _done is not None:
        return _done
    _done = False
    if os.environ.get("IMAMATCH_MALLOC", "").lower() == "system":
        return False
    libc = _libc()
    mallopt = getattr(libc, "mallopt", None)
    if mallopt is None:
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    _done = bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))
    return _done


def release_freed_memory() -> bool:
    """Hand memory that glibc keeps for reuse back to the OS (``malloc_trim``), e.g. before measuring another
    program's memory in the same process. Returns whether anything could be released (False off glibc)."""
    trim = getattr(_libc(), "malloc_trim", None)
    if trim is None:
        return False
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return bool(trim(0))


def native_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 natively (AVX512-BF16 or AMX), where bfloat16 convolutions take about
    half the time of float32 ones (elsewhere they are emulated, and slower). ``IMAMATCH_BF16=0`` says no."""
    if os.environ.get("IMAMATCH_BF16", "1") == "0":
        return False
    checks = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return any(bool(check()) for check in checks if check is not None)
