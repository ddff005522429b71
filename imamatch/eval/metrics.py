"""Evaluation metrics: relative-pose error and AUC (LoFTR's exact definition), homography corner error."""

from __future__ import annotations

import numpy as np


def rotation_error_deg(R_est: np.ndarray, R_gt: np.ndarray) -> float:
    """Angle of ``R_est · R_gtᵀ`` in degrees."""
    cos = (np.trace(R_est @ R_gt.T) - 1) / 2
    return float(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))))


def translation_error_deg(t_est: np.ndarray, t_gt: np.ndarray) -> float:
    """Angle between translation directions in degrees, folded at 90° (the sign of t is not observable)."""
    n = np.linalg.norm(t_est) * np.linalg.norm(t_gt)
    if n < 1e-12:
        return 90.0
    ang = float(np.degrees(np.arccos(np.clip(np.dot(t_est.ravel(), t_gt.ravel()) / n, -1.0, 1.0))))
    return min(ang, 180.0 - ang)


def pose_error_deg(R_est: np.ndarray | None, t_est: np.ndarray | None, R_gt: np.ndarray, t_gt: np.ndarray) -> float:
    """max(rotation error, translation error); 90° (or inf for a missing estimate) when the estimate failed."""
    if R_est is None or t_est is None:
        return float("inf")
    return max(rotation_error_deg(R_est, R_gt), translation_error_deg(t_est, t_gt))


def error_auc(errors: np.ndarray | list[float], thresholds: tuple[float, ...]) -> list[float]:
    """Area under the recall-vs-error curve up to each threshold, normalised to [0, 1] (exact integration,
    as in LoFTR / SuperGlue)."""
    errors = np.sort(np.asarray(errors, np.float64))
    n = len(errors)
    if n == 0:
        return [0.0 for _ in thresholds]
    recall = (np.arange(n) + 1) / n
    errors = np.r_[0.0, errors]
    recall = np.r_[0.0, recall]
    aucs = []
    for t in thresholds:
        last = np.searchsorted(errors, t)
        r = np.r_[recall[:last], recall[last - 1]]
        e = np.r_[errors[:last], t]
        aucs.append(float(np.trapezoid(r, x=e) / t))
    return aucs


def homography_corner_error(H_est: np.ndarray | None, H_gt: np.ndarray, w: int, h: int) -> float:
    """Mean distance of the four warped image corners (HPatches protocol); inf when H_est is None."""
    if H_est is None:
        return float("inf")
    c = np.array([[0, 0, 1], [w - 1, 0, 1], [w - 1, h - 1, 1], [0, h - 1, 1]], np.float64).T
    a, b = H_est @ c, H_gt @ c
    return float(np.mean(np.linalg.norm(a[:2] / a[2] - b[:2] / b[2], axis=0)))
