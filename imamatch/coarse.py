"""Coarse matching at 1/8: dual-softmax, mutual nearest neighbours, confidence threshold."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class CoarseMatches:
    """Selected coarse matches. ``b``, ``i0``, ``i1``: ``(M,)`` batch index and flat cell indices in
    image 0 / image 1; ``confidence``: ``(M,)``."""

    b: torch.Tensor
    i0: torch.Tensor
    i1: torch.Tensor
    confidence: torch.Tensor


def dual_softmax(f0: torch.Tensor, f1: torch.Tensor, temperature: float,
                 m0: torch.Tensor | None = None, m1: torch.Tensor | None = None) -> torch.Tensor:
    """Dual-softmax assignment. ``f0``: ``(B, L0, C)``, ``f1``: ``(B, L1, C)``; masks ``(B, L_i)`` bool.

    Similarity is ``f0·f1 / (C · temperature)``; padded cells get zero probability. Returns ``(B, L0, L1)``.
    """
    scale = 1.0 / (f0.shape[-1] * temperature)
    if torch.is_grad_enabled() and (f0.requires_grad or f1.requires_grad):
        sim = torch.einsum("blc,bsc->bls", f0, f1) * scale
        valid = None
        if m0 is not None and m1 is not None:
            valid = m0[:, :, None] & m1[:, None, :]
            sim = sim.masked_fill(~valid, -1e9)
        conf = torch.softmax(sim, dim=1) * torch.softmax(sim, dim=2)
        return conf if valid is None else conf * valid
    # inference, in place on one (B, L0, L1) buffer: padded rows/columns filled, then one exp pass shared by
    # both softmaxes (rows whose best score is ~87 below the global best underflow to zero probability,
    # which no threshold would keep anyway)
    sim = torch.einsum("blc,bsc->bls", f0 * scale, f1)
    if m0 is not None and m1 is not None:
        for bi in range(sim.shape[0]):
            sim[bi].index_fill_(0, (~m0[bi]).nonzero()[:, 0], -1e9).index_fill_(1, (~m1[bi]).nonzero()[:, 0], -1e9)
    e = sim.sub_(sim.amax(dim=(1, 2), keepdim=True)).exp_()
    rows, cols = e.sum(dim=2, keepdim=True).clamp_min_(1e-30), e.sum(dim=1, keepdim=True).clamp_min_(1e-30)
    return e.mul_(e).div_(rows).div_(cols)


def select_matches(conf: torch.Tensor, threshold: float, border: int = 0,
                   grid0: tuple[int, int] | None = None, grid1: tuple[int, int] | None = None) -> CoarseMatches:
    """Mutual nearest neighbours of ``conf`` ``(B, L0, L1)`` whose confidence exceeds ``threshold``.

    ``border`` > 0 drops cells within that many cells of the grid edge (needs ``grid0``/``grid1`` = (h, w)).
    """
    bsz, l0, l1 = conf.shape
    best, best1 = conf.max(dim=2)                   # (B, L0) best cell of image 1 for each cell of image 0
    col_best = conf.amax(dim=1)                     # (B, L1); a column max reduces along rows, vectorised
    mask = best >= torch.gather(col_best, 1, best1)  # mutual: also the best of its column
    mask &= best > threshold
    if border > 0 and grid0 is not None and grid1 is not None:
        mask &= _border_mask(grid0, border, conf.device)[None]
        mask &= torch.gather(_border_mask(grid1, border, conf.device).expand(bsz, -1), 1, best1)
    b, i0 = mask.nonzero(as_tuple=True)
    i1 = best1[b, i0]
    return CoarseMatches(b, i0, i1, conf[b, i0, i1])


def _border_mask(grid: tuple[int, int], border: int, device: torch.device) -> torch.Tensor:
    h, w = grid
    m = torch.zeros(h, w, dtype=torch.bool, device=device)
    m[border:h - border, border:w - border] = True
    return m.flatten()
