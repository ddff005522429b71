"""Local affine models of the match field, and the neighbourhood-agreement filter built on them.

Neighbouring matches on one surface move together: within a few cells, ``kp1 ≈ A·kp0 + t``. Each match gets the
least-squares affine map of the matches around it (a box filter over per-cell moments, so the cost is linear in
the number of matches). The sub-pixel polish warps its patches by the linear part; the filter drops matches that
disagree with the map fitted to their neighbours *without them* (leave-one-out) — wrong matches at depth
discontinuities, on repeated or blank texture, which the learned confidence does not catch. A match with too few
neighbours to judge gets no residual (NaN); the matcher drops it as isolated.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class LocalAffine:
    """Per-match affine fit: ``A`` ``(N, 2, 3)`` mapping ``(x, y, 1)`` of image 0 to image 1, ``support``
    ``(N,)`` the number of matches it was fitted to, ``ok`` ``(N,)`` bool where the fit is determined and
    plausible (support ≥ ``min_points``, singular values of the linear part within [1/4, 4])."""

    A: torch.Tensor
    support: torch.Tensor
    ok: torch.Tensor


def svdvals2x2(m: torch.Tensor) -> torch.Tensor:
    """Singular values ``(N, 2)``, largest first, of 2×2 matrices ``(N, 2, 2)`` in closed form (a batched SVD
    costs ~20× more here): σ² = (‖M‖²_F ± √(‖M‖⁴_F − 4·det²)) / 2."""
    fro = m.square().sum((-1, -2))
    det = m[:, 0, 0] * m[:, 1, 1] - m[:, 0, 1] * m[:, 1, 0]
    root = (fro.square() - 4 * det.square()).clamp_min(0).sqrt()
    return torch.stack([((fro + root) / 2).sqrt(), ((fro - root) / 2).clamp_min(0).sqrt()], -1)


def fit_local_affine(b: torch.Tensor, kp0: torch.Tensor, kp1: torch.Tensor, batch: int, grid: tuple[int, int],
                     cell: int = 8, reach: int = 2, min_points: int = 8, leave_one_out: bool = False,
                     weight: torch.Tensor | None = None) -> LocalAffine:
    """Fit ``kp1 ≈ A·(kp0, 1)`` to the matches ``kp0`` ↔ ``kp1`` ``(N, 2)`` of batch items ``b`` ``(N,)`` whose
    ``cell``-px cell in image 0 lies within ``reach`` cells of the match's own, on a ``grid`` = (h, w) of cells.
    ``leave_one_out``: the match itself is not part of its fit. ``weight`` ``(N,)`` in [0, 1] (default 1)
    scales each match's share, e.g. 0 to exclude known outliers."""
    n = kp0.shape[0]
    if n == 0:
        return LocalAffine(kp0.new_zeros(0, 2, 3), kp0.new_zeros(0), torch.zeros(0, dtype=torch.bool))
    h, w = grid
    cx = (kp0[:, 0] / cell).floor().long().clamp(0, w - 1)
    cy = (kp0[:, 1] / cell).floor().long().clamp(0, h - 1)
    flat = (b.long() * h + cy) * w + cx
    x, y = kp0[:, 0].double(), kp0[:, 1].double()
    u, v = kp1[:, 0].double(), kp1[:, 1].double()
    one = torch.ones_like(x)
    terms = torch.stack([one, x, y, x * x, x * y, y * y, u, v, x * u, y * u, x * v, y * v], -1)   # N, 12
    if weight is not None:
        terms = terms * weight.double()[:, None]
    moments = terms.new_zeros(batch * h * w, 12).index_add_(0, flat, terms)
    moments = moments.view(batch, h, w, 12).permute(0, 3, 1, 2)
    k = 2 * reach + 1
    moments = F.avg_pool2d(moments, k, stride=1, padding=reach, count_include_pad=True) * k * k
    m = moments.permute(0, 2, 3, 1).reshape(-1, 12)[flat]                                      # N, 12
    if leave_one_out:
        m = m - terms
    s1, sx, sy, sxx, sxy, syy, su, sv, sxu, syu, sxv, syv = m.unbind(-1)
    # centre on the neighbourhood mean, so the normal equations stay well conditioned in pixel units
    s = s1.clamp_min(1e-9)
    mx, my, mu, mv = sx / s, sy / s, su / s, sv / s
    cxx, cxy, cyy = sxx / s - mx * mx, sxy / s - mx * my, syy / s - my * my
    cxu, cyu, cxv, cyv = sxu / s - mx * mu, syu / s - my * mu, sxv / s - mx * mv, syv / s - my * mv
    cov = torch.stack([torch.stack([cxx, cxy], -1), torch.stack([cxy, cyy], -1)], -2)        # N, 2, 2
    cross = torch.stack([torch.stack([cxu, cxv], -1), torch.stack([cyu, cyv], -1)], -2)      # N, 2(x,y), 2(u,v)
    det = cxx * cyy - cxy * cxy
    enough = (s1 >= min_points - 1e-9) & (det > 1e-6 * (cxx + cyy).clamp_min(1e-12) ** 2)
    eye2 = torch.eye(2, dtype=cov.dtype, device=cov.device)
    cov = torch.where(enough[:, None, None], cov, eye2)
    lin = torch.linalg.solve(cov, cross).transpose(1, 2)                                     # N, 2, 2: u,v ← x,y
    trans = torch.stack([mu, mv], -1) - (lin @ torch.stack([mx, my], -1)[..., None])[..., 0]
    A = torch.cat([lin, trans[..., None]], -1)
    sval = svdvals2x2(lin)
    ok = enough & torch.isfinite(A).all((-1, -2)) & (sval[:, 0] <= 4) & (sval[:, 1] >= 0.25)
    return LocalAffine(A.to(kp0.dtype), s1.to(kp0.dtype), ok)


def local_affine(b: torch.Tensor, kp0: torch.Tensor, kp1: torch.Tensor, batch: int, grid: tuple[int, int],
                 cell: int = 8, reach: int = 2, min_points: int = 8) -> torch.Tensor:
    """The linear part ``(N, 2, 2)`` of each match's local affine map (:func:`fit_local_affine`, the match
    included); identity where the fit is undetermined or implausible."""
    fit = fit_local_affine(b, kp0, kp1, batch, grid, cell, reach, min_points)
    eye = torch.eye(2, dtype=kp0.dtype, device=kp0.device).expand(kp0.shape[0], 2, 2)
    return torch.where(fit.ok[:, None, None], fit.A[..., :2], eye)


def neighbourhood_residual(b: torch.Tensor, kp0: torch.Tensor, kp1: torch.Tensor, batch: int,
                           grid: tuple[int, int], cell: int = 8, reach: tuple[int, ...] = (1, 2, 4),
                           min_points: int = 6, passes: int = 2, inlier: float = 2.0) -> torch.Tensor:
    """Distance ``(N,)`` (image-1 px) of each match from the affine map fitted to its neighbours without it
    (:func:`fit_local_affine`, ``leave_one_out``), within the first of the ``reach`` radii (in cells) that
    holds ``min_points`` neighbours; NaN where none does. With ``passes`` > 1 each next fit leaves out
    matches whose residual exceeded ``inlier`` px, so outliers do not drag it."""
    nan = kp0.new_full((kp0.shape[0],), float("nan"))
    res = nan
    weight = None
    for _ in range(max(1, passes)):
        res = nan
        for r in reach:  # the smallest neighbourhood that can judge a match does
            fit = fit_local_affine(b, kp0, kp1, batch, grid, cell, r, min_points, leave_one_out=True,
                                   weight=weight)
            pred = (fit.A[..., :2] @ kp0[..., None])[..., 0] + fit.A[..., 2]
            res = torch.where(res.isnan() & fit.ok, (pred - kp1).norm(dim=-1), res)
        weight = (~(res > inlier)).to(kp0.dtype)  # NaN (undetermined) stays in
    return res
