"""Synthetic training pairs from any folder of photos: random homographies with strong perspective, scale and
rotation, plus photometric changes, blur and noise. The ground truth is the exact homography."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".heic", ".heif"}


def find_images(folders: Sequence[str | Path]) -> list[Path]:
    """All image files under ``folders`` (recursively), sorted. Raises ``FileNotFoundError`` if a folder is
    missing or nothing is found."""
    files: list[Path] = []
    for folder in folders:
        folder = Path(folder)
        if not folder.is_dir():
            raise FileNotFoundError(f"training image folder not found: {folder}")
        files += [p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES]
    if not files:
        raise FileNotFoundError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) found in {list(map(str, folders))}")
    return sorted(files)


def bundled_photo_folder() -> Path:
    """scikit-image's bundled sample photos (always available offline once scikit-image is installed)."""
    import skimage

    return Path(skimage.__file__).parent / "data"


def load_gray(path: Path, max_side: int = 1024) -> np.ndarray | None:
    """Grayscale uint8, long side ≤ ``max_side``; None for unreadable or tiny images."""
    img = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if img is None or min(img.shape) < 128:
        return None
    s = max_side / max(img.shape)
    if s < 1:
        img = cv2.resize(img, None, fx=s, fy=s, interpolation=cv2.INTER_AREA)
    return img


@dataclass(frozen=True)
class WarpConfig:
    """Ranges of the random homography and of the photometric changes."""

    size: int = 320                 # output side (square)
    max_rotation: float = 45.0      # degrees
    scale_range: tuple[float, float] = (0.6, 1.6)
    perspective: float = 0.25       # max corner displacement, fraction of the side
    max_blur: float = 1.5           # Gaussian sigma
    max_noise: float = 0.03         # noise std (intensity in [0, 1])


def random_homography(rng: np.random.Generator, size: int, cfg: WarpConfig) -> np.ndarray:
    """A homography mapping an output square of side ``size`` to a warped quad around it (3×3)."""
    s = size
    square = np.array([[0, 0], [s, 0], [s, s], [0, s]], np.float64)
    centre = square.mean(0)
    ang = math.radians(rng.uniform(-cfg.max_rotation, cfg.max_rotation))
    scale = math.exp(rng.uniform(*np.log(cfg.scale_range)))
    rot = np.array([[math.cos(ang), -math.sin(ang)], [math.sin(ang), math.cos(ang)]])
    quad = (square - centre) @ rot.T * scale + centre
    quad += rng.uniform(-cfg.perspective, cfg.perspective, (4, 2)) * s
    return cv2.getPerspectiveTransform(square.astype(np.float32), quad.astype(np.float32)).astype(np.float64)


def photometric(rng: np.random.Generator, img: np.ndarray, cfg: WarpConfig) -> np.ndarray:
    """Random brightness, contrast, gamma, blur and noise. ``img`` float32 in [0, 1]."""
    img = img * rng.uniform(0.6, 1.4) + rng.uniform(-0.2, 0.2)
    img = np.clip(img, 0, 1) ** math.exp(rng.uniform(-0.5, 0.5))
    if rng.random() < 0.5 and cfg.max_blur > 0:
        img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.3, cfg.max_blur))
    if cfg.max_noise > 0:
        img = img + rng.normal(0, rng.uniform(0, cfg.max_noise), img.shape).astype(np.float32)
    return np.clip(img, 0, 1).astype(np.float32)


def make_pair(rng: np.random.Generator, src: np.ndarray, cfg: WarpConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two views of ``src``. Returns ``img0``, ``img1`` (size×size float32 in [0, 1]) and ``H`` (3×3) with
    ``x1 ∝ H · x0`` in pixel coordinates (pixel centres at integers)."""
    s = cfg.size
    h, w = src.shape
    # a random square crop of the source, at a random scale, is image 0's view
    crop = rng.uniform(0.35, 0.9) * min(h, w)
    x0, y0 = rng.uniform(0, w - crop), rng.uniform(0, h - crop)
    to_src0 = np.array([[crop / s, 0, x0], [0, crop / s, y0], [0, 0, 1]])
    # image 1 sees the same region through a random homography about the square's centre
    to_src1 = to_src0 @ random_homography(rng, s, cfg)
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    img0 = cv2.warpPerspective(src, to_src0, (s, s), flags=flags, borderMode=cv2.BORDER_CONSTANT)
    img1 = cv2.warpPerspective(src, to_src1, (s, s), flags=flags, borderMode=cv2.BORDER_CONSTANT)
    H = np.linalg.inv(to_src1) @ to_src0
    img0 = photometric(rng, img0.astype(np.float32) / 255, cfg)
    img1 = photometric(rng, img1.astype(np.float32) / 255, cfg)
    return img0, img1, H / H[2, 2]


def load_photos(folders: Sequence[str | Path]) -> list[np.ndarray]:
    """Every readable photo under ``folders`` (:func:`load_gray`); raises if there is none."""
    photos = [im for im in (load_gray(p) for p in find_images(folders)) if im is not None]
    if not photos:
        raise FileNotFoundError(f"no readable images of at least 128 px in {list(map(str, folders))}")
    return photos


def worker_rng(seed: int) -> np.random.Generator:
    """A generator for this DataLoader worker (or the main process), reproducible from ``seed``."""
    info = torch.utils.data.get_worker_info()
    return np.random.default_rng([seed, 0 if info is None else info.id])


class SyntheticPairs(torch.utils.data.IterableDataset):
    """Endless stream of homography pairs from the photos in ``folders`` (or already loaded ``photos``);
    reproducible from ``seed``.

    Yields dicts with ``image0``/``image1`` ``(1, S, S)`` float32 and ``H`` ``(3, 3)`` float64.
    """

    def __init__(self, folders: Sequence[str | Path], cfg: WarpConfig = WarpConfig(), seed: int = 0,
                 photos: list[np.ndarray] | None = None) -> None:
        super().__init__()
        self.cfg, self.seed = cfg, seed
        self.images = photos if photos is not None else load_photos(folders)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        rng = worker_rng(self.seed)
        while True:
            src = self.images[rng.integers(len(self.images))]
            img0, img1, H = make_pair(rng, src, self.cfg)
            yield {"image0": torch.from_numpy(img0)[None], "image1": torch.from_numpy(img1)[None],
                   "H": torch.from_numpy(H)}
