"""Turning user images (paths, numpy arrays, PIL images, torch tensors) into grayscale float arrays, with clear
errors, and preparing them for the network (resize, pad to a multiple of 8 or 32, validity mask)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

import cv2
import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageError

ImageInput = Union[str, Path, np.ndarray, Image.Image, torch.Tensor]

MAX_DECODE_PIXELS = 30_000 * 30_000  # refuse larger files (decompression bombs); 20000 px sides are fine
HEIF_SUFFIXES = frozenset({".heic", ".heif"})  # iPhone photos: read with the optional pillow-heif package
HEIF_MISSING = "HEIC/HEIF images need the optional pillow-heif package (pip install pillow-heif)"
_heif: bool | None = None


def heif_support() -> bool:
    """Whether HEIC/HEIF files can be read: the optional ``pillow-heif`` package, registered with Pillow once."""
    global _heif
    if _heif is None:
        try:
            import pillow_heif
        except ImportError:
            _heif = False
        else:
            pillow_heif.register_heif_opener()
            _heif = True
    return _heif


def open_image(path: str | Path) -> Image.Image:
    """``Image.open`` with the decompression-bomb limit set and HEIC/HEIF support registered; raises
    :class:`ImageError` for a HEIC/HEIF file when ``pillow-heif`` is not installed."""
    path = Path(path)
    if path.suffix.lower() in HEIF_SUFFIXES and not heif_support():
        raise ImageError(f"{HEIF_MISSING}: {path}")
    Image.MAX_IMAGE_PIXELS = MAX_DECODE_PIXELS
    return Image.open(path)


def _name(src: Any, name: str | None) -> str:
    if name:
        return name
    if isinstance(src, (str, Path)):
        return str(src)
    return f"{type(src).__name__} input"


def read_image(path: str | Path, max_side: int | None = None) -> np.ndarray:
    """Read an image file as grayscale float32 ``(H, W)`` in [0, 1], EXIF orientation applied.

    ``max_side``: JPEGs are decoded at a reduced scale where that still leaves ≥ ``max_side`` pixels
    (bounded memory for huge files; :func:`read_image_sized` also gives the file's full size). Raises
    :class:`ImageError` naming the file.
    """
    return read_image_sized(path, max_side)[0]


def read_image_sized(path: str | Path, max_side: int | None = None) -> tuple[np.ndarray, tuple[int, int]]:
    """:func:`read_image` and the file's full-resolution ``(H, W)`` after EXIF orientation (larger than the
    array's shape where the JPEG was decoded at a reduced scale)."""
    path = Path(path)
    if not path.exists():
        raise ImageError(f"image not found: {path}")
    if not path.is_file():
        raise ImageError(f"not a file: {path}")
    if path.stat().st_size == 0:
        raise ImageError(f"empty (zero-byte) image file: {path}")
    try:
        with open_image(path) as im:
            full_w, full_h = im.size
            if max_side and im.format == "JPEG":
                im.draft("L", (max_side, max_side))
            reduced_w, reduced_h = im.size
            im = ImageOps.exif_transpose(im)
            arr = _pil_to_gray(im)
    except Image.DecompressionBombError as e:
        raise ImageError(f"image too large to decode safely ({e}): {path}") from e
    except ImageError:
        raise
    except UnidentifiedImageError as e:
        raise ImageError(f"not an image file (format not recognised): {path}") from e
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageError(f"corrupt or truncated image file {path}: {e}") from e
    full = (full_h, full_w) if arr.shape == (reduced_h, reduced_w) else (full_w, full_h)  # EXIF swapped the axes
    return arr, full


CHECK_SIDE = 64  # JPEGs are checked by a decode at their smallest reduced scale (1/8): the whole file is read


def unreadable_reason(path: str | Path) -> str | None:
    """Why :func:`read_image` would fail on ``path`` (missing, empty, not an image, truncated, too large), or
    None when it reads. Cheaper than reading it: JPEGs are decoded at 1/8 scale, other formats only checked
    (PNG: every chunk's checksum, the pixels not decompressed)."""
    path = Path(path)
    if not path.is_file():
        return "not found" if not path.exists() else "not a file"
    if path.stat().st_size == 0:
        return "empty (zero-byte) file"
    if path.suffix.lower() in HEIF_SUFFIXES and not heif_support():
        return HEIF_MISSING
    try:
        with open_image(path) as im:
            if im.format == "JPEG":
                im.draft("L", (CHECK_SIDE, CHECK_SIDE))
                im.load()
            else:
                im.verify()
    except Image.DecompressionBombError as e:
        return f"too large to decode safely ({e})"
    except UnidentifiedImageError:
        return "not an image file (format not recognised)"
    except (OSError, SyntaxError, ValueError) as e:
        return f"corrupt or truncated ({e})"
    return None


EXIF_ORIENTATION = 0x0112  # the EXIF tag: 1 as stored; 2-8 flips and quarter turns (read_image applies them)


def stored_orientation(path: str | Path) -> tuple[int, tuple[int, int]]:
    """A file's EXIF orientation (1-8; 1 when it has none) and its size as stored, (width, height): the pixels
    that readers which ignore the tag see, COLMAP among them."""
    with open_image(path) as im:
        orientation = int(im.getexif().get(EXIF_ORIENTATION, 1))
        return (orientation if 1 <= orientation <= 8 else 1), im.size


def to_stored_pixels(points: np.ndarray, orientation: int, stored_size: tuple[int, int]) -> np.ndarray:
    """Points ``(N, 2)`` (x, y; pixel centres at integers) of an image as :func:`read_image` gives it (EXIF
    ``orientation`` applied) → the same points in the file's stored pixels, of ``stored_size`` (width, height)."""
    w, h = stored_size
    x, y = np.asarray(points, np.float64).reshape(-1, 2).T
    stored = {1: (x, y), 2: (w - 1 - x, y), 3: (w - 1 - x, h - 1 - y), 4: (x, h - 1 - y),
              5: (y, x), 6: (y, h - 1 - x), 7: (w - 1 - y, h - 1 - x), 8: (w - 1 - y, x)}[orientation]
    return np.stack(stored, -1).astype(np.float32)


def _pil_to_gray(im: Image.Image) -> np.ndarray:
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(im, dtype=np.float32)
        top = 65535.0 if arr.max() > 255 or im.mode.startswith("I;16") else 255.0
        return np.clip(arr / top, 0, 1)
    if im.mode == "F":  # 32-bit float files have no fixed range: [0, 1] as it is, else stretched to it
        arr = np.nan_to_num(np.asarray(im, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
        lo, hi = float(arr.min()), float(arr.max())
        if lo < -FLOAT_SLACK or hi > 1 + FLOAT_SLACK:
            return (arr - lo) / (hi - lo)  # (hi > lo here)
        return np.clip(arr, 0, 1)
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        im = im.convert("RGBA")
        bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
        im = Image.alpha_composite(bg, im)
    return np.asarray(im.convert("L"), dtype=np.float32) / 255.0


def to_gray(src: ImageInput, name: str | None = None, max_side: int | None = None) -> np.ndarray:
    """Any supported input → grayscale float32 ``(H, W)`` in [0, 1]. Raises :class:`ImageError`.
    ``max_side``: files may be decoded at a reduced scale (:func:`read_image`)."""
    return to_gray_sized(src, name, max_side)[0]


def to_gray_sized(src: ImageInput, name: str | None = None,
                  max_side: int | None = None) -> tuple[np.ndarray, tuple[int, int]]:
    """:func:`to_gray` and the source's full-resolution ``(H, W)``: the array's shape, except for files
    decoded at a reduced scale, whose keypoints must still be given in the file's pixels."""
    label = _name(src, name)
    if isinstance(src, (str, Path)):
        return read_image_sized(src, max_side)
    gray = _array_to_gray(src, label)
    return gray, gray.shape


def _array_to_gray(src: Any, label: str) -> np.ndarray:
    if isinstance(src, Image.Image):
        return _pil_to_gray(ImageOps.exif_transpose(src))
    if isinstance(src, torch.Tensor):
        t = src.detach().cpu()
        if t.dim() == 4:
            if t.shape[0] != 1:
                raise ImageError(f"{label}: expected one image, got a batch of shape {tuple(t.shape)}")
            t = t[0]
        if t.dim() == 3 and t.shape[0] in (1, 3, 4) and t.shape[-1] not in (1, 3, 4):
            t = t.permute(1, 2, 0)  # channels first → last
        src = t.numpy()
    if not isinstance(src, np.ndarray):
        raise ImageError(f"{label}: unsupported image type {type(src).__name__}; give a path, numpy array, "
                         "PIL image or torch tensor")
    arr = src
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim == 3 and arr.shape[-1] == 4:
        arr = arr[..., :3]
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[-1] == 3)):
        raise ImageError(f"{label}: expected an H×W or H×W×3 array, got shape {arr.shape}")
    if arr.size == 0:
        raise ImageError(f"{label}: empty image of shape {arr.shape}")
    if arr.dtype == np.bool_:
        arr = arr.astype(np.float32)
    elif np.issubdtype(arr.dtype, np.integer):
        top = 65535.0 if arr.dtype in (np.uint16, np.int32, np.int64, np.uint32) and arr.max() > 255 else 255.0
        arr = arr.astype(np.float32) / top
    elif np.issubdtype(arr.dtype, np.floating):
        lo, hi = arr.min(), arr.max()
        if not (np.isfinite(lo) and np.isfinite(hi)):  # NaN and ±inf reach the extremes
            raise ImageError(f"{label}: image contains NaN or inf values")
        _check_float_range(label, lo, hi)
        if arr.dtype != np.float32:
            arr = arr.astype(np.float32)
        if arr.ndim == 2 and lo >= 0 and hi <= 1:  # already gray and in range (the usual case): as it is
            return arr
    else:
        raise ImageError(f"{label}: unsupported array dtype {arr.dtype}")
    if arr.ndim == 3:
        arr = arr @ np.array([0.299, 0.587, 0.114], np.float32)
    return np.clip(arr, 0.0, 1.0)


FLOAT_SLACK = 0.5  # float intensities this far outside [0, 1] (resampling overshoot) are clipped; farther: refused


def _check_float_range(label: str, lo: float, hi: float) -> None:
    """Float images are intensities in [0, 1]. One far outside (an 8-bit image as float, 0-255; a normalised
    one, mean 0), of minimum ``lo`` and maximum ``hi``, would be clipped to a blank picture and match nothing:
    raise :class:`ImageError` instead."""
    lo, hi = float(lo), float(hi)
    if lo < -FLOAT_SLACK or hi > 1 + FLOAT_SLACK:
        hint = " (8-bit values? divide by 255)" if hi <= 255 and lo >= 0 else \
            " (16-bit values? divide by 65535)" if hi <= 65535 and lo >= 0 else ""
        raise ImageError(f"{label}: float images must hold intensities in [0, 1]; this one spans "
                         f"[{lo:.4g}, {hi:.4g}]{hint}")


def read_mask(src: ImageInput, full: tuple[int, int], shape: tuple[int, int], name: str = "mask") -> np.ndarray:
    """A mask of where matches may lie, COLMAP's convention: nonzero pixels may be matched, zero ones not. Given
    (path, array, PIL image or tensor; gray or colour) at the full size ``full`` = (H, W) of its image, EXIF
    orientation applied as for the image; returned as bool at ``shape``, the size of the image's array (a pixel
    there is kept when most of what it covers is). Raises :class:`ImageError` on a size that is not the image's."""
    if (isinstance(src, torch.Tensor) and src.is_floating_point()) or \
            (isinstance(src, np.ndarray) and np.issubdtype(src.dtype, np.floating)):
        src = src != 0  # a float mask in any range: only zero or not matters
    m, m_full = to_gray_sized(src, name, max(shape))
    if tuple(m_full) != tuple(full):
        raise ImageError(f"{name}: a {m_full[1]}×{m_full[0]} mask for a {full[1]}×{full[0]} image")
    keep = (m > 0).astype(np.float32)
    if keep.shape != tuple(shape):
        keep = cv2.resize(keep, (shape[1], shape[0]), interpolation=cv2.INTER_AREA)
    return keep > 0.5


def mask_cells(mask: np.ndarray, prep: "Prepared") -> torch.Tensor:
    """``(1, Hp/8, Wp/8)`` bool: the 1/8 cells of ``prep`` where most of the image inside the cell is in ``mask``
    (bool, at the size of the array ``prep`` was made from); an all-true mask keeps every cell of the image."""
    h, w = prep.size
    hp, wp = prep.tensor.shape[-2:]
    m = mask.astype(np.float32)
    if m.shape != (h, w):
        m = cv2.resize(m, (w, h), interpolation=cv2.INTER_AREA)
    kept, inside = np.zeros((hp, wp), np.float32), np.zeros((hp, wp), np.float32)
    kept[:h, :w], inside[:h, :w] = m, 1
    pooled = kept.reshape(hp // 8, 8, wp // 8, 8).sum((1, 3))
    area = inside.reshape(hp // 8, 8, wp // 8, 8).sum((1, 3))
    return torch.from_numpy(pooled > 0.5 * np.maximum(area, 1))[None]


@dataclass
class Prepared:
    """A network-ready image: ``tensor`` ``(1, 1, Hp, Wp)``, ``valid`` ``(1, Hp/8, Wp/8)`` bool, the resized
    size (h, w) before padding, the original size, and the scale (sx, sy) from resized to original pixels."""

    tensor: torch.Tensor
    valid: torch.Tensor
    size: tuple[int, int]
    original: tuple[int, int]
    scale: tuple[float, float]


def prepare(gray: np.ndarray, long_side: int | None, multiple: int = 32) -> Prepared:
    """Resize so the long side is ``long_side`` (None: keep), then pad bottom/right to a multiple of ``multiple``
    (a multiple of 8)."""
    if multiple <= 0 or multiple % 8:
        raise ValueError(f"multiple must be a positive multiple of 8, got {multiple}")
    h0, w0 = gray.shape
    if long_side:
        s = long_side / max(h0, w0)
        h, w = max(1, round(h0 * s)), max(1, round(w0 * s))
        if (h, w) != (h0, w0):
            interp = cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR
            gray = cv2.resize(gray, (w, h), interpolation=interp)
    h, w = gray.shape
    hp, wp = max(multiple, -(-h // multiple) * multiple), max(multiple, -(-w // multiple) * multiple)
    padded = np.zeros((hp, wp), np.float32)
    padded[:h, :w] = gray
    valid = torch.zeros(1, hp // 8, wp // 8, dtype=torch.bool)
    valid[:, : -(-h // 8), : -(-w // 8)] = True
    return Prepared(torch.from_numpy(padded)[None, None], valid, (h, w), (h0, w0), (w0 / w, h0 / h))


def to_original(kpts: np.ndarray, prep: Prepared) -> np.ndarray:
    """Keypoints ``(N, 2)`` in resized pixels → the original image's pixels (pixel centres at integers)."""
    sx, sy = prep.scale
    return np.stack([(kpts[:, 0] + 0.5) * sx - 0.5, (kpts[:, 1] + 0.5) * sy - 0.5], -1).astype(np.float32)
