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
