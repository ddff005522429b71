"""Similarity alignment of camera trajectories and rotation errors after alignment."""

from __future__ import annotations

import numpy as np

from .metrics import rotation_error_deg


def umeyama(src: np.ndarray, dst: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Similarity ``dst ≈ s R src + t`` (least squares) for points ``(N, 3)``, N ≥ 3."""
    mu_s, mu_d = src.mean(0), dst.mean(0)
    a, b = src - mu_s, dst - mu_d
    U, S, Vt = np.linalg.svd(b.T @ a / len(src))
    D = np.eye(3)
    if np.linalg.det(U) * np.linalg.det(Vt) < 0:
        D[2, 2] = -1
    R = U @ D @ Vt
    var = (a ** 2).sum() / len(src)
    s = float(np.trace(np.diag(S) @ D) / max(var, 1e-12))
    return s, R, mu_d - s * R @ mu_s


def aligned_rotation_errors(R_est: list[np.ndarray], R_gt: list[np.ndarray]) -> np.ndarray:
    """Per-camera rotation errors (degrees) of world-to-camera rotations after the best global rotation
    ``Ra`` of the world frame (the rotation part of a similarity alignment, fitted to all orientations:
    ``Ra = argmin Σ‖R_est,i Ra − R_gt,i‖``; unlike a fit to camera centres it stays well-posed for nearly
    collinear trajectories)."""
    M = sum(Re.T @ Rg for Re, Rg in zip(R_est, R_gt))
    U, _, Vt = np.linalg.svd(M)
    Ra = U @ np.diag([1, 1, np.sign(np.linalg.det(U @ Vt))]) @ Vt
    return np.array([rotation_error_deg(Re @ Ra, Rg) for Re, Rg in zip(R_est, R_gt)])
