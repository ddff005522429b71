"""Local affine models of the match field, and the neighbourhood-agreement filter built on them.

Neighbouring matches on one surface move together: within a few cells, ``kp1 ≈ A·kp0 + t``. Each match gets the
least-squares affine map of the matches around it (a box filter over per-cell moments, so the cost is linear in
the number of matches). The sub-pixel polish warps its patches by the linear part; the filter drops matches that
disagree with the map fitted to their neighbours *without them* (leave-one-out) — wrong matches at depth
discontinuities, on repeated or blank texture, which the learned confidence does not catch. A match with too few
neighbours to judge gets no residual (NaN); the matcher keeps it (``neighbour_keep_isolated``, the default) or
drops it as unconfirmed.
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
    if kp0.shape[0] == 0:
        return LocalAffine(kp0.new_zeros(0, 2, 3), kp0.new_zeros(0), torch.zeros(0, dtype=torch.bool))
    cm = _CellMoments(b, kp0, kp1, batch, grid, cell, weight)
    fit = _fit(cm.around(reach, leave_one_out), min_points)
    return LocalAffine(fit.A.to(kp0.dtype), fit.support.to(kp0.dtype), fit.ok)


class _CellMoments:
    """The sums a least-squares affine fit needs (1, x, y, x², xy, y², u, v, xu, yu, xv, yv: ``terms`` ``(N, 12)``,
    float64, optionally weighted) of the matches, summed per image-0 cell (``map`` ``(B, 12, h, w)``)."""

    def __init__(self, b: torch.Tensor, kp0: torch.Tensor, kp1: torch.Tensor, batch: int, grid: tuple[int, int],
                 cell: int, weight: torch.Tensor | None) -> None:
        h, w = grid
        cx = (kp0[:, 0] / cell).floor().long().clamp(0, w - 1)
        cy = (kp0[:, 1] / cell).floor().long().clamp(0, h - 1)
        self.flat = (b.long() * h + cy) * w + cx
        x, y = kp0[:, 0].double(), kp0[:, 1].double()
        u, v = kp1[:, 0].double(), kp1[:, 1].double()
        terms = torch.stack([torch.ones_like(x), x, y, x * x, x * y, y * y, u, v, x * u, y * u, x * v, y * v], -1)
        self.terms = terms if weight is None else terms * weight.double()[:, None]
        moments = terms.new_zeros(batch * h * w, 12).index_add_(0, self.flat, self.terms)
        self.map = moments.view(batch, h, w, 12).permute(0, 3, 1, 2)

    def around(self, reach: int, leave_one_out: bool) -> torch.Tensor:
        """``(N, 12)``: each match's sums over the cells within ``reach`` of its own (without it: ``leave_one_out``)."""
        k = 2 * reach + 1
        pooled = F.avg_pool2d(self.map, k, stride=1, padding=reach, count_include_pad=True) * k * k
        m = pooled.permute(0, 2, 3, 1).reshape(-1, 12)[self.flat]
        return m - self.terms if leave_one_out else m


def _fit(m: torch.Tensor, min_points: int) -> LocalAffine:
    """The affine maps ``(M, 2, 3)`` (float64) from the sums ``m`` ``(M, 12)`` of :class:`_CellMoments`: the normal
    equations centred on the neighbourhood mean (well conditioned in pixel units), solved in closed form."""
    s1, sx, sy, sxx, sxy, syy, su, sv, sxu, syu, sxv, syv = m.unbind(-1)
    s = s1.clamp_min(1e-9)
    mx, my, mu, mv = sx / s, sy / s, su / s, sv / s
    cxx, cxy, cyy = sxx / s - mx * mx, sxy / s - mx * my, syy / s - my * my
    cxu, cyu, cxv, cyv = sxu / s - mx * mu, syu / s - my * mu, sxv / s - mx * mv, syv / s - my * mv
    det = cxx * cyy - cxy * cxy
    enough = (s1 >= min_points - 1e-9) & (det > 1e-6 * (cxx + cyy).clamp_min(1e-12) ** 2)
    inv = torch.where(enough, 1 / det, torch.zeros_like(det))
    # [[a, b], [c, d]] maps (x, y) to (u, v): the 2×2 covariance inverse applied to the cross-covariances
    a, b = (cyy * cxu - cxy * cyu) * inv, (cxx * cyu - cxy * cxu) * inv
    c, d = (cyy * cxv - cxy * cyv) * inv, (cxx * cyv - cxy * cxv) * inv
    lin = torch.stack([torch.stack([a, b], -1), torch.stack([c, d], -1)], -2)               # M, 2, 2
    trans = torch.stack([mu - a * mx - b * my, mv - c * mx - d * my], -1)
    A = torch.cat([lin, trans[..., None]], -1)
    sval = svdvals2x2(lin)
    ok = enough & torch.isfinite(A).all((-1, -2)) & (sval[:, 0] <= 4) & (sval[:, 1] >= 0.25)
    return LocalAffine(A, s1, ok)


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
    n = kp0.shape[0]
    res = kp0.new_full((n,), float("nan"))
    if n == 0:
        return res
    weight = None
    for _ in range(max(1, passes)):
        cm = _CellMoments(b, kp0, kp1, batch, grid, cell, weight)
        # all radii in one batch of fits; the smallest neighbourhood that can judge a match does
        fit = _fit(torch.cat([cm.around(r, leave_one_out=True) for r in reach]), min_points)
        A = fit.A.to(kp0.dtype).view(len(reach), n, 2, 3)
        pred = (A[..., :2] @ kp0[..., None])[..., 0] + A[..., 2]                                # R, N, 2
        dist = (pred - kp1).norm(dim=-1).masked_fill(~fit.ok.view(len(reach), n), float("nan"))
        res = dist[0]
        for later in dist[1:]:
            res = torch.where(res.isnan(), later, res)
        weight = (~(res > inlier)).to(kp0.dtype)  # NaN (undetermined) stays in
    return res
