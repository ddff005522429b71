"""MegaDepth-1500 / ScanNet-1500 evaluation (LoFTR protocol) and folder-based homography / posed evaluation."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..data.standard import PairInfo
from ..errors import DataError
from ..pose import estimate_relative_pose, normalize_points
from .metrics import error_auc, pose_error_deg

Matcher = Callable[[Path, Path], tuple[np.ndarray, np.ndarray]]


def epipolar_errors(k0: np.ndarray, k1: np.ndarray, K0: np.ndarray, K1: np.ndarray, T: np.ndarray) -> np.ndarray:
    """Symmetric epipolar distance in normalised coordinates (LoFTR's matching-precision measure)."""
    x0 = np.c_[normalize_points(k0, K0), np.ones(len(k0))]
    x1 = np.c_[normalize_points(k1, K1), np.ones(len(k1))]
    t = T[:3, 3]
    E = np.array([[0, -t[2], t[1]], [t[2], 0, -t[0]], [-t[1], t[0], 0]]) @ T[:3, :3]
    Ex0, Etx1 = x0 @ E.T, x1 @ E
    d = np.sum(x1 * Ex0, -1) ** 2
    return d * (1 / (Ex0[:, 0] ** 2 + Ex0[:, 1] ** 2 + 1e-12) + 1 / (Etx1[:, 0] ** 2 + Etx1[:, 1] ** 2 + 1e-12))


def check_files(root: Path, pairs: list[PairInfo]) -> None:
    """Raise :class:`DataError` naming the missing images (first few and how many)."""
    missing = sorted({p for pr in pairs for p in (pr.image0, pr.image1) if not (root / p).is_file()})
    if missing:
        raise DataError(f"{len(missing)} test images missing under {root}, e.g. {root / missing[0]}")


def evaluate_pose_pairs(match: Matcher, root: str | Path, pairs: list[PairInfo], precision_threshold: float,
                        threshold_px: float = 0.5, refine: bool = False) -> dict[str, float]:
    """Pose AUC@5/10/20° and matching precision over ``pairs`` (images under ``root``)."""
    root = Path(root)
    check_files(root, pairs)
    errs, precs, counts = [], [], []
    for pr in tqdm(pairs, desc="pairs", dynamic_ncols=True):
        k0, k1 = match(root / pr.image0, root / pr.image1)
        pose = estimate_relative_pose(k0, k1, pr.K0, pr.K1, threshold_px=threshold_px, method="ransac",
                                      refine=refine)
        errs.append(pose_error_deg(pose.R, pose.t, pr.T_0to1[:3, :3], pr.T_0to1[:3, 3]) if pose.success else np.inf)
        ep = epipolar_errors(k0, k1, pr.K0, pr.K1, pr.T_0to1)
        precs.append(float(np.mean(ep < precision_threshold)) if len(ep) else 0.0)
        counts.append(len(k0))
    a5, a10, a20 = error_auc(errs, (5, 10, 20))
    return {"auc5": a5, "auc10": a10, "auc20": a20, "precision": float(np.mean(precs)),
            "matches": float(np.mean(counts)), "pairs": float(len(pairs))}


def homography_pairs(seq: Path) -> list[tuple[Path, Path, Path]]:
    """A homography sequence's pairs ``(image 1, image k, H from 1 to k)``, k = 2 … 6, in either naming:
    HPatches' (``1.<ext>`` … ``6.<ext>``, ``H_1_2`` … ``H_1_6``) or the Oxford affine set's (``img1.<ext>`` …,
    ``H1to2p`` …; Graffiti, Boat, Wall, …). Missing images or homographies leave their pair out."""
    for image, hom in (("{}", "H_1_{}"), ("img{}", "H1to{}p")):
        first = next(iter(sorted(seq.glob(image.format(1) + ".*"))), None)
        if first is None:
            continue
        pairs = []
        for k in range(2, 7):
            other = next(iter(sorted(seq.glob(image.format(k) + ".*"))), None)
            if other is not None and (seq / hom.format(k)).is_file():
                pairs.append((first, other, seq / hom.format(k)))
        if pairs:
            return pairs
    return []


def hpatches_sequences(root: str | Path) -> list[Path]:
    """The homography sequences under ``root`` (its sub-folders with :func:`homography_pairs`), or ``root``
    itself when it is one."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"homography dataset folder not found: {root}")
    if homography_pairs(root):
        return [root]
    seqs = sorted(d for d in root.iterdir() if d.is_dir() and homography_pairs(d))
    if not seqs:
        raise DataError(f"no homography sequences under {root}: expected folders of 1.* … 6.* with H_1_2 … H_1_6 "
                        "(HPatches) or img1.* … img6.* with H1to2p … H1to6p (Oxford)")
    return seqs


def evaluate_homography_folder(match: Matcher, root: str | Path) -> dict[str, float]:
    """Mean corner error AUC@3/5/10 px over all 1→k pairs of the homography sequences under ``root``
    (:func:`hpatches_sequences`); ``match(path0, path1)`` gives the keypoints in the files' pixels."""
    from ..io import read_image
    from ..pose import estimate_homography
    from .metrics import homography_corner_error

    errs = []
    for seq in tqdm(hpatches_sequences(root), desc="sequences", dynamic_ncols=True):
        pairs = homography_pairs(seq)
        h, w = read_image(pairs[0][0]).shape
        for first, other, hom in pairs:
            k0, k1 = match(first, other)
            H, _ = estimate_homography(k0, k1, threshold_px=3.0)
            errs.append(homography_corner_error(H, np.loadtxt(hom), w, h))
    a3, a5, a10 = error_auc(errs, (3, 5, 10))
    return {"auc3": a3, "auc5": a5, "auc10": a10, "pairs": float(len(errs))}
