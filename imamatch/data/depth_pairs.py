"""Training/evaluation pairs with depth and pose: MegaDepth (scene-info index, images, depth h5) and ScanNet
(index npz, ``color/*.jpg``, ``depth/*.png`` in millimetres, ``pose/*.txt`` camera-to-world)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import torch

from ..errors import DataError
from .standard import PairInfo


def _read_gray(path: Path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if img is None:
        raise DataError(f"cannot read image {path}")
    return img


def _read_depth(path: Path) -> np.ndarray:
    if path.suffix == ".h5":
        import h5py

        with h5py.File(path, "r") as f:
            return np.asarray(f["depth"], np.float32)
    d = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if d is None:
        raise DataError(f"cannot read depth {path}")
    return d.astype(np.float32) / 1000.0  # ScanNet: millimetres


def resize_pad(img: np.ndarray, depth: np.ndarray | None, K: np.ndarray, long_side: int, pad_to: int | None):
    h, w = img.shape
    s = long_side / max(h, w)
    nh, nw = int(round(h * s)), int(round(w * s))
    img = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_AREA)
    sx, sy = nw / w, nh / h
    K = np.diag([sx, sy, 1.0]) @ K
    K[0, 2] = (K[0, 2] / sx + 0.5) * sx - 0.5  # pixel-centre convention under scaling
    K[1, 2] = (K[1, 2] / sy + 0.5) * sy - 0.5
    if depth is not None:
        depth = cv2.resize(depth, (nw, nh), interpolation=cv2.INTER_NEAREST)
    side_h = side_w = pad_to if pad_to else None
    if side_h is None:
        side_h, side_w = -(-nh // 32) * 32, -(-nw // 32) * 32
    out = np.zeros((side_h, side_w), np.float32)
    out[:nh, :nw] = img / 255.0
    dout = np.zeros((side_h, side_w), np.float32)
    if depth is not None:
        dout[:nh, :nw] = depth
    return out, dout, K


class DepthPairs(torch.utils.data.Dataset):
    """Pairs of :class:`PairInfo` under ``root`` (with depth paths), resized to ``long_side`` and padded to a
    square of ``pad_to`` (or to a multiple of 32): a list, or a sequence that makes them on access
    (:class:`~imamatch.data.scannet_train.ScanNetTrainPairs`). Items: ``image0/1`` ``(1, H, W)``, ``depth0/1``
    ``(H, W)``, ``K0/1``, ``T_0to1``."""

    def __init__(self, root: str | Path, pairs: Sequence[PairInfo], long_side: int = 832, pad_to: int | None = 832,
                 depth_root: str | Path | None = None) -> None:
        self.root = Path(root)
        self.depth_root = Path(depth_root) if depth_root else self.root
        self.pairs, self.long_side, self.pad_to = pairs, long_side, pad_to
        missing = [p for p in pairs[:50] if not (self.root / p.image0).is_file()]
        if missing:
            raise DataError(f"images missing under {self.root}, e.g. {self.root / missing[0].image0}")

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        p = self.pairs[i]
        out = {}
        for k, (img, dep, K) in enumerate([(p.image0, p.depth0, p.K0), (p.image1, p.depth1, p.K1)]):
            gray = _read_gray(self.root / img)
            depth = _read_depth(self.depth_root / dep) if dep else None
            if depth is not None and depth.shape != gray.shape:
                raise DataError(f"depth {self.depth_root / dep} is {depth.shape[1]}×{depth.shape[0]} but image "
                                f"{self.root / img} is {gray.shape[1]}×{gray.shape[0]}: export both at one size")
            im, d, Ks = resize_pad(gray, depth, K, self.long_side, self.pad_to)
            out[f"image{k}"] = torch.from_numpy(im)[None]
            out[f"depth{k}"] = torch.from_numpy(d)
            out[f"K{k}"] = torch.from_numpy(Ks)
        out["T_0to1"] = torch.from_numpy(p.T_0to1)
        return out


def scannet_scene_pairs(root: str | Path, scene: str, frames: list[tuple[int, int]], K: np.ndarray) -> list[PairInfo]:
    """ScanNet pairs of one scene from its ``pose/<frame>.txt`` (camera-to-world) files."""
    root = Path(root)

    def pose(f: int) -> np.ndarray:
        path = root / scene / "pose" / f"{f}.txt"
        if not path.is_file():
            raise DataError(f"ScanNet pose missing: {path}")
        return np.loadtxt(path).reshape(4, 4)

    out = []
    for f0, f1 in frames:
        T = np.linalg.inv(pose(f1)) @ pose(f0)
        out.append(PairInfo(f"{scene}/color/{f0}.jpg", f"{scene}/color/{f1}.jpg", K, K, T,
                            f"{scene}/depth/{f0}.png", f"{scene}/depth/{f1}.png"))
    return out
