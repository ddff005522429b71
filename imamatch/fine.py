"""Fine matching at 1/2 resolution: window attention, regression + classification heads, consistency check,
then a 3×3 refinement stage. All positions are in half-res pixels (half-pixel ``j`` centred at ``j``)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn



def sample_windows(fmap: torch.Tensor, b: torch.Tensor, centres: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinearly sample ``size×size`` windows (unit spacing) around ``centres`` ``(N, 2)`` from
    ``fmap`` ``(B, C, H, W)`` of batch items ``b`` ``(N,)``. Returns ``(N, size², C)`` (zeros outside).

    A window at unit spacing is one integer ``(size+1)²`` patch blended with the same four bilinear
    weights everywhere, so this gathers contiguous channel vectors from a channels-last copy of the map
    (several times faster than ``grid_sample`` on CPU). Windows reaching more than ``size+1`` pixels
    beyond the map read it clamped to that zero border.
    """
    n = centres.shape[0]
    bsz, c, h, w = fmap.shape
    if n == 0:
        return fmap.new_zeros(0, size * size, c)
    pad = size + 1
    hp, wp = h + 2 * pad, w + 2 * pad
    flat = F.pad(fmap, (pad, pad, pad, pad)).permute(0, 2, 3, 1).reshape(bsz * hp * wp, c)
    corner = centres - (size - 1) / 2                                   # first window position, (x, y)
    base = torch.floor(corner)
    frac = (corner - base).to(fmap.dtype)
    ix = (base[:, 0].long() + pad).clamp(0, wp - size - 1)
    iy = (base[:, 1].long() + pad).clamp(0, hp - size - 1)
    t = torch.arange(size + 1, device=fmap.device)
    idx = (b.long() * (hp * wp) + iy * wp + ix)[:, None, None] + t[None, :, None] * wp + t[None, None, :]
    rows = flat[idx.reshape(-1)].view(n, size + 1, (size + 1) * c)          # patch rows, channels-last
    # blend along x (two contiguous runs of each row), then along y
    across = torch.lerp(rows[:, :, :size * c], rows[:, :, c:], frac[:, 0, None, None])    # N, size+1, size·C
    return torch.lerp(across[:, :-1], across[:, 1:], frac[:, 1, None, None]).reshape(n, size * size, c)


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
                ref1: torch.Tensor, group: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns offset ``(N, 2)`` (half-res px, relative to ``ref1``) and heatmap ``(N, size²)``.

        ``group`` ``(N,)`` (sorted, optional): queries with equal ids share one reference window (same
        ``b`` and ``ref1``, as the sub-points of a densified match do), which is then sampled once.
        """
        n, dim = query0.shape[0], f0.shape[1]
        q = sample_windows(f0, b, query0, 1)[:, 0]                               # N, C
        if group is None or n == 0:
            gidx, rank = torch.arange(n, device=q.device), torch.zeros(n, dtype=torch.long, device=q.device)
            starts, width = gidx, 1
        else:
            _, counts = torch.unique_consecutive(group, return_counts=True)
            starts = torch.cumsum(counts, 0) - counts
            gidx = torch.repeat_interleave(torch.arange(len(counts), device=q.device), counts)
            rank = torch.arange(n, device=q.device) - starts[gidx]
            width = int(counts.max())
        w1 = sample_windows(f1, b[starts], ref1[starts], self.size)              # M, S², C
        m = w1.shape[0]
        # query · key(w) = (query @ W_key) · w: project the query instead of every window position
        qk = self.query(q) @ self.key.weight / dim ** 0.5                         # N, C
        slots = q.new_zeros(m, width, dim).index_put((gidx, rank), qk)
        logits = torch.bmm(slots, w1.transpose(1, 2))[gidx, rank]                # N, S²
        heat = torch.softmax(logits, dim=-1)
        weights = heat.new_zeros(m, width, heat.shape[1]).index_put((gidx, rank), heat)
        attended = torch.bmm(weights, w1)[gidx, rank]                            # N, C
        centre = w1[gidx, self.size * self.size // 2]
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
                ref1: torch.Tensor, group: torch.Tensor | None = None) -> FineResult:
        """Fine features ``(B, C, H/2, W/2)``, queries ``(N, 2)`` in image 0 and reference centres ``(N, 2)`` in
        image 1 (half-res px); ``group``: see :meth:`FineStage.forward`."""
        off1, heat = self.stage1(f0, f1, b, query0, ref1, group)
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
