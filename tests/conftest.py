"""Shared fixtures: the shared data folder (tests that need it skip when it is absent) and the matcher."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

SHARED = Path(os.environ.get("IMAMATCH_SHARED_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared() -> Path:
    if not (SHARED / "graf").is_dir():
        pytest.skip(f"shared data not found at {SHARED} (set IMAMATCH_SHARED_DATA)")
    return SHARED


@pytest.fixture(scope="session")
def matcher():
    from imamatch import IMAMatch

    return IMAMatch.from_pretrained()
