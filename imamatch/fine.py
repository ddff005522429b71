"""Fine matching at 1/2 resolution: window attention, regression + classification heads, consistency check,
then a 3×3 refinement stage. All positions are in half-res pixels (half-pixel ``j`` centred at ``j``)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn



def sample_windows(fmap: torch.Tensor, b: torch.Tensor, centres: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinearly sample ``size×size`` windows (unit spacing) around ``centres`` ``(N, 2)`` from
    ``fmap`` ``(B, C, H, W)`` of batch items ``b`` ``(N,)``. Returns ``(N, size², C)`` (zeros outside)."""
    n = centres.shape[0]
    h, w = fmap.shape[-2:]
    r = (size - 1) / 2
    t = torch.linspace(-r, r, size, device=fmap.device, dtype=fmap.dtype)
    gy, gx = torch.meshgrid(t, t, indexing="ij")
    pts = centres[:, None, :] + torch.stack([gx.flatten(), gy.flatten()], -1)[None]  # N, S², 2
    norm = torch.stack([2 * pts[..., 0] / max(w - 1, 1) - 1, 2 * pts[..., 1] / max(h - 1, 1) - 1], -1)
    if n == 0:
        return fmap.new_zeros(0, size * size, fmap.shape[1])
    out = []
    for bi in range(fmap.shape[0]):  # one grid_sample per batch item
        sel = (b == bi).nonzero(as_tuple=True)[0]
        if len(sel) == 0:
            continue
        s = F.grid_sample(fmap[bi:bi + 1], norm[sel][None], mode="bilinear", padding_mode="zeros",
                          align_corners=True)  # 1, C, n_sel, S²
        out.append((sel, s[0].permute(1, 2, 0)))
    res = fmap.new_zeros(n, size * size, fmap.shape[1])
    for sel, s in out:
        res[sel] = s
    return res


class FineStage(nn.Module):
    """One fine stage on a ``size×size`` reference window around ``ref1`` (half-res px).

    The query feature (projected) attends over the window: the attention weights are the **classification**
    heatmap (softmax over the ``size²`` positions) and the attended feature feeds the **regression** head,
    a bounded offset ``bound · tanh(MLP[q, r_centre, attended, logits])`` from the window centre. Token mixing
    within the image happens before, on the whole fine map (see ``TopDown``), so a match costs
    O(size² · C) here instead of a per-window transformer.
    """

    def __init__(self, dim: int, size: int, bound: float) -> None:
        super().__init__()
        self.size, self.bound = size, bound
        self.query = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, dim))
        self.key = nn.Linear(dim, dim, bias=False)
        self.regress = nn.Sequential(nn.Linear(3 * dim + size * size, 2 * dim), nn.GELU(),
                                     nn.Linear(2 * dim, dim), nn.GELU(), nn.Linear(dim, 2))

    def forward(self, f0: torch.Tensor, f1: torch.Tensor, b: torch.Tensor, query0: torch.Tensor,
                ref1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns offset ``(N, 2)`` (half-res px, relative to ``ref1``) and heatmap ``(N, size²)``."""
        q = sample_windows(f0, b, query0, 1)[:, 0]       # N, C
        w1 = sample_windows(f1, b, ref1, self.size)      # N, S², C
        qp = self.query(q)
        logits = torch.einsum("nc,nsc->ns", qp, self.key(w1)) / q.shape[-1] ** 0.5
        heat = torch.softmax(logits, dim=-1)
        attended = torch.einsum("ns,nsc->nc", heat, w1)
        centre = w1[:, self.size * self.size // 2]
        offset = self.bound * torch.tanh(self.regress(torch.cat([q, centre, attended, logits], -1)))
        return offset, heat


def window_offsets(size: int, device: torch.device | None = None) -> torch.Tensor:
    """Offsets (x, y) of the ``size²`` window positions, row-major: ``(size², 2)``."""
    r = (size - 1) / 2
    t = torch.linspace(-r, r, size, device=device)
    gy, gx = torch.meshgrid(t, t, indexing="ij")
    return torch.stack([gx.flatten(), gy.flatten()], -1)


def heat_at(heat: torch.Tensor, size: int, offset: torch.Tensor) -> torch.Tensor:
    """Bilinear value of heatmaps ``(N, size²)`` at offsets ``(N, 2)`` from the window centre: ``(N,)``."""
    n = heat.shape[0]
    if n == 0:
        return heat.new_zeros(0)
    r = (size - 1) / 2
    grid = (offset / max(r, 1e-6)).view(n, 1, 1, 2)  # each heatmap sampled at its own point
    vals = F.grid_sample(heat.view(n, 1, size, size), grid, mode="bilinear", align_corners=True)
    return vals.view(n)


@dataclass
class FineResult:
    """``match1`` ``(N, 2)`` half-res position in image 1 after all stages; ``stage1`` ``(N, 2)``;
    ``heat`` ``(N, S²)``; ``consistent`` ``(N,)`` bool; ``peak_prob`` ``(N,)``; ``offset2`` list of the
    refinement offsets (for training)."""

    match1: torch.Tensor
    stage1: torch.Tensor
    offset1: torch.Tensor
    heat: torch.Tensor
    consistent: torch.Tensor
    peak_prob: torch.Tensor
    offsets2: list[torch.Tensor]
    refs2: list[torch.Tensor]


class FineMatcher(nn.Module):
    """Stage 1 (window ``size``, regression + classification, consistency check) and refinement stages."""

    def __init__(self, dim: int, size: int, bound: float, refine_size: int, refine_bound: float,
                 refine_iters: int, radius: float, min_prob: float) -> None:
        super().__init__()
        self.stage1 = FineStage(dim, size, bound)
        self.stage2 = FineStage(dim, refine_size, refine_bound)
        self.size, self.refine_iters = size, refine_iters
        self.radius, self.min_prob = radius, min_prob

    def consistency(self, offset: torch.Tensor, heat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Agreement of regression and classification: the regressed offset lies within ``radius`` of the
        heatmap peak and the heatmap probability at the regressed point is ≥ ``min_prob``."""
        grid = window_offsets(self.size, heat.device)
        peak = grid[heat.argmax(dim=-1)]
        near = (offset - peak).norm(dim=-1) <= self.radius
        prob = heat_at(heat, self.size, offset)
        return near & (prob >= self.min_prob), heat.max(dim=-1).values

    def forward(self, f0: torch.Tensor, f1: torch.Tensor, b: torch.Tensor, query0: torch.Tensor,
                ref1: torch.Tensor) -> FineResult:
        off1, heat = self.stage1(f0, f1, b, query0, ref1)
        consistent, peak_prob = self.consistency(off1.detach(), heat.detach())
        pos = ref1 + off1
        stage1 = pos
        offsets2, refs2 = [], []
        for _ in range(self.refine_iters):
            ref = pos.detach()
            off2, _ = self.stage2(f0, f1, b, query0, ref)
            offsets2.append(off2)
            refs2.append(ref)
            pos = ref + off2
        return FineResult(pos, stage1, off1, heat, consistent, peak_prob, offsets2, refs2)
