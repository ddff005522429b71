"""ScanNet's training index in LoFTR's format, and the choice between it and a ``test.npz``-style index.

LoFTR's index: ``scene_data/train/sceneXXXX_XX.npz``, each with ``name`` (N, 4: scene, sub-scene, frame0,
frame1) and ``score`` (N,: overlap), a list of those files (``scene_data/train_list/scannet_all.txt``, optional
here) and ``intrinsics.npz`` (3×3 per scene); the relative poses come from the scene folders'
``pose/<frame>.txt`` (camera-to-world). Each epoch draws a fixed number of pairs per scene among those with an
overlap score above a threshold (LoFTR: 200 pairs, score > 0.4), reading one scene file at a time: only the
epoch's draw (four integers and a score per pair) stays in memory, and a pair's poses are read when it is loaded.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import overload

import numpy as np

from ..errors import DataError
from .depth_pairs import scannet_scene_pairs
from .standard import (PairInfo, check_pair_names, read_npz, read_scannet_intrinsics, scannet_pairs,
                       scannet_scene_name, scannet_scene_root, scene_intrinsics)

TRAIN_SCENE_FOLDERS = ("", "scene_data/train")  # where the per-scene files may lie under the index folder


def scannet_train_files(index_dir: str | Path, list_name: str | None = None) -> tuple[list[Path], Path]:
    """The per-scene npz files and the ``intrinsics.npz`` of a LoFTR-style ScanNet training index.

    The scene files lie in ``index_dir`` or its ``scene_data/train``: those named in ``list_name`` (a file with
    one npz name per line, ``.npz`` optional; relative to ``index_dir`` unless absolute), else every
    ``scene*.npz`` there. ``intrinsics.npz`` lies beside them or up to two folders above (LoFTR: ``index/``)."""
    index_dir = Path(index_dir)
    if not index_dir.is_dir():
        raise DataError(f"ScanNet index folder not found: {index_dir}")
    names = None
    if list_name:
        listing = index_dir / list_name
        if not listing.is_file():
            raise DataError(f"ScanNet scene list not found: {listing}")
        names = [line.split()[0] for line in listing.read_text().splitlines() if line.strip()]
        names = [n if n.endswith(".npz") else f"{n}.npz" for n in names]
        if not names:
            raise DataError(f"ScanNet scene list {listing} is empty")
    for sub in TRAIN_SCENE_FOLDERS:
        folder = index_dir / sub
        files = [folder / n for n in names] if names else sorted(folder.glob("scene*.npz"))
        if any(f.is_file() for f in files):
            break
    else:
        raise DataError(f"{index_dir} is not a ScanNet index: expected test.npz and intrinsics.npz (ScanNet-1500 "
                        f"style), or LoFTR's training index: per-scene sceneXXXX_XX.npz files with 'name' and "
                        f"'score' in it or in its scene_data/train, and intrinsics.npz"
                        + (f" (none of the files in {index_dir / list_name} found there)" if names else ""))
    missing = [f for f in files if not f.is_file()]
    if missing:
        raise DataError(f"{len(missing)} of the {len(files)} ScanNet scene files are missing, e.g. {missing[0]}")
    for d in (folder, folder.parent, folder.parent.parent):
        if (d / "intrinsics.npz").is_file():
            return files, d / "intrinsics.npz"
    raise DataError(f"ScanNet intrinsics.npz not found in {folder} nor in the two folders above it")


def read_scene_index(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``name`` (N, 4) int64 and ``score`` (N,) of one per-scene file, checked."""
    d = read_npz(path, ("name", "score"))
    names, score = check_pair_names(d["name"], path), d["score"]
    if score.shape != (len(names),) or not np.issubdtype(score.dtype, np.number):
        raise DataError(f"{path}: expected score to be ({len(names)},) numbers, got {score.shape} {score.dtype}")
    return names, score.astype(np.float32)


def sample_scene(score: np.ndarray, min_overlap: float, per_scene: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of ``per_scene`` pairs with ``score > min_overlap`` (every such pair when ``per_scene`` is 0):
    distinct ones while there are enough, then repeats drawn at random; none when no pair is above."""
    kept = np.flatnonzero(score > min_overlap)
    if per_scene <= 0 or not len(kept):
        return kept
    take = rng.permutation(len(kept))[:per_scene]
    if len(take) < per_scene:
        take = np.concatenate([take, rng.integers(0, len(kept), per_scene - len(take))])
    return kept[take]


class ScanNetTrainPairs(Sequence[PairInfo]):
    """The pairs of one epoch of a LoFTR-style ScanNet training index (see :func:`scannet_train_files`),
    :class:`PairInfo` made on access (poses read then) for :class:`~imamatch.data.depth_pairs.DepthPairs`.

    ``set_epoch`` draws the epoch's pairs: ``per_scene`` of each scene among those with ``score > min_overlap``
    (all of them when ``per_scene`` is 0), the same on every process for one ``seed`` and epoch. ``root`` is
    the folder of the scene folders or one above it (see :func:`scannet_scene_root`); ``self.root`` the former.
    """

    def __init__(self, index_dir: str | Path, root: str | Path, list_name: str | None = None,
                 min_overlap: float = 0.4, per_scene: int = 200, seed: int = 0) -> None:
        self.files, self.intrinsics_path = scannet_train_files(index_dir, list_name)
        self.intrinsics = read_scannet_intrinsics(self.intrinsics_path)
        self.min_overlap, self.per_scene, self.seed = min_overlap, per_scene, seed
        self.epoch = -1
        self.set_epoch(0)
        scene, sub, f0, _ = self.names[0]
        self.root = scannet_scene_root(root, [f"{scannet_scene_name(scene, sub)}/color/{f0}.jpg"])

    def set_epoch(self, epoch: int) -> None:
        """Draw the pairs of ``epoch`` (reading the scene files one at a time); nothing to do if drawn already."""
        if epoch == self.epoch:
            return
        names, scores = [], []
        for k, path in enumerate(self.files):
            n, s = read_scene_index(path)
            take = sample_scene(s, self.min_overlap, self.per_scene,
                                np.random.default_rng((self.seed & 0xFFFFFFFF, epoch, k)))
            for scene, sub in np.unique(n[take, :2], axis=0):
                scene_intrinsics(self.intrinsics, scannet_scene_name(scene, sub), self.intrinsics_path)
            names.append(n[take])
            scores.append(s[take])
        self.names, self.scores = np.concatenate(names), np.concatenate(scores)
        if not len(self.names):
            raise DataError(f"no pair of the {len(self.files)} ScanNet scene files (e.g. {self.files[0]}) has an "
                            f"overlap score above {self.min_overlap}")
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.names)

    @overload
    def __getitem__(self, i: int) -> PairInfo: ...

    @overload
    def __getitem__(self, i: slice) -> list[PairInfo]: ...

    def __getitem__(self, i: int | slice) -> PairInfo | list[PairInfo]:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        scene, sub, f0, f1 = (int(v) for v in self.names[i])
        name = scannet_scene_name(scene, sub)
        pair = scannet_scene_pairs(self.root, name, [(f0, f1)], self.intrinsics[name])[0]
        return replace(pair, overlap=float(self.scores[i]))


def scannet_training_pairs(index_dir: str | Path, root: str | Path, list_name: str | None = None,
                           min_overlap: float = 0.4, per_scene: int = 200,
                           seed: int = 0) -> tuple[Path, Sequence[PairInfo]]:
    """The folder of the scene folders and the training pairs of a ScanNet index folder: with a ``test.npz``
    the fixed pairs of :func:`scannet_pairs`; otherwise LoFTR's per-scene training index, drawn anew each epoch
    (:class:`ScanNetTrainPairs`; ``list_name``, ``min_overlap``, ``per_scene`` and ``seed`` apply to it)."""
    if (Path(index_dir) / "test.npz").is_file():
        pairs = scannet_pairs(index_dir)
        return scannet_scene_root(root, pairs), pairs
    train = ScanNetTrainPairs(index_dir, root, list_name, min_overlap, per_scene, seed)
    return train.root, train
