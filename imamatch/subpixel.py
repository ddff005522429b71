"""Photometric sub-pixel polish at the input resolution (after the learned fine stages).

The learned fine stages work on 1/2-resolution features and land within about a pixel; this step moves each
match in image 1 by Gauss–Newton on the zero-mean, unit-variance (ZNCC) difference between a small patch
around the keypoint in image 0 and the patch around the match in image 1 (translation only, as in
Lucas–Kanade), directly on the input pixels. A match keeps the learned position where the patch has no
texture to lock on to, where the polish would move it farther than ``max_shift`` or where it does not raise
the patch correlation. Positions are input pixels with pixel ``k`` centred at ``k``. Differentiable.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .fine import sample_windows


@dataclass
class Polished:
    """``keypoints1`` ``(N, 2)`` after the polish; ``ncc`` ``(N,)`` patch correlation there (in [-1, 1]);
    ``moved`` ``(N,)`` bool, True where the polish was accepted."""

    keypoints1: torch.Tensor
    ncc: torch.Tensor
    moved: torch.Tensor


def _normalise(p: torch.Tensor, eps: float = 1e-4) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero-mean, unit-variance rows of ``p`` ``(N, S)``; also returns the standard deviations ``(N, 1)``."""
    centred = p - p.mean(dim=1, keepdim=True)  # (3× faster than torch.var_mean on short rows)
    sd = centred.square().mean(dim=1, keepdim=True).sqrt() + eps
    return centred / sd, sd


def image_gradients(image: torch.Tensor) -> torch.Tensor:
    """Central-difference gradients of ``(B, 1, H, W)`` → ``(B, 2, H, W)`` (d/dx, d/dy)."""
    gx = F.pad(image[..., :, 2:] - image[..., :, :-2], (1, 1, 0, 0)) * 0.5
    gy = F.pad(image[..., 2:, :] - image[..., :-2, :], (0, 0, 1, 1)) * 0.5
    return torch.cat([gx, gy], dim=1)


def _sample_points(fmap: torch.Tensor, b: torch.Tensor, pts: torch.Tensor) -> torch.Tensor:
    """Bilinear samples of ``fmap`` ``(B, C, H, W)`` at ``pts`` ``(N, K, 2)`` (px, zeros outside) → ``(N, K, C)``."""
    h, w = fmap.shape[-2:]
    grid = torch.stack([2 * pts[..., 0] / max(w - 1, 1) - 1, 2 * pts[..., 1] / max(h - 1, 1) - 1], -1)
    if fmap.shape[0] == 1:
        return F.grid_sample(fmap, grid[None], mode="bilinear", padding_mode="zeros",
                             align_corners=True)[0].permute(1, 2, 0)
    out = fmap.new_zeros(pts.shape[0], pts.shape[1], fmap.shape[1])
    for bi in range(fmap.shape[0]):
        sel = (b == bi).nonzero(as_tuple=True)[0]
        if len(sel):
            s = F.grid_sample(fmap[bi:bi + 1], grid[sel][None], mode="bilinear", padding_mode="zeros",
                              align_corners=True)                                                  # 1, C, n, K
            out = out.index_put((sel,), s[0].permute(1, 2, 0))
    return out


def solve_2x2(a: torch.Tensor, damp: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
    """``(a + damp·I)⁻¹ rhs`` for ``a`` ``(N, 2, 2)``, ``damp`` ``(N,)``, ``rhs`` ``(N, 2)``, by Cramer's rule
    (``torch.linalg.solve`` on many 2×2 systems costs a batched LU)."""
    a00, a01 = a[:, 0, 0] + damp, a[:, 0, 1]
    a10, a11 = a[:, 1, 0], a[:, 1, 1] + damp
    det = a00 * a11 - a01 * a10
    return torch.stack([a11 * rhs[:, 0] - a01 * rhs[:, 1], a00 * rhs[:, 1] - a10 * rhs[:, 0]], -1) / det[:, None]


def polish_matches(image0: torch.Tensor, image1: torch.Tensor, b: torch.Tensor, kp0: torch.Tensor,
                   kp1: torch.Tensor, radius: int = 3, iters: int = 4, max_shift: float = 3.0,
                   min_std: float = 0.01, affine: torch.Tensor | None = None, settled: float = 0.0) -> Polished:
    """Polish matches ``kp0`` ↔ ``kp1`` ``(N, 2)`` (input px) of batch items ``b`` ``(N,)`` in images
    ``(B, 1, H, W)`` in [0, 1], with ``(2·radius+1)²`` patches and ``iters`` Gauss–Newton steps (each at most
    1 px). Patches of image 0 whose intensity standard deviation is below ``min_std`` are left alone.
    ``affine`` ``(N, 2, 2)`` (e.g. :func:`local_affine`) warps the patch of image 1 by the local distortion.
    A match whose last step moved it by at most ``settled`` px (each coordinate) takes no further steps (0: only
    those that did not move at all, which would not move again: the same result as running them all)."""
    size = 2 * radius + 1
    n = kp0.shape[0]
    if n == 0:
        return Polished(kp1, kp1.new_zeros(0), torch.zeros(0, dtype=torch.bool, device=kp1.device))
    p0, sd0 = _normalise(sample_windows(image0, b, kp0, size)[..., 0])        # N, S²
    stack1 = torch.cat([image1, image_gradients(image1)], dim=1)               # B, 3, H, W

    offsets = None
    if affine is not None:
        r = torch.arange(-radius, radius + 1, dtype=kp1.dtype, device=kp1.device)
        gy, gx = torch.meshgrid(r, r, indexing="ij")
        offsets = torch.einsum("nij,sj->nsi", affine, torch.stack([gx.flatten(), gy.flatten()], -1))

    def correlate(pos: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Patches of image 1 at ``pos`` ``(M, 2)`` for the matches ``idx`` ``(M,)``: normalised, their
        gradients and the correlation with image 0's."""
        if offsets is None:
            win = sample_windows(stack1, b[idx], pos, size)                    # M, S², 3
        else:
            win = _sample_points(stack1, b[idx], pos[:, None, :] + offsets[idx])
        p1, sd = _normalise(win[..., 0])
        grad = win[..., 1:] / sd[..., None]
        grad = grad - grad.mean(dim=1, keepdim=True)                           # d p1 / d pos, M, S², 2
        return p1, grad, (p1 * p0[idx]).mean(dim=1)

    start = kp1
    pos = kp1
    idx = torch.arange(n, device=kp1.device)                                   # the matches still moving
    p1, grad, ncc0 = correlate(pos, idx)
    ncc = ncc0
    for _ in range(iters):
        if len(idx) == 0:
            break
        res = p1 - p0[idx]                                                     # M, S²
        hess = grad.transpose(1, 2) @ grad / size**2                           # M, 2, 2
        rhs = (grad.transpose(1, 2) @ res[..., None])[..., 0] / size**2        # M, 2
        damp = 1e-3 * hess.diagonal(dim1=1, dim2=2).sum(-1).clamp_min(1e-6)
        step = (-solve_2x2(hess, damp, rhs)).clamp(-1.0, 1.0)
        stepped = pos[idx] + step
        pos = pos.index_copy(0, idx, stepped)
        p1, grad, now = correlate(stepped, idx)
        ncc = ncc.index_copy(0, idx, now)
        going = step.abs().amax(-1) > settled
        idx, p1, grad = idx[going], p1[going], grad[going]
    ok = (ncc > ncc0) & ((pos - start).norm(dim=-1) <= max_shift) & (sd0[:, 0] > min_std)
    ok = ok & torch.isfinite(pos).all(-1)
    out = torch.where(ok[:, None], pos, start)
    return Polished(out, torch.where(ok, ncc, ncc0), ok)
