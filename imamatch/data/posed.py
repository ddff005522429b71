"""Posed photo collections: an instant-ngp / NeRF ``transforms.json`` (camera-to-world, OpenGL axes) or a COLMAP
model (``sparse/0``, ``sparse`` or the folder itself holding ``cameras``/``images`` ``.bin`` or ``.txt``)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..errors import DataError
from ..eval.metrics import rotation_error_deg

# OpenGL camera axes (x right, y up, z backwards) → OpenCV (x right, y down, z forwards)
GL_TO_CV = np.diag([1.0, -1.0, -1.0, 1.0])


@dataclass
class PosedFrame:
    """``path`` of the image; ``K`` 3×3; ``dist`` (k1, k2, p1, p2); ``w2c`` 4×4 world-to-camera (OpenCV axes)."""

    path: Path
    K: np.ndarray
    dist: np.ndarray
    w2c: np.ndarray


def load_transforms(folder: str | Path) -> list[PosedFrame]:
    """Frames of ``folder/transforms.json`` whose image files exist, sorted by path."""
    folder = Path(folder)
    tf = folder / "transforms.json"
    if not tf.is_file():
        raise DataError(f"no transforms.json in {folder}")
    meta = json.loads(tf.read_text())
    # instant-ngp takes cx, cy from COLMAP (pixel centres at +0.5) and renders rays through pixel centres at
    # (i + 0.5): here pixel centres are at integers
    K = np.array([[meta["fl_x"], 0, meta["cx"] - 0.5], [0, meta["fl_y"], meta["cy"] - 0.5], [0, 0, 1]], np.float64)
    dist = np.array([meta.get(k, 0.0) for k in ("k1", "k2", "p1", "p2")], np.float64)
    frames = []
    for f in meta["frames"]:
        path = folder / f["file_path"]
        if not path.suffix:
            path = path.with_suffix(".png")
        if not path.is_file():
            continue
        c2w = np.asarray(f["transform_matrix"], np.float64) @ GL_TO_CV
        frames.append(PosedFrame(path, K, dist, np.linalg.inv(c2w)))
    if not frames:
        raise DataError(f"none of the images named in {tf} exist")
    return sorted(frames, key=lambda fr: str(fr.path))


COLMAP_MODEL_DIRS = ("sparse/0", "sparse", "")


def find_colmap_model(folder: str | Path) -> Path | None:
    """The first of ``folder/sparse/0``, ``folder/sparse``, ``folder`` that holds a COLMAP model, else None."""
    for sub in COLMAP_MODEL_DIRS:
        d = Path(folder) / sub
        if any((d / f"cameras.{e}").is_file() and (d / f"images.{e}").is_file() for e in ("bin", "txt")):
            return d
    return None


def colmap_intrinsics(model: str, params: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``K`` (pixel centres at integers, as everywhere here) and OpenCV ``dist`` (k1, k2, p1, p2) of a COLMAP
    camera: SIMPLE_PINHOLE, PINHOLE, SIMPLE_RADIAL, RADIAL or OPENCV (COLMAP puts pixel centres at +0.5)."""
    p = [float(v) for v in params]
    layouts = {"SIMPLE_PINHOLE": "f cx cy", "PINHOLE": "fx fy cx cy", "SIMPLE_RADIAL": "f cx cy k1",
               "RADIAL": "f cx cy k1 k2", "OPENCV": "fx fy cx cy k1 k2 p1 p2"}
    if model not in layouts:
        raise DataError(f"COLMAP camera model {model} is not supported (use one of {', '.join(layouts)}, or "
                        "undistort the images with COLMAP's image_undistorter first)")
    names = layouts[model].split()
    if len(p) != len(names):
        raise DataError(f"COLMAP {model} camera needs {len(names)} parameters, got {len(p)}")
    v = dict(zip(names, p))
    fx, fy = v.get("fx", v.get("f")), v.get("fy", v.get("f"))
    K = np.array([[fx, 0, v["cx"] - 0.5], [0, fy, v["cy"] - 0.5], [0, 0, 1]], np.float64)
    return K, np.array([v.get(k, 0.0) for k in ("k1", "k2", "p1", "p2")], np.float64)


def load_colmap(folder: str | Path) -> list[PosedFrame]:
    """Registered images of the COLMAP model in ``folder`` (see :func:`find_colmap_model`) whose files exist in
    ``folder/images`` or ``folder``, sorted by path; ``w2c`` is COLMAP's ``cam_from_world`` (OpenCV axes)."""
    import pycolmap

    folder = Path(folder)
    model = find_colmap_model(folder)
    if model is None:
        raise DataError(f"no COLMAP model (cameras and images .bin/.txt) in {folder}, {folder / 'sparse'} or "
                        f"{folder / 'sparse/0'}")
    try:
        rec = pycolmap.Reconstruction(str(model))
    except Exception as e:  # pycolmap raises plain RuntimeError/ValueError on broken files
        raise DataError(f"cannot read the COLMAP model in {model}: {e}") from e
    frames = []
    for image in rec.images.values():
        if not image.has_pose:
            continue
        path = next((d / image.name for d in (folder / "images", folder) if (d / image.name).is_file()), None)
        if path is None:
            continue
        cam = rec.cameras[image.camera_id]
        K, dist = colmap_intrinsics(cam.model_name, cam.params)
        w2c = np.eye(4)
        w2c[:3] = image.cam_from_world().matrix()
        frames.append(PosedFrame(path, K, dist, w2c))
    if not frames:
        raise DataError(f"none of the registered images of the COLMAP model in {model} exist in "
                        f"{folder / 'images'} or {folder}")
    return sorted(frames, key=lambda fr: str(fr.path))


def load_posed(folder: str | Path) -> list[PosedFrame]:
    """Frames of a posed folder: its ``transforms.json`` if it has one, else its COLMAP model."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"posed folder not found: {folder}")
    if (folder / "transforms.json").is_file():
        return load_transforms(folder)
    if find_colmap_model(folder) is not None:
        return load_colmap(folder)
    raise DataError(f"{folder} holds neither a transforms.json nor a COLMAP model (sparse/0, sparse or "
                    "cameras/images .bin/.txt)")


def relative_pose(f0: PosedFrame, f1: PosedFrame) -> tuple[np.ndarray, np.ndarray]:
    """Ground-truth ``R``, ``t`` with ``x1 = R x0 + t`` (camera coordinates)."""
    T = f1.w2c @ np.linalg.inv(f0.w2c)
    return T[:3, :3], T[:3, 3]


def undistorted_image(frame: PosedFrame) -> np.ndarray:
    """The frame's image (BGR uint8) undistorted to the pinhole model with the same ``K``."""
    img = cv2.imread(str(frame.path), cv2.IMREAD_COLOR)
    if img is None:
        raise DataError(f"cannot read {frame.path}")
    return cv2.undistort(img, frame.K, frame.dist)


def select_pairs(frames: list[PosedFrame], bins: tuple[float, ...] = (3, 10, 20, 30, 45, 60),
                 per_bin: int = 8) -> list[tuple[int, int]]:
    """A fixed list of pairs spanning small to wide baselines: ``per_bin`` pairs, evenly spread over the
    sorted candidates, in each relative-rotation bin ``[bins[k], bins[k+1])`` degrees."""
    angles = []
    for i in range(len(frames)):
        for j in range(i + 1, len(frames)):
            angles.append((rotation_error_deg(*(relative_pose(frames[i], frames[j])[0], np.eye(3))), i, j))
    pairs: list[tuple[int, int]] = []
    for lo, hi in zip(bins[:-1], bins[1:]):
        cand = sorted((a, i, j) for a, i, j in angles if lo <= a < hi)
        if not cand:
            continue
        pick = np.linspace(0, len(cand) - 1, min(per_bin, len(cand))).round().astype(int)
        pairs += [(cand[k][1], cand[k][2]) for k in pick]
    return pairs


class PosedPairs:
    """Training pairs of a posed folder (``transforms.json`` or a COLMAP model; no depth): undistorted images
    resized to ``long_side`` and padded to a multiple of 32, with ``K0/1`` and ``T_0to1`` (a ``torch`` map-style
    dataset)."""

    def __init__(self, folder: str | Path, long_side: int = 640,
                 pairs: list[tuple[int, int]] | None = None) -> None:
        self.frames = load_posed(folder)
        self.pairs = pairs if pairs is not None else select_pairs(self.frames, bins=(3, 10, 20, 30, 45), per_bin=10**6)
        self.long_side = long_side

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, k: int) -> dict:
        import torch

        from .depth_pairs import resize_pad

        i, j = self.pairs[k]
        out = {}
        for n, f in enumerate((self.frames[i], self.frames[j])):
            gray = cv2.cvtColor(undistorted_image(f), cv2.COLOR_BGR2GRAY)
            im, _, K = resize_pad(gray, None, f.K, self.long_side, None)
            out[f"image{n}"] = torch.from_numpy(im)[None]
            out[f"K{n}"] = torch.from_numpy(K)
        R, t = relative_pose(self.frames[i], self.frames[j])
        T = np.eye(4)
        T[:3, :3], T[:3, 3] = R, t
        out["T_0to1"] = torch.from_numpy(T)
        return out
