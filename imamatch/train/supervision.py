"""Ground truth for training from a point transfer function (a homography here; depth + pose plugs in the same
way): coarse cell correspondences with a loop-back check, and fine targets for arbitrary query points."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

# maps input-pixel points (N, 2) of batch items b (N,) from one image of a pair to the other: returns the
# points (N, 2) and a validity mask (N,) (e.g. valid depth, in front of the camera)
Transfer = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def homography_transfer(H: torch.Tensor) -> Transfer:
    """Transfer by homographies ``H`` ``(B, 3, 3)`` (``x1 ∝ H x0``, input pixels)."""

    def f(pts: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        ph = torch.cat([pts, torch.ones_like(pts[:, :1])], -1).to(H.dtype)
        p = torch.einsum("nij,nj->ni", H[b], ph)
        z = p[:, 2:]
        ok = z[:, 0] > 1e-8
        return (p[:, :2] / z.clamp_min(1e-8)).to(pts.dtype), ok

    return f


def inverse_homography_transfer(H: torch.Tensor) -> Transfer:
    return homography_transfer(torch.linalg.inv(H))


def cell_grid(h: int, w: int, device: torch.device | None = None) -> torch.Tensor:
    """Centres of the 1/8 cells of an ``h×w`` grid in input pixels, row-major ``(h·w, 2)``."""
    ys, xs = torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device), indexing="ij")
    return torch.stack([xs.flatten(), ys.flatten()], -1).float() * 8 + 3.5


def point_to_cell(pts: torch.Tensor, grid: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Input-pixel points ``(..., 2)`` → flat cell index and inside-grid mask."""
    h, w = grid
    c = torch.floor((pts + 0.5) / 8).long()
    inside = (c[..., 0] >= 0) & (c[..., 0] < w) & (c[..., 1] >= 0) & (c[..., 1] < h)
    return c[..., 1].clamp(0, h - 1) * w + c[..., 0].clamp(0, w - 1), inside


@dataclass
class CoarseTruth:
    """Positive cell pairs ``b``, ``i0``, ``i1`` ``(P,)``."""

    b: torch.Tensor
    i0: torch.Tensor
    i1: torch.Tensor


def coarse_truth(forward: Transfer, backward: Transfer, batch: int, grid0: tuple[int, int],
                 grid1: tuple[int, int], device: torch.device | None = None) -> CoarseTruth:
    """Cell ``i0`` ↔ ``i1`` is positive when the centre of ``i0`` lands in ``i1`` and the centre of ``i1``
    lands back in ``i0`` (mutual loop-back)."""
    def transfer_grid(f: Transfer, src: tuple[int, int], dst: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        c = cell_grid(*src, device=device)
        b = torch.arange(batch, device=device).repeat_interleave(len(c))
        p, ok = f(c.repeat(batch, 1), b)
        j, inside = point_to_cell(p, dst)
        return j.view(batch, -1), (ok & inside).view(batch, -1)

    j01, valid0 = transfer_grid(forward, grid0, grid1)
    j10, valid1 = transfer_grid(backward, grid1, grid0)
    idx0 = torch.arange(j01.shape[1], device=device).expand(batch, -1)
    # loop-back: the cell i0 maps to must map back to i0
    pos = valid0 & torch.gather(valid1, 1, j01) & (torch.gather(j10, 1, j01) == idx0)
    b, i0 = pos.nonzero(as_tuple=True)
    return CoarseTruth(b, i0, j01[b, i0])


def _sample_depth(depth: torch.Tensor, b: torch.Tensor, pts: torch.Tensor,
                  max_spread: float = 0.05) -> tuple[torch.Tensor, torch.Tensor]:
    """Depth ``(B, H, W)`` at ``pts`` ``(N, 2)``: bilinear where the four neighbouring pixels are all known and
    agree (relative spread below ``max_spread``, i.e. no depth edge between them), else the nearest pixel; 0
    outside. Returns (values, inside)."""
    h, w = depth.shape[-2:]
    ix, iy = torch.round(pts[:, 0]).long(), torch.round(pts[:, 1]).long()
    inside = (ix >= 0) & (ix < w) & (iy >= 0) & (iy < h)
    nearest = depth[b, iy.clamp(0, h - 1), ix.clamp(0, w - 1)]
    x0, y0 = torch.floor(pts[:, 0]).long(), torch.floor(pts[:, 1]).long()
    fx, fy = (pts[:, 0] - x0).to(depth.dtype), (pts[:, 1] - y0).to(depth.dtype)
    xs, ys = (x0.clamp(0, w - 1), (x0 + 1).clamp(0, w - 1)), (y0.clamp(0, h - 1), (y0 + 1).clamp(0, h - 1))
    c = torch.stack([depth[b, ys[j], xs[i]] for j in (0, 1) for i in (0, 1)], -1)  # N, 4: tl, tr, bl, br
    lo, hi = c.amin(-1), c.amax(-1)
    smooth = (lo > 0) & ((hi - lo) < max_spread * lo.clamp_min(1e-12))
    top, bottom = torch.lerp(c[:, 0], c[:, 1], fx), torch.lerp(c[:, 2], c[:, 3], fx)
    d = torch.where(smooth, torch.lerp(top, bottom, fy), nearest)
    return torch.where(inside, d, torch.zeros_like(d)), inside


def depth_transfer(depth0: torch.Tensor, depth1: torch.Tensor, K0: torch.Tensor, K1: torch.Tensor,
                   T_0to1: torch.Tensor, max_rel_depth_error: float = 0.2) -> Transfer:
    """Transfer with depth and pose (LoFTR-style): back-project with ``depth0`` ``(B, H, W)`` (0 = unknown) and
    ``K0``, move by ``T_0to1`` ``(B, 4, 4)`` (``x1 = R x0 + t``), project with ``K1``; valid where the depth is
    known, the point is in front of camera 1, inside image 1, and consistent with ``depth1`` (relative error
    below ``max_rel_depth_error``, which rejects occluded points)."""

    def f(pts: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        d0, _ = _sample_depth(depth0, b, pts)
        ph = torch.cat([pts, torch.ones_like(pts[:, :1])], -1).to(K0.dtype)
        X = torch.einsum("nij,nj->ni", torch.linalg.inv(K0)[b], ph) * d0[:, None].to(K0.dtype)
        X1 = torch.einsum("nij,nj->ni", T_0to1[b, :3, :3].to(K0.dtype), X) + T_0to1[b, :3, 3].to(K0.dtype)
        z1 = X1[:, 2]
        p = torch.einsum("nij,nj->ni", K1[b].to(K0.dtype), X1)
        p1 = (p[:, :2] / p[:, 2:].clamp_min(1e-8)).to(pts.dtype)
        d1, inside = _sample_depth(depth1, b, p1)
        consistent = (d1 > 0) & ((z1 - d1).abs() / d1.clamp_min(1e-8) < max_rel_depth_error)
        return p1, (d0 > 0) & (z1 > 1e-8) & inside & consistent

    return f
