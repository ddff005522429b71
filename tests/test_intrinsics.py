"""Intrinsics guessed for photos without given ones: EXIF 35 mm-equivalent focal length, else COLMAP's prior."""

import math

import numpy as np
from PIL import Image

from imamatch.intrinsics import PRIOR_FOCAL, guess_intrinsics, intrinsics_of_file


def _photo(path, size, focal_35mm=None, orientation=None):
    exif = Image.Exif()
    if focal_35mm is not None:
        exif.get_ifd(0x8769)[0xA405] = focal_35mm
    if orientation is not None:
        exif[0x0112] = orientation
    Image.fromarray(np.full(size[::-1], 128, np.uint8)).save(path, exif=exif)


def test_a_full_frame_image_with_its_35mm_focal_gets_the_focal_in_pixels():
    """A 36 × 24 mm frame imaged at 3600 × 2400 px (100 px/mm): 50 mm → 5000 px."""
    K = guess_intrinsics((3600, 2400), 50.0)
    np.testing.assert_allclose(K, [[5000, 0, 1799.5], [0, 5000, 1199.5], [0, 0, 1]])
    np.testing.assert_allclose(guess_intrinsics((640, 480))[0, 0], PRIOR_FOCAL * 640)


def test_exif_focal_and_orientation_are_read_from_the_file(tmp_path):
    _photo(tmp_path / "a.jpg", (400, 300), focal_35mm=26, orientation=6)  # stored 400 × 300, shown 300 × 400
    K, source = intrinsics_of_file(tmp_path / "a.jpg")
    np.testing.assert_allclose(K[0, 0], 26 / math.hypot(36, 24) * 500)
    np.testing.assert_allclose(K[:2, 2], [149.5, 199.5])
    assert "26 mm" in source
    _photo(tmp_path / "b.png", (400, 300))
    K, source = intrinsics_of_file(tmp_path / "b.png")
    assert K[0, 0] == PRIOR_FOCAL * 400 and "no EXIF focal length" in source
