"""The standard test indices in LoFTR's formats: MegaDepth-1500 scene-info pickles and ScanNet-1500 npz files.

Conventions: poses are 4×4 world-to-camera; ``T_0to1 = pose1 @ inv(pose0)``, so ``x1 = R x0 + t``.
"""

from __future__ import annotations

import zipfile
from collections.abc import Sequence
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


def scannet_scene_root(root: str | Path, pairs: Sequence[PairInfo | str]) -> Path:
    """The folder holding the scene folders of ``pairs`` (PairInfo or image paths relative to that folder):
    ``root`` itself or its sub-folder ``scannet_test_1500`` (the ScanNet-1500 download), ``scans_test`` or
    ``scans`` (ScanNet's own layout); ``root`` if none does."""
    root = Path(root)
    first = pairs[0] if len(pairs) else None
    image = first.image0 if isinstance(first, PairInfo) else first
    for sub in SCANNET_SCENE_FOLDERS:
        if image and (root / sub / image).is_file():
            return root / sub
    return root


def scannet_scene_name(scene: int, sub: int) -> str:
    """``sceneXXXX_XX``: the folder and intrinsics key of a ScanNet scene and sub-scene id."""
    return f"scene{int(scene):04d}_{int(sub):02d}"


def read_npz(path: Path, keys: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """The arrays ``keys`` (default: all) of an npz file, read with ``allow_pickle=False``; a DataError naming
    the file when it is missing, not an npz of plain arrays, or lacks one of ``keys``."""
    if not path.is_file():
        raise DataError(f"ScanNet index file not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as f:
            files = list(f.files)
            arrays = {k: f[k] for k in (files if keys is None else keys) if k in files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, TypeError) as e:  # TypeError: an .npy file
        raise DataError(f"{path}: not an npz file of plain arrays ({type(e).__name__}: {e})") from None
    missing = [k for k in keys or () if k not in arrays]
    if missing:
        raise DataError(f"{path} lacks {', '.join(map(repr, missing))} (has {files})")
    return arrays


def read_scannet_intrinsics(path: Path) -> dict[str, np.ndarray]:
    """``intrinsics.npz``: the 3×3 colour intrinsics of each scene, keyed ``sceneXXXX_XX``."""
    Ks = {}
    for k, v in read_npz(path).items():
        if v.size != 9:
            raise DataError(f"{path}: intrinsics of {k} have shape {v.shape}, expected 3×3")
        Ks[k] = np.asarray(v, np.float64).reshape(3, 3)
    return Ks


def scene_intrinsics(Ks: dict[str, np.ndarray], scene_name: str, path: Path) -> np.ndarray:
    """``Ks[scene_name]``, or a DataError naming the intrinsics file ``path`` that lacks it."""
    if scene_name not in Ks:
        raise DataError(f"{path} has no intrinsics for {scene_name}")
    return Ks[scene_name]


def check_pair_names(names: np.ndarray, path: Path) -> np.ndarray:
    """``names`` of a ScanNet index, checked to be (N, 4) non-negative integers (scene, sub-scene, frame0,
    frame1), as int64."""
    if names.ndim != 2 or names.shape[1] != 4 or not np.issubdtype(names.dtype, np.integer):
        raise DataError(f"{path}: expected name to be (N, 4) integers (scene, sub-scene, frame0, frame1), got "
                        f"{names.shape} {names.dtype}")
    if len(names) and names.min() < 0:
        raise DataError(f"{path}: negative scene or frame ids in name")
    return names.astype(np.int64)


def scannet_pairs(index_dir: str | Path) -> list[PairInfo]:
    """ScanNet-1500: ``test.npz`` (names, rel_pose) and ``intrinsics.npz`` (read with ``allow_pickle=False``)."""
    index_dir = Path(index_dir)
    for f in ("test.npz", "intrinsics.npz"):
        if not (index_dir / f).is_file():
            raise DataError(f"ScanNet index file not found: {index_dir / f}")
    t = read_npz(index_dir / "test.npz", ("name", "rel_pose"))
    Ks = read_scannet_intrinsics(index_dir / "intrinsics.npz")
    names, rel = check_pair_names(t["name"], index_dir / "test.npz"), t["rel_pose"]
    if rel.shape != (len(names), 12):
        raise DataError(f"{index_dir / 'test.npz'}: expected rel_pose ({len(names)}, 12), got {rel.shape}")
    pairs = []
    for (scene, sub, f0, f1), r in zip(names, rel):
        scene_name = scannet_scene_name(scene, sub)
        K = scene_intrinsics(Ks, scene_name, index_dir / "intrinsics.npz")
        T = np.eye(4)
        T[:3] = np.asarray(r, np.float64).reshape(3, 4)
        pairs.append(PairInfo(f"{scene_name}/color/{f0}.jpg", f"{scene_name}/color/{f1}.jpg", K, K, T,
                              f"{scene_name}/depth/{f0}.png", f"{scene_name}/depth/{f1}.png"))
    return pairs
