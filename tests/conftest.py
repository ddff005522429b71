"""Shared fixtures: the shared data folder (tests that need it skip when it is absent), the matcher, test photos."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from skimage import data

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


@pytest.fixture(scope="session")
def twin_photos():
    """Three photos and a perspective-warped, brightened view of each: (names, images)."""
    names, images = [], []
    H = np.array([[0.9, 0.08, 20], [-0.05, 0.95, 10], [1e-4, 5e-5, 1]])
    for name, im in (("astronaut", data.astronaut()), ("coffee", data.coffee()), ("chelsea", data.chelsea())):
        gray = cv2.cvtColor(im, cv2.COLOR_RGB2GRAY)
        other = cv2.warpPerspective(gray, H, (gray.shape[1], gray.shape[0]), borderMode=cv2.BORDER_REFLECT)
        names += [f"{name}_a", f"{name}_b"]
        images += [gray, np.clip(other * 1.2 + 10, 0, 255).astype(np.uint8)]
    return names, images
