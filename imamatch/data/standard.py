"""The standard test indices in LoFTR's formats: MegaDepth-1500 scene-info pickles and ScanNet-1500 npz files.

Conventions: poses are 4×4 world-to-camera; ``T_0to1 = pose1 @ inv(pose0)``, so ``x1 = R x0 + t``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DataError
from .safe_pickle import safe_load


@dataclass
class PairInfo:
    """One test pair: image paths relative to the dataset root, intrinsics, ``T_0to1`` (4×4), optional
    depth paths and overlap score."""

    image0: str
    image1: str
    K0: np.ndarray
    K1: np.ndarray
    T_0to1: np.ndarray
    depth0: str | None = None
    depth1: str | None = None
    overlap: float | None = None


def megadepth_pairs(index_dir: str | Path, list_name: str = "megadepth_test_1500.txt") -> list[PairInfo]:
    """Pairs of the scene-info files named in ``index_dir/list_name`` (read with a restricted unpickler)."""
    index_dir = Path(index_dir)
    listing = index_dir / list_name
    if not listing.is_file():
        raise DataError(f"MegaDepth scene list not found: {listing}")
    pairs = []
    for name in listing.read_text().split():
        info = safe_load(index_dir / (name if name.endswith(".npz") else f"{name}.npz"))
        for (i, j), overlap, _ in info["pair_infos"]:
            P0, P1 = np.asarray(info["poses"][i], np.float64), np.asarray(info["poses"][j], np.float64)
            pairs.append(PairInfo(str(info["image_paths"][i]), str(info["image_paths"][j]),
                                  np.asarray(info["intrinsics"][i], np.float64),
                                  np.asarray(info["intrinsics"][j], np.float64), P1 @ np.linalg.inv(P0),
                                  info["depth_paths"][i], info["depth_paths"][j], float(overlap)))
    return pairs


SCANNET_SCENE_FOLDERS = ("", "scannet_test_1500", "scans_test", "scans")


def scannet_scene_root(root: str | Path, pairs: list[PairInfo]) -> Path:
    """The folder holding the scene folders of ``pairs``: ``root`` itself or its sub-folder ``scannet_test_1500``
    (the ScanNet-1500 download), ``scans_test`` or ``scans`` (ScanNet's own layout); ``root`` if none does."""
    root = Path(root)
    for sub in SCANNET_SCENE_FOLDERS:
        if pairs and (root / sub / pairs[0].image0).is_file():
            return root / sub
    return root


def scannet_pairs(index_dir: str | Path) -> list[PairInfo]:
    """ScanNet-1500: ``test.npz`` (names, rel_pose) and ``intrinsics.npz`` (read with ``allow_pickle=False``)."""
    index_dir = Path(index_dir)
    for f in ("test.npz", "intrinsics.npz"):
        if not (index_dir / f).is_file():
            raise DataError(f"ScanNet index file not found: {index_dir / f}")
    with np.load(index_dir / "test.npz", allow_pickle=False) as t, \
            np.load(index_dir / "intrinsics.npz", allow_pickle=False) as intr:
        if "name" not in t.files or "rel_pose" not in t.files:
            raise DataError(f"{index_dir / 'test.npz'} lacks 'name' or 'rel_pose' (has {t.files})")
        names, rel = t["name"], t["rel_pose"]
        Ks = {k: intr[k] for k in intr.files}
    if names.ndim != 2 or names.shape[1] != 4 or rel.shape != (len(names), 12):
        raise DataError(f"{index_dir / 'test.npz'}: expected name (N, 4) and rel_pose (N, 12), got "
                        f"{names.shape} and {rel.shape}")
    pairs = []
    for (scene, sub, f0, f1), r in zip(names, rel):
        scene_name = f"scene{scene:04d}_{sub:02d}"
        if scene_name not in Ks:
            raise DataError(f"{index_dir / 'intrinsics.npz'} has no intrinsics for {scene_name}")
        T = np.eye(4)
        T[:3] = np.asarray(r, np.float64).reshape(3, 4)
        K = np.asarray(Ks[scene_name], np.float64).reshape(3, 3)
        pairs.append(PairInfo(f"{scene_name}/color/{f0}.jpg", f"{scene_name}/color/{f1}.jpg", K, K, T,
                              f"{scene_name}/depth/{f0}.png", f"{scene_name}/depth/{f1}.png"))
    return pairs
