"""Geometry from matches: relative pose (robust estimate) and homography.

Robust estimation uses OpenCV's USAC (MAGSAC++). See :func:`estimate_relative_pose`.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass
class RelativePose:
    """``R`` (3×3) and unit ``t`` (3,) map camera-0 coordinates to camera 1 (``x1 = R x0 + t``);
    ``inliers`` (N,) bool; ``success`` False when no pose could be estimated (then R = I, t = 0)."""

    R: np.ndarray
    t: np.ndarray
    inliers: np.ndarray
    success: bool
    refined: bool = False


def _failed(n: int) -> RelativePose:
    return RelativePose(np.eye(3), np.zeros(3), np.zeros(n, bool), False)


def normalize_points(kpts: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Pixels ``(N, 2)`` → normalised image coordinates with intrinsics ``K`` (3×3)."""
    return (kpts - K[[0, 1], [2, 2]]) / K[[0, 1], [0, 1]]


def _check(kpts0: np.ndarray, kpts1: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    k0, k1 = np.asarray(kpts0, np.float64).reshape(-1, 2), np.asarray(kpts1, np.float64).reshape(-1, 2)
    if len(k0) != len(k1):
        raise ValueError(f"kpts0 and kpts1 differ in length ({len(k0)} vs {len(k1)})")
    return k0, k1


def estimate_relative_pose(kpts0: np.ndarray, kpts1: np.ndarray, K0: np.ndarray, K1: np.ndarray,
                           confidence: np.ndarray | None = None, threshold_px: float = 1.0,
                           ransac_confidence: float = 0.99999, refine: bool = True,
                           ba_iters: int = 10, method: str = "magsac") -> RelativePose:
    """Relative pose from pixel matches ``(N, 2)`` and intrinsics ``K0``, ``K1`` (3×3).

    Essential matrix by USAC-MAGSAC on normalised coordinates (``threshold_px`` over the mean focal length;
    ``method="ransac"``: OpenCV's plain RANSAC, as in the MegaDepth/ScanNet protocol), cheirality check, then (``refine``) two-view bundle adjustment on the inliers, weighted by
    ``confidence`` ``(N,)``, with a Huber loss at ``threshold_px``. The refined pose is kept only if it lowers
    the robust reprojection cost. Fewer than 6 matches, non-finite input or a degenerate configuration give
    ``success=False`` (and R = I, t = 0), never an exception from the solver.
    """
    k0, k1 = _check(kpts0, kpts1)
    n = len(k0)
    finite = np.isfinite(k0).all(1) & np.isfinite(k1).all(1)
    if finite.sum() < 6:
        return _failed(n)
    K0, K1 = np.asarray(K0, np.float64), np.asarray(K1, np.float64)
    n0, n1 = normalize_points(k0[finite], K0), normalize_points(k1[finite], K1)
    f_mean = np.mean([K0[0, 0], K0[1, 1], K1[0, 0], K1[1, 1]])
    try:
        flag = {"magsac": cv2.USAC_MAGSAC, "ransac": cv2.RANSAC}[method]
        E, mask = cv2.findEssentialMat(n0, n1, np.eye(3), method=flag, prob=ransac_confidence,
                                       threshold=threshold_px / f_mean)
    except cv2.error:
        return _failed(n)
    if E is None or mask is None:
        return _failed(n)
    best = None  # several solutions (stacked 3k×3) are resolved by the cheirality count
    for Ei in np.split(E, len(E) // 3):
        count, R, t, m = cv2.recoverPose(Ei, n0, n1, np.eye(3), 1e9, mask=mask.copy())[:4]
        if best is None or count > best[0]:
            best = (count, R, t.ravel(), m.ravel() > 0)
    count, R, t, m = best
    if count < 5 or not np.isfinite(R).all():
        return _failed(n)
    inliers = np.zeros(n, bool)
    inliers[np.flatnonzero(finite)] = m
    t = t / max(np.linalg.norm(t), 1e-12)
    if not refine or inliers.sum() < 6:
        return RelativePose(R, t, inliers, True)
    w = None if confidence is None else np.asarray(confidence, np.float64).reshape(-1)[inliers]
    if w is not None and (len(w) != inliers.sum() or not np.isfinite(w).all()):
        raise ValueError("confidence must be a finite (N,) array matching the keypoints")
    R_ba, t_ba = refine_pose(normalize_points(k0[inliers], K0), normalize_points(k1[inliers], K1), R, t, w,
                             delta=threshold_px / f_mean, iters=ba_iters)
    if R_ba is None:
        return RelativePose(R, t, inliers, True)
    return RelativePose(R_ba, t_ba, inliers, True, refined=True)


def refine_pose(x0: np.ndarray, x1: np.ndarray, R: np.ndarray, t: np.ndarray, weights: np.ndarray | None,
                delta: float, iters: int = 10) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Bundle-adjust one pair (normalised coordinates); returns (None, None) if BA did not lower the cost or
    produced non-finite values."""
    import torch

    from .ba import bundle_adjust

    as_t = lambda a: torch.as_tensor(np.asarray(a, np.float64))[None]  # noqa: E731
    wt = None if weights is None else as_t(weights)
    with torch.no_grad():
        res = bundle_adjust(as_t(x0), as_t(x1), as_t(R), as_t(t), wt, iters=iters, delta=delta)
    R_ba, t_ba = res.R[0].numpy(), res.t[0].numpy()
    if not (np.isfinite(R_ba).all() and np.isfinite(t_ba).all()) or not bool(res.cost[0] < res.initial_cost[0]):
        return None, None
    return R_ba, t_ba


def estimate_homography(kpts0: np.ndarray, kpts1: np.ndarray, threshold_px: float = 3.0,
                        confidence: float = 0.99999) -> tuple[np.ndarray | None, np.ndarray]:
    """Homography ``x1 ∝ H x0`` by USAC-MAGSAC; returns (H or None, inlier mask)."""
    k0, k1 = _check(kpts0, kpts1)
    finite = np.isfinite(k0).all(1) & np.isfinite(k1).all(1)
    inliers = np.zeros(len(k0), bool)
    if finite.sum() < 4:
        return None, inliers
    try:
        H, mask = cv2.findHomography(k0[finite], k1[finite], cv2.USAC_MAGSAC, threshold_px,
                                     confidence=confidence, maxIters=10000)
    except cv2.error:
        return None, inliers
    if H is None or not np.isfinite(H).all():
        return None, inliers
    inliers[np.flatnonzero(finite)] = mask.ravel() > 0
    return H, inliers
