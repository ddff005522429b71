"""Differentiable two-view bundle adjustment (Levenberg–Marquardt with a Schur complement), batched over pairs.

Unknowns per pair: the second camera's rotation (``R · exp([ω]×)``, 3 DOF on SO(3)), its translation on the
unit sphere (2 DOF in the tangent plane; scale is free) and, per point, its position on camera 0's normalised
plane plus its inverse depth, ``X = (a, b, 1) / ρ``. Residuals, in normalised image coordinates, are the
reprojection errors in both images, ``(a, b) − x0`` and ``π(R (a, b, 1) + ρ t) − x1``, weighted by the match
confidence and by a Huber (or Cauchy) robust weight. Each LM step eliminates the 3×3 point blocks (Schur
complement), so memory and time are linear in the number of points: never a dense normal matrix.

Everything is plain PyTorch, so the result is differentiable with respect to keypoints and confidences.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class BAResult:
    """``R`` ``(B, 3, 3)``, unit ``t`` ``(B, 3)``, ``cost`` ``(B,)`` final robust cost, ``initial_cost`` ``(B,)``,
    ``inv_depth`` ``(B, N)``."""

    R: torch.Tensor
    t: torch.Tensor
    cost: torch.Tensor
    initial_cost: torch.Tensor
    inv_depth: torch.Tensor


def so3_exp(w: torch.Tensor) -> torch.Tensor:
    """Rodrigues' formula, ``(..., 3)`` → ``(..., 3, 3)`` (smooth at 0)."""
    theta2 = (w * w).sum(-1, keepdim=True)[..., None]
    theta = torch.sqrt(theta2 + 1e-30)
    small = theta2 < 1e-8
    a = torch.where(small, 1 - theta2 / 6, torch.sin(theta) / theta)
    b = torch.where(small, 0.5 - theta2 / 24, (1 - torch.cos(theta)) / (theta2 + 1e-30))
    K = skew(w)
    eye = torch.eye(3, dtype=w.dtype, device=w.device).expand_as(K)
    return eye + a * K + b * (K @ K)


def skew(v: torch.Tensor) -> torch.Tensor:
    """``(..., 3)`` → ``(..., 3, 3)`` cross-product matrices."""
    z = torch.zeros_like(v[..., 0])
    return torch.stack([
        torch.stack([z, -v[..., 2], v[..., 1]], -1),
        torch.stack([v[..., 2], z, -v[..., 0]], -1),
        torch.stack([-v[..., 1], v[..., 0], z], -1)], -2)


def tangent_basis(t: torch.Tensor) -> torch.Tensor:
    """Orthonormal basis ``(B, 3, 2)`` of the plane orthogonal to unit vectors ``t`` ``(B, 3)``."""
    helper = torch.zeros_like(t)
    idx = t.abs().argmin(-1)
    helper[torch.arange(len(t)), idx] = 1.0
    u = torch.linalg.cross(t, helper)
    u = u / u.norm(dim=-1, keepdim=True)
    v = torch.linalg.cross(t, u)
    return torch.stack([u, v], -1)


def triangulate_inverse_depth(x0: torch.Tensor, x1: torch.Tensor, R: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Least-squares inverse depth in camera 0 for normalised matches ``(B, N, 2)``: solves
    ``x1 × (R m + ρ t) = 0`` for ρ. Returns ``(B, N)``."""
    m = torch.cat([x0, torch.ones_like(x0[..., :1])], -1)
    x1h = torch.cat([x1, torch.ones_like(x1[..., :1])], -1)
    a = torch.linalg.cross(x1h, torch.einsum("bij,bnj->bni", R, m), dim=-1)
    c = torch.linalg.cross(x1h, t[:, None, :].expand_as(x1h), dim=-1)
    return -(a * c).sum(-1) / ((c * c).sum(-1) + 1e-12)


def _robust_weight(sq: torch.Tensor, delta: float, kind: str) -> torch.Tensor:
    """IRLS weights for squared residual norms ``sq``."""
    if kind == "huber":
        r = torch.sqrt(sq + 1e-30)
        return torch.where(r <= delta, torch.ones_like(r), delta / r)
    if kind == "cauchy":
        return 1.0 / (1.0 + sq / delta ** 2)
    if kind == "none":
        return torch.ones_like(sq)
    raise ValueError(f"unknown robust loss {kind!r}; expected 'huber', 'cauchy' or 'none'")


def _robust_cost(sq: torch.Tensor, delta: float, kind: str) -> torch.Tensor:
    if kind == "huber":
        r = torch.sqrt(sq + 1e-30)
        return torch.where(r <= delta, 0.5 * sq, delta * (r - 0.5 * delta))
    if kind == "cauchy":
        return 0.5 * delta ** 2 * torch.log1p(sq / delta ** 2)
    return 0.5 * sq


def _residuals(x0, x1, R, t, pts):
    """Residuals ``r0``, ``r1`` ``(B, N, 2)`` and the camera-1 point ``P`` ``(B, N, 3)``."""
    m = torch.cat([pts[..., :2], torch.ones_like(pts[..., :1])], -1)
    P = torch.einsum("bij,bnj->bni", R, m) + pts[..., 2:3] * t[:, None, :]
    z = P[..., 2:3]
    z = torch.where(z.abs() < 1e-9, torch.full_like(z, 1e-9), z)
    return pts[..., :2] - x0, P[..., :2] / z - x1, P, m


def _total_cost(r0, r1, w, mask, delta, kind):
    c = _robust_cost((r0 * r0).sum(-1), delta, kind) + _robust_cost((r1 * r1).sum(-1), delta, kind)
    return (w * c * mask).sum(-1)


def bundle_adjust(x0: torch.Tensor, x1: torch.Tensor, R: torch.Tensor, t: torch.Tensor,
                  weights: torch.Tensor | None = None, mask: torch.Tensor | None = None, iters: int = 10,
                  robust: str = "huber", delta: float = 2e-3, lm_init: float = 1e-3) -> BAResult:
    """Refine relative poses by two-view bundle adjustment.

    Args:
        x0, x1: normalised image coordinates ``(B, N, 2)`` (pixels minus principal point, over focal).
        R, t: initial rotation ``(B, 3, 3)`` and translation ``(B, 3)`` with ``x1 ~ R x0 + t``.
        weights: per-match confidences ``(B, N)`` (default ones). mask: ``(B, N)`` bool of valid matches.
        robust, delta: robust loss ("huber", "cauchy", "none") and its scale in normalised units
            (about ``pixels / focal``).
    Returns:
        :class:`BAResult`; differentiable w.r.t. ``x0``, ``x1`` and ``weights``.
    """
    B, N, _ = x0.shape
    dt = x0.dtype
    w = torch.ones(B, N, dtype=dt, device=x0.device) if weights is None else weights.to(dt)
    msk = torch.ones(B, N, dtype=dt, device=x0.device) if mask is None else mask.to(dt)
    t = t / t.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    pts = torch.cat([x0, triangulate_inverse_depth(x0, x1, R, t)[..., None]], -1)
    lam = torch.full((B,), lm_init, dtype=dt, device=x0.device)
    r0, r1, P, m = _residuals(x0, x1, R, t, pts)
    cost = _total_cost(r0, r1, w, msk, delta, robust)
    initial = cost
    eye3 = torch.eye(3, dtype=dt, device=x0.device)
    for _ in range(iters):
        # --- Jacobians of r1 = π(P) - x1 (B, N, 2, ·)
        z = P[..., 2]
        z = torch.where(z.abs() < 1e-9, torch.full_like(z, 1e-9), z)
        dpi = torch.zeros(B, N, 2, 3, dtype=dt, device=x0.device)
        dpi[..., 0, 0] = 1 / z
        dpi[..., 1, 1] = 1 / z
        dpi[..., 0, 2] = -P[..., 0] / z ** 2
        dpi[..., 1, 2] = -P[..., 1] / z ** 2
        basis = tangent_basis(t)                                      # B, 3, 2
        dP_rot = -torch.einsum("bij,bnjk->bnik", R, skew(m))          # B, N, 3, 3
        dP_tr = pts[..., 2, None, None] * basis[:, None]              # B, N, 3, 2
        dP_pt = torch.cat([R[:, None, :, :2].expand(B, N, 3, 2), t[:, None, :, None].expand(B, N, 3, 1)], -1)
        Jp = dpi @ torch.cat([dP_rot, dP_tr], -1)                     # B, N, 2, 5
        Jl = dpi @ dP_pt                                              # B, N, 2, 3
        # --- robust, confidence weights per image
        s0 = w * msk * _robust_weight((r0 * r0).sum(-1), delta, robust)
        s1 = w * msk * _robust_weight((r1 * r1).sum(-1), delta, robust)
        # image-0 residual r0 = (a, b) - x0: Jacobian [I2 | 0] on the point only
        Hpp = torch.einsum("bnki,bn,bnkj->bij", Jp, s1, Jp)           # B, 5, 5
        Hpl = torch.einsum("bnki,bn,bnkj->bnij", Jp, s1, Jl)          # B, N, 5, 3
        Hll = torch.einsum("bnki,bn,bnkj->bnij", Jl, s1, Jl)          # B, N, 3, 3
        Hll = Hll + torch.diag_embed(torch.stack([s0, s0, torch.zeros_like(s0)], -1))
        gp = torch.einsum("bnki,bn,bnk->bi", Jp, s1, r1)
        gl = torch.einsum("bnki,bn,bnk->bni", Jl, s1, r1) + torch.cat([s0[..., None] * r0, torch.zeros_like(s0[..., None])], -1)
        # --- LM damping and Schur complement over the point blocks
        Hpp_d = Hpp + lam[:, None, None] * (torch.diag_embed(torch.diagonal(Hpp, dim1=-2, dim2=-1)) + 1e-9 * torch.eye(5, dtype=dt, device=x0.device))
        Hll_d = Hll + lam[:, None, None, None] * torch.diag_embed(torch.diagonal(Hll, dim1=-2, dim2=-1)) + 1e-9 * eye3
        Hll_inv = torch.linalg.inv(Hll_d)
        HplHinv = Hpl @ Hll_inv                                       # B, N, 5, 3
        S = Hpp_d - torch.einsum("bnij,bnkj->bik", HplHinv, Hpl)
        rhs = gp - torch.einsum("bnij,bnj->bi", HplHinv, gl)
        dp = -torch.linalg.solve(S, rhs)                              # B, 5
        dl = -torch.einsum("bnij,bnj->bni", Hll_inv, gl + torch.einsum("bnji,bj->bni", Hpl, dp))
        # --- candidate update
        R_new = R @ so3_exp(dp[:, :3])
        t_new = t + torch.einsum("bij,bj->bi", basis, dp[:, 3:])
        t_new = t_new / t_new.norm(dim=-1, keepdim=True)
        pts_new = pts + dl
        r0n, r1n, Pn, mn = _residuals(x0, x1, R_new, t_new, pts_new)
        cost_new = _total_cost(r0n, r1n, w, msk, delta, robust)
        ok = torch.isfinite(cost_new) & (cost_new < cost)
        R = torch.where(ok[:, None, None], R_new, R)
        t = torch.where(ok[:, None], t_new, t)
        pts = torch.where(ok[:, None, None], pts_new, pts)
        r0 = torch.where(ok[:, None, None], r0n, r0)
        r1 = torch.where(ok[:, None, None], r1n, r1)
        P = torch.where(ok[:, None, None], Pn, P)
        m = torch.where(ok[:, None, None], mn, m)
        cost = torch.where(ok, cost_new, cost)
        lam = torch.where(ok, lam / 3.5, lam * 1.5).clamp(1e-9, 1e9)
    return BAResult(R, t, cost, initial, pts[..., 2])
