"""Process-level tuning: glibc keeps freed memory for reuse; an environment variable turns it off."""

import os
import subprocess
import sys

import pytest

CODE = "from imamatch.runtime import keep_freed_memory as k; a = k(); b = k(); assert a == b; print(a)"


def _run(env_extra: dict[str, str]) -> str:
    env = {**os.environ, **env_extra}
    return subprocess.run([sys.executable, "-c", CODE], env=env, capture_output=True, text=True,
                          check=True).stdout.strip()


def _glibc() -> bool:
    try:
        return sys.platform.startswith("linux") and bool(os.confstr("CS_GNU_LIBC_VERSION"))
    except (ValueError, OSError):
        return False


@pytest.mark.skipif(not _glibc(), reason="glibc only")
def test_applied_on_glibc_and_idempotent():
    assert _run({"IMAMATCH_MALLOC": ""}) == "True"


def test_opt_out_by_environment():
    assert _run({"IMAMATCH_MALLOC": "system"}) == "False"


@pytest.mark.skipif(not _glibc(), reason="glibc only")
def test_kept_memory_is_handed_back_on_request():
    code = """
import torch
from imamatch.runtime import keep_freed_memory, release_freed_memory
from imamatch.eval.suite import _rss_kib
assert keep_freed_memory()
x = torch.ones(100_000_000)  # 400 MB from the heap
del x
kept = _rss_kib()
release_freed_memory()
print(kept - _rss_kib())
"""
    freed_kib = int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                                   env={**os.environ, "IMAMATCH_MALLOC": ""}).stdout.strip())
    assert freed_kib > 300_000, freed_kib


def _touch_and_free(mib: int) -> None:
    """Fault in ``mib`` MiB of fresh pages (an anonymous mapping, whatever malloc keeps) and unmap them."""
    import mmap

    m = mmap.mmap(-1, mib * 2**20)
    m.write(b"\x01" * (mib * 2**20))
    m.close()


def test_peak_rss_sees_a_short_allocation():
    from imamatch.eval.suite import PeakRSS

    with PeakRSS() as mem:
        _touch_and_free(100)
    assert 90 < mem.peak_mib < 400
    with PeakRSS() as idle:
        pass
    assert idle.peak_mib < 20
    with PeakRSS() as outer:
        _touch_and_free(100)
        with PeakRSS() as inner:  # resets the kernel's mark; the outer peak must survive
            pass
    assert inner.peak_mib < 20 and outer.peak_mib > 90
