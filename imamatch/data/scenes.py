"""Synthetic 3D scenes from any photos: two views of textured planes and boxes, with exact depth and pose.

Homography pairs teach a matcher one plane at a time; real scenes have depth discontinuities, occlusions and
wide baselines. This generator ray-casts a random scene — a back wall, often a floor, a few boxes (textured with
crops of the photos) — from two cameras orbiting the scene centre by up to ``max_angle`` degrees, at different
distances and focal lengths, and returns items in the depth + pose format of the MegaDepth/ScanNet readers
(``image0/1``, ``depth0/1``, ``K0/1``, ``T_0to1``), so the training code supervises them exactly as it does real data.
Pixel ``k`` is centred at ``k`` (OpenCV); camera axes x right, y down, z forwards; world = camera 0.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch

from .synthetic import WarpConfig, load_photos, photometric, worker_rng


@dataclass(frozen=True)
class SceneConfig:
    """Scene and camera sampling. ``max_angle``: the largest orbit between the views (degrees)."""

    size: int = 320                   # square images
    boxes: tuple[int, int] = (1, 5)   # how many boxes (inclusive)
    floor_prob: float = 0.7
    max_angle: float = 50.0
    min_angle: float = 3.0
    zoom: tuple[float, float] = (0.8, 1.4)   # camera 1's distance to the scene centre relative to camera 0's
    fov: tuple[float, float] = (45.0, 75.0)  # horizontal field of view (degrees)
    jitter: float = 6.0               # camera 1 looks this many degrees (at most) away from the centre
    supersample: int = 2              # anti-aliasing of the rendered images
    texture: int = 256                # texture crop size (px)
    photo: WarpConfig = field(default_factory=WarpConfig)  # photometric changes (its geometric fields unused)


@dataclass
class Plane:
    """A textured rectangle: centre ``o``, orthonormal in-plane axes ``a``, ``b``, half extents, texture
    (stretched over the rectangle, or mirror-repeated every ``tile`` world units)."""

    o: np.ndarray
    a: np.ndarray
    b: np.ndarray
    extent: tuple[float, float]
    texture: np.ndarray
    tile: float | None = None

    def corners(self) -> np.ndarray:
        ea, eb = self.extent
        return np.array([self.o + sa * ea * self.a + sb * eb * self.b for sa in (-1, 1) for sb in (-1, 1)])


def _rotation(axis: np.ndarray, angle: float) -> np.ndarray:
    return cv2.Rodrigues((axis / np.linalg.norm(axis) * angle).reshape(3, 1))[0]


def _texture(rng: np.random.Generator, photos: Sequence[np.ndarray], size: int) -> np.ndarray:
    img = photos[rng.integers(len(photos))]
    h, w = img.shape
    s = int(rng.integers(min(h, w) // 4, min(h, w) + 1))
    y, x = rng.integers(0, h - s + 1), rng.integers(0, w - s + 1)
    tex = cv2.resize(img[y:y + s, x:x + s], (size, size), interpolation=cv2.INTER_AREA)
    return np.clip(tex.astype(np.float32) * rng.uniform(0.6, 1.2) + rng.uniform(-20, 20), 0, 255)


def random_scene(rng: np.random.Generator, photos: Sequence[np.ndarray], cfg: SceneConfig) -> tuple[list[Plane], float]:
    """Planes of a random scene in front of camera 0 and the distance of its centre ``(0, 0, d)``."""
    d = rng.uniform(3.0, 6.0)
    x, y, z = np.eye(3)
    planes = []
    # back wall, tilted, far enough behind everything
    R = _rotation(y, rng.uniform(-0.5, 0.5)) @ _rotation(x, rng.uniform(-0.3, 0.3))
    planes.append(Plane(np.array([0, 0, d + rng.uniform(1.5, 4.0)]), R @ x, R @ y, (6 * d, 6 * d),
                        _texture(rng, photos, cfg.texture * 2), tile=rng.uniform(0.8, 2.0) * d))
    if rng.random() < cfg.floor_prob:
        planes.append(Plane(np.array([0, rng.uniform(0.5, 1.2) * d * 0.4, d]), x, z, (6 * d, 6 * d),
                            _texture(rng, photos, cfg.texture * 2), tile=rng.uniform(0.5, 1.5) * d))
    for _ in range(int(rng.integers(cfg.boxes[0], cfg.boxes[1] + 1))):
        # boxes stay clear of both cameras (≥ 0.8 d from the centre): within 0.3 d of it, at most 0.25 d a side
        centre = np.array([rng.uniform(-0.3, 0.3) * d, rng.uniform(-0.25, 0.2) * d, d + rng.uniform(-0.3, 0.3) * d])
        half = rng.uniform(0.06, 0.25, 3) * d
        Rb = _rotation(rng.normal(size=3), rng.uniform(0, np.pi))
        for axis in range(3):
            u, v = [k for k in range(3) if k != axis]
            for sign in (-1, 1):
                planes.append(Plane(centre + sign * half[axis] * Rb[:, axis], Rb[:, u], Rb[:, v],
                                    (half[u], half[v]), _texture(rng, photos, cfg.texture)))
    return planes, d


def random_cameras(rng: np.random.Generator, d: float, cfg: SceneConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Intrinsics ``K0``, ``K1`` and camera 1's camera-to-world ``(4, 4)`` (camera 0 is the world)."""
    def intrinsics() -> np.ndarray:
        f = cfg.size / 2 / np.tan(np.radians(rng.uniform(*cfg.fov)) / 2)
        c = (cfg.size - 1) / 2 + rng.uniform(-0.03, 0.03, 2) * cfg.size
        return np.array([[f, 0, c[0]], [0, f * rng.uniform(0.98, 1.02), c[1]], [0, 0, 1]])

    angle = np.radians(rng.uniform(cfg.min_angle, cfg.max_angle))
    axis = np.array([rng.normal(0, 0.3), 1.0, rng.normal(0, 0.3)])  # mostly around the vertical, as people walk
    orbit = _rotation(axis, angle * rng.choice([-1, 1]))
    centre = np.array([0.0, 0.0, d])
    c1 = centre + rng.uniform(*cfg.zoom) * orbit @ (np.zeros(3) - centre)
    R1 = orbit @ _rotation(rng.normal(size=3), np.radians(rng.uniform(0, cfg.jitter)))
    P = np.eye(4)
    P[:3, :3], P[:3, 3] = R1, c1
    return intrinsics(), intrinsics(), P


def ray_cast(K: np.ndarray, c2w: np.ndarray, pts: np.ndarray, planes: Sequence[Plane],
             shape: tuple[int, int] | None = None, step: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Camera depth (z; inf where nothing is hit) and texture value of the nearest surface along the rays
    through pixels ``pts`` ``(N, 2)``. With ``shape`` = (h, w), ``pts`` is ``pixel_grid(h, w, step)`` and each
    plane is only tested inside its projected bounding box."""
    R, c = c2w[:3, :3], c2w[:3, 3]
    rays = ((np.c_[pts, np.ones(len(pts))] @ np.linalg.inv(K).T) @ R.T).astype(np.float32)  # camera z = 1
    depth = np.full(len(pts), np.inf)
    value = np.zeros(len(pts), np.float32)
    w2c = np.linalg.inv(c2w)
    for pl in planes:
        n = np.cross(pl.a, pl.b)
        if (pl.o - c) @ n == 0:
            continue
        sel = slice(None)
        if shape is not None:
            cam = pl.corners() @ w2c[:3, :3].T + w2c[:3, 3]
            if (cam[:, 2] <= 1e-3).all():
                continue
            if (cam[:, 2] > 1e-3).all():
                uv = cam[:, :2] / cam[:, 2:] * K[[0, 1], [0, 1]] + K[:2, 2]
                uv = (uv - (step - 1) / 2) / step                             # grid indices
                x0, y0 = np.floor(uv.min(0)).astype(int) - 1
                x1, y1 = np.ceil(uv.max(0)).astype(int) + 1
                h, w = shape
                x0, x1, y0, y1 = max(x0, 0), min(x1, w - 1), max(y0, 0), min(y1, h - 1)
                if x0 > x1 or y0 > y1:
                    continue
                if x0 > 0 or y0 > 0 or x1 < w - 1 or y1 < h - 1:
                    sel = (np.arange(y0, y1 + 1)[:, None] * w + np.arange(x0, x1 + 1)[None]).ravel()
        r = rays[sel]
        with np.errstate(divide="ignore", invalid="ignore"):
            s = ((pl.o - c) @ n) / (r @ n)
        # in-plane coordinates of c + s·r without forming the 3D points
        la = (c - pl.o) @ pl.a + s * (r @ pl.a)
        lb = (c - pl.o) @ pl.b + s * (r @ pl.b)
        ea, eb = pl.extent
        hit = (s > 1e-6) & (np.abs(la) <= ea) & (np.abs(lb) <= eb) & (s < depth[sel])
        if not hit.any():
            continue
        idx = np.flatnonzero(hit) if isinstance(sel, slice) else sel[hit]
        th, tw = pl.texture.shape
        if pl.tile is None:
            u = (la[hit] / ea + 1) * 0.5 * (tw - 1)
            v = (lb[hit] / eb + 1) * 0.5 * (th - 1)
        else:
            u = _mirror(la[hit] / pl.tile * (tw - 1), tw - 1)
            v = _mirror(lb[hit] / pl.tile * (th - 1), th - 1)
        depth[idx] = s[hit]
        value[idx] = _bilinear(pl.texture, u, v)
    return depth, value


def _mirror(x: np.ndarray, top: float) -> np.ndarray:
    """Fold ``x`` into [0, top] by mirror repetition."""
    x = np.mod(x, 2 * top)
    return np.where(x > top, 2 * top - x, x)


def _bilinear(tex: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Bilinear samples of ``tex`` at (u, v) ``(N,)`` (cv2.remap wants maps under 32 767 px a side: fold them)."""
    n = len(u)
    cols = 1024
    rows = -(-n // cols)
    pad = rows * cols - n
    mu = np.pad(u.astype(np.float32), (0, pad)).reshape(rows, cols)
    mv = np.pad(v.astype(np.float32), (0, pad)).reshape(rows, cols)
    return cv2.remap(tex, mu, mv, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT).ravel()[:n]


def pixel_grid(h: int, w: int, step: float = 1.0) -> np.ndarray:
    """Row-major pixel positions ``(h·w, 2)``: ``(x, y) = (i, j)·step + (step − 1)/2`` — with ``step`` = 1/s the
    centres of an s-times supersampled grid, in the pixels of the ``h·step × w·step`` image."""
    xs = np.arange(w) * step + (step - 1) / 2
    ys = np.arange(h) * step + (step - 1) / 2
    gx, gy = np.meshgrid(xs, ys)
    return np.c_[gx.ravel(), gy.ravel()]


def render(K: np.ndarray, c2w: np.ndarray, planes: Sequence[Plane], size: int,
           supersample: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Anti-aliased grayscale image ``(size, size)`` in [0, 1] and depth at the pixel centres (0 = nothing)."""
    ss = supersample
    _, value = ray_cast(K, c2w, pixel_grid(size * ss, size * ss, 1 / ss), planes, (size * ss, size * ss), 1 / ss)
    image = cv2.resize(value.reshape(size * ss, size * ss), (size, size), interpolation=cv2.INTER_AREA) / 255
    depth, _ = ray_cast(K, c2w, pixel_grid(size, size), planes, (size, size))
    depth = np.where(np.isfinite(depth), depth, 0).reshape(size, size)
    return image.astype(np.float32), depth.astype(np.float32)


def make_scene_pair(rng: np.random.Generator, photos: Sequence[np.ndarray], cfg: SceneConfig) -> dict[str, np.ndarray]:
    """One pair: ``image0/1`` ``(S, S)`` in [0, 1] (with photometric changes), ``depth0/1`` ``(S, S)``,
    ``K0/1`` ``(3, 3)``, ``T_0to1`` ``(4, 4)`` mapping camera-0 to camera-1 coordinates."""
    planes, d = random_scene(rng, photos, cfg)
    K0, K1, c2w1 = random_cameras(rng, d, cfg)
    out = {}
    for k, (K, c2w) in enumerate(((K0, np.eye(4)), (K1, c2w1))):
        img, depth = render(K, c2w, planes, cfg.size, cfg.supersample)
        out[f"image{k}"] = photometric(rng, img, cfg.photo)
        out[f"depth{k}"] = depth
        out[f"K{k}"] = K
    out["T_0to1"] = np.linalg.inv(c2w1)
    return out


class ScenePairs(torch.utils.data.IterableDataset):
    """Endless stream of :func:`make_scene_pair` pairs textured with the photos in ``folders`` (or already loaded
    ``photos``); reproducible from ``seed``. Items as :class:`~imamatch.data.depth_pairs.DepthPairs`: ``image0/1`` ``(1, S, S)`` float32,
    ``depth0/1`` ``(S, S)`` float32, ``K0/1`` ``(3, 3)`` and ``T_0to1`` ``(4, 4)`` float64."""

    def __init__(self, folders: Sequence[str | Path], cfg: SceneConfig = SceneConfig(), seed: int = 0,
                 photos: list[np.ndarray] | None = None) -> None:
        super().__init__()
        self.cfg, self.seed = cfg, seed
        self.photos = photos if photos is not None else load_photos(folders)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        rng = worker_rng(self.seed)
        while True:
            p = make_scene_pair(rng, self.photos, self.cfg)
            yield {"image0": torch.from_numpy(p["image0"])[None], "image1": torch.from_numpy(p["image1"])[None],
                   "depth0": torch.from_numpy(p["depth0"]), "depth1": torch.from_numpy(p["depth1"]),
                   "K0": torch.from_numpy(p["K0"]), "K1": torch.from_numpy(p["K1"]),
                   "T_0to1": torch.from_numpy(p["T_0to1"])}
