"""Geometry from matches: relative pose (robust estimate) and homography.

Relative pose: PoseLib's LO-RANSAC (5-point essential matrix, local optimisation, then non-linear refinement
on the inliers), or OpenCV's USAC-MAGSAC / RANSAC; then our two-view bundle adjustment. Homography: OpenCV's
USAC-MAGSAC. See :func:`estimate_relative_pose`.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass
class RelativePose:
    """``R`` (3×3) and unit ``t`` (3,) map camera-0 coordinates to camera 1 (``x1 = R x0 + t``);
    ``inliers`` (N,) bool; ``success`` False when no pose could be estimated (then R = I, t = 0). ``planar``: one
    homography explains at least :data:`PLANAR_RATIO` of the inliers (COLMAP's planar-or-panoramic test): the
    scene seen by the matches is (nearly) a plane, or the baseline is (nearly) zero, and the pose may be ambiguous
    (a plane gives two valid poses; the translation of a pure rotation is undefined): a few off-plane inliers can
    still settle it, but prefer another pair to start a reconstruction from."""

    R: np.ndarray
    t: np.ndarray
    inliers: np.ndarray
    success: bool
    refined: bool = False
    planar: bool = False


PLANAR_RATIO = 0.8  # homography inliers / essential-matrix inliers above which a pose counts as planar (as COLMAP)


def is_planar(kpts0: np.ndarray, kpts1: np.ndarray, threshold_px: float, ratio: float = PLANAR_RATIO) -> bool:
    """Whether one homography (MAGSAC, ``threshold_px`` in image 1) explains at least ``ratio`` of the pose
    inliers ``kpts0`` ↔ ``kpts1`` ``(N, 2)``. :func:`estimate_relative_pose` uses twice its epipolar threshold:
    the transfer error is two-dimensional where the Sampson error is one (on a plane with 0.5 px noise, 1 px
    explains ~66 % of the inliers, 2 px 96–100 %; a 3-D scene stays under 20 %, tests/test_ba.py)."""
    if len(kpts0) < 4:
        return False
    H, inl = estimate_homography(kpts0, kpts1, threshold_px=threshold_px)
    return H is not None and float(inl.mean()) >= ratio


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


POSE_METHODS = ("poselib", "magsac", "ransac")


def estimate_relative_pose(kpts0: np.ndarray, kpts1: np.ndarray, K0: np.ndarray, K1: np.ndarray,
                           confidence: np.ndarray | None = None, threshold_px: float = 1.0,
                           ransac_confidence: float = 0.99999, refine: bool = True,
                           ba_iters: int = 10, method: str = "poselib") -> RelativePose:
    """Relative pose from pixel matches ``(N, 2)`` and intrinsics ``K0``, ``K1`` (3×3).

    ``method``: ``"poselib"`` (default) PoseLib's LO-RANSAC on the Sampson error in pixels (``threshold_px``),
    5-point essential matrix with cheirality, then its non-linear refinement on the inliers; ``"magsac"``
    OpenCV's USAC-MAGSAC on normalised coordinates (``threshold_px`` over the mean focal length);
    ``"ransac"`` OpenCV's plain RANSAC, as in the MegaDepth/ScanNet protocol. PoseLib measured best on the
    posed phone sequence for every matcher (README, Results). Then (``refine``) our two-view bundle adjustment
    on the inliers, weighted by ``confidence`` ``(N,)``, with a Huber loss at ``threshold_px``; the refined
    pose is kept only if it lowers the robust reprojection cost. Fewer than 6 matches, non-finite input or
    a degenerate configuration give ``success=False`` (and R = I, t = 0), never an exception from the solver.
    Deterministic: the same input gives the same pose.
    """
    if method not in POSE_METHODS:
        raise ValueError(f"unknown pose method {method!r}; choose from {POSE_METHODS}")
    k0, k1 = _check(kpts0, kpts1)
    n = len(k0)
    finite = np.isfinite(k0).all(1) & np.isfinite(k1).all(1)
    if finite.sum() < 6:
        return _failed(n)
    K0, K1 = np.asarray(K0, np.float64), np.asarray(K1, np.float64)
    f_mean = np.mean([K0[0, 0], K0[1, 1], K1[0, 0], K1[1, 1]])
    if method == "poselib":
        found = _poselib_pose(k0[finite], k1[finite], K0, K1, threshold_px, ransac_confidence)
    else:
        found = _opencv_pose(normalize_points(k0[finite], K0), normalize_points(k1[finite], K1),
                             threshold_px / f_mean, ransac_confidence, method)
    if found is None:
        return _failed(n)
    R, t, m = found
    inliers = np.zeros(n, bool)
    inliers[np.flatnonzero(finite)] = m
    t = t / max(np.linalg.norm(t), 1e-12)
    planar = is_planar(k0[inliers], k1[inliers], 2 * threshold_px)  # transfer error is 2-D, Sampson's 1-D
    if not refine or inliers.sum() < 6:
        return RelativePose(R, t, inliers, True, planar=planar)
    w = None if confidence is None else np.asarray(confidence, np.float64).reshape(-1)[inliers]
    if w is not None and (len(w) != inliers.sum() or not np.isfinite(w).all()):
        raise ValueError("confidence must be a finite (N,) array matching the keypoints")
    R_ba, t_ba = refine_pose(normalize_points(k0[inliers], K0), normalize_points(k1[inliers], K1), R, t, w,
                             delta=threshold_px / f_mean, iters=ba_iters)
    if R_ba is None:
        return RelativePose(R, t, inliers, True, planar=planar)
    return RelativePose(R_ba, t_ba, inliers, True, refined=True, planar=planar)


def _poselib_pose(k0: np.ndarray, k1: np.ndarray, K0: np.ndarray, K1: np.ndarray, threshold_px: float,
                  success_prob: float) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """PoseLib's relative pose on finite pixel matches: (R, t, inlier mask) or None."""
    import poselib

    def camera(K: np.ndarray) -> dict:
        return {"model": "PINHOLE", "width": 0, "height": 0, "params": [K[0, 0], K[1, 1], K[0, 2], K[1, 2]]}

    pose, info = poselib.estimate_relative_pose(k0, k1, camera(K0), camera(K1),
                                                {"max_epipolar_error": threshold_px, "success_prob": success_prob,
                                                 "seed": 0}, {})
    R, t, m = np.asarray(pose.R), np.asarray(pose.t), np.asarray(info["inliers"], bool)
    if m.sum() < 5 or not (np.isfinite(R).all() and np.isfinite(t).all()) or np.linalg.norm(t) < 1e-12:
        return None
    if len(np.unique(np.concatenate([k0[m], k1[m]], 1), axis=0)) < 5:  # repeated points fix no pose
        return None
    return R, t, m


def _opencv_pose(n0: np.ndarray, n1: np.ndarray, threshold: float, prob: float,
                 method: str) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """OpenCV's essential matrix (MAGSAC or RANSAC) on normalised coordinates, then the cheirality check."""
    try:
        flag = {"magsac": cv2.USAC_MAGSAC, "ransac": cv2.RANSAC}[method]
        E, mask = cv2.findEssentialMat(n0, n1, np.eye(3), method=flag, prob=prob, threshold=threshold)
    except cv2.error:
        return None
    if E is None or mask is None:
        return None
    best = None  # several solutions (stacked 3k×3) are resolved by the cheirality count
    for Ei in np.split(E, len(E) // 3):
        count, R, t, m = cv2.recoverPose(Ei, n0, n1, np.eye(3), 1e9, mask=mask.copy())[:4]
        if best is None or count > best[0]:
            best = (count, R, t.ravel(), m.ravel() > 0)
    count, R, t, m = best
    if count < 5 or not np.isfinite(R).all():
        return None
    return R, t, m


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
