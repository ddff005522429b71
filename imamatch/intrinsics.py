"""Camera intrinsics for a photo when none are given: from its EXIF 35 mm-equivalent focal length, else the
prior COLMAP uses (focal = 1.2 × the long side), the principal point at the image centre."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from .errors import ImageError
from .io import open_image, stored_orientation

EXIF_IFD = 0x8769             # the Exif sub-IFD, where the focal length tags live
FOCAL_35MM = 0xA405           # FocalLengthIn35mmFilm (mm)
FULL_FRAME_DIAGONAL = math.hypot(36.0, 24.0)  # mm: a 35 mm-equivalent focal length is relative to this diagonal
PRIOR_FOCAL = 1.2             # × the long side, without EXIF (COLMAP's default prior)


def exif_focal_35mm(path: str | Path) -> float | None:
    """The file's EXIF FocalLengthIn35mmFilm in mm, or None when it has none (or a zero)."""
    with open_image(path) as im:
        value = im.getexif().get_ifd(EXIF_IFD).get(FOCAL_35MM)
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if value > 0 else None


def guess_intrinsics(size: tuple[int, int], focal_35mm: float | None = None) -> np.ndarray:
    """``K`` (3×3) of an image of ``size`` (width, height) as read: focal length from ``focal_35mm`` (scaled by
    the image diagonal against a full frame's), else :data:`PRIOR_FOCAL` × the long side; square pixels; the
    principal point at the centre (pixel centres at integers: ((w - 1) / 2, (h - 1) / 2))."""
    w, h = size
    f = focal_35mm / FULL_FRAME_DIAGONAL * math.hypot(w, h) if focal_35mm else PRIOR_FOCAL * max(w, h)
    return np.array([[f, 0.0, (w - 1) / 2], [0.0, f, (h - 1) / 2], [0.0, 0.0, 1.0]])


def intrinsics_of_file(path: str | Path) -> tuple[np.ndarray, str]:
    """``K`` of the photo at ``path`` as imamatch reads it (EXIF orientation applied: the long side stays the long
    side), and where its focal length came from (for a message). Raises :class:`ImageError` naming the file."""
    try:
        orientation, (w, h) = stored_orientation(path)
        f35 = exif_focal_35mm(path)
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageError(f"cannot read {path}: {e}") from e
    if orientation >= 5:  # a quarter turn: the axes swap
        w, h = h, w
    K = guess_intrinsics((w, h), f35)
    source = (f"from the EXIF 35 mm-equivalent focal length, {f35:g} mm" if f35 else
              f"no EXIF focal length: {PRIOR_FOCAL:g} × the long side, COLMAP's prior; the pose may be off by a few "
              "degrees")
    return K, source
