"""Development sets with exact truth, generated from photos: homography pairs and 3D scene pairs.

A fixed seed (distinct from any training seed's stream) makes the same pairs every time. The photos may be the
training photos — the warps and scenes are new — so these sets measure how well the matcher has learnt the
geometry, not how it generalises to unseen textures; the shared-data benchmark does that. Metrics per set: the
share of matches within 1 / 3 px of the truth (where the truth is defined: visible, not occluded), matches per
pair, and for scenes the relative pose AUC@5/10/20° (MAGSAC + cheirality, as the benchmark).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..data.scenes import SceneConfig, make_scene_pair
from ..data.synthetic import WarpConfig, load_photos, make_pair
from ..pose import estimate_relative_pose
from ..train.supervision import depth_transfer
from .metrics import error_auc, pose_error_deg

Method = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]
DEV_SEED = 1_000_003


def scene_truth(pair: dict[str, np.ndarray], k0: np.ndarray) -> np.ndarray:
    """Where the keypoints ``k0`` ``(N, 2)`` of image 0 of a scene pair land in image 1 ``(N, 2)``; NaN where
    hidden, outside, or without depth."""
    t = lambda a: torch.from_numpy(np.asarray(a))[None]  # noqa: E731
    f = depth_transfer(t(pair["depth0"]), t(pair["depth1"]), t(pair["K0"]), t(pair["K1"]), t(pair["T_0to1"]))
    p1, ok = f(torch.from_numpy(np.asarray(k0, np.float64)), torch.zeros(len(k0), dtype=torch.long))
    p1 = p1.numpy().astype(np.float64)
    p1[~ok.numpy()] = np.nan
    return p1


@dataclass
class DevPair:
    """A generated pair: grayscale ``image0/1`` ``(S, S)`` in [0, 1]; ``truth(k0)`` maps keypoints ``(N, 2)`` of
    image 0 to image 1 (NaN where undefined); scenes also carry ``K0``, ``K1`` and ``T_0to1``."""

    image0: np.ndarray
    image1: np.ndarray
    truth: Callable[[np.ndarray], np.ndarray]
    K0: np.ndarray | None = None
    K1: np.ndarray | None = None
    T_0to1: np.ndarray | None = None


def _homography_truth(H: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    def truth(k0: np.ndarray) -> np.ndarray:
        ph = np.c_[k0, np.ones(len(k0))] @ H.T
        return ph[:, :2] / ph[:, 2:]
    return truth


def dev_pairs(folders: Sequence[str | Path], kind: str = "scenes", pairs: int = 40, size: int = 320,
              seed: int = DEV_SEED) -> list[DevPair]:
    """``pairs`` pairs of ``kind`` "scenes" or "homography" (``size`` px square), the same for the same seed."""
    if kind not in ("scenes", "homography"):
        raise ValueError(f"kind must be 'scenes' or 'homography', not {kind!r}")
    photos = load_photos(folders)
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(pairs):
        if kind == "homography":
            img0, img1, H = make_pair(rng, photos[rng.integers(len(photos))], WarpConfig(size=size))
            out.append(DevPair(img0, img1, _homography_truth(H)))
        else:
            p = make_scene_pair(rng, photos, SceneConfig(size=size))
            out.append(DevPair(p["image0"], p["image1"], lambda k0, p=p: scene_truth(p, k0), p["K0"], p["K1"],
                               p["T_0to1"]))
    return out


def eval_dev(method: Method, pairs: Sequence[DevPair], progress: bool = True) -> dict[str, float]:
    """Match every pair with ``method``: share of matches within 1 / 3 px of the truth (mean over pairs),
    matches per pair, and — for pairs with a pose — the relative pose AUC@5/10/20°."""
    within1, within3, counts, pose_err = [], [], [], []
    for pair in tqdm(pairs, desc="dev pairs", disable=not progress):
        k0, k1 = method(pair.image0, pair.image1)
        k0, k1 = np.asarray(k0, np.float64).reshape(-1, 2), np.asarray(k1, np.float64).reshape(-1, 2)
        err = np.linalg.norm(k1 - pair.truth(k0), axis=1)
        err = err[np.isfinite(err)]
        counts.append(len(k0))
        if len(err):
            within1.append(np.mean(err < 1))
            within3.append(np.mean(err < 3))
        if pair.T_0to1 is not None:
            T = pair.T_0to1
            est = estimate_relative_pose(k0, k1, pair.K0, pair.K1, threshold_px=1.0, refine=False)
            pose_err.append(pose_error_deg(est.R, est.t, T[:3, :3], T[:3, 3]) if est.success else float("inf"))
    out = {"pairs": float(len(pairs)), "matches": float(np.mean(counts)) if counts else 0.0,
           "within1": float(np.mean(within1)) if within1 else 0.0,
           "within3": float(np.mean(within3)) if within3 else 0.0}
    if pose_err:
        a5, a10, a20 = error_auc(pose_err, (5, 10, 20))
        out.update(auc5=a5, auc10=a10, auc20=a20)
    return out
