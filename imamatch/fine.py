"""Fine matching at 1/2 resolution: window attention, regression + classification heads, consistency check,
then a 3×3 refinement stage. All positions are in half-res pixels (half-pixel ``j`` centred at ``j``)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class WindowSource:
    """A map ``(B, C, H, W)`` laid out channels-last as ``flat`` ``(B·H·W, C)`` so that many window reads
    (:func:`sample_windows`) share it: a view of a channels-last map, else one copy. Build with :meth:`of`."""

    flat: torch.Tensor
    batch: int
    height: int
    width: int

    @classmethod
    def of(cls, fmap: torch.Tensor) -> "WindowSource":
        bsz, c, h, w = fmap.shape
        return cls(fmap.permute(0, 2, 3, 1).reshape(-1, c), bsz, h, w)


def gather_patches(fmap: torch.Tensor | WindowSource, b: torch.Tensor, centres: torch.Tensor,
                   size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The integer ``(size+1)²`` patches under ``size×size`` windows (unit spacing) around ``centres``
    ``(N, 2)`` in ``fmap`` ``(B, C, H, W)`` (or its :class:`WindowSource`) of batch items ``b`` ``(N,)``, and
    the bilinear weights shared by all their positions. Returns patches ``(N, size+1, size+1, C)`` (zeros
    outside the map, like ``grid_sample`` with zero padding) and fractions ``(N, 2)`` (x, y): window position
    ``(i, j)`` is the bilinear blend of patch entries ``(i..i+1, j..j+1)`` (:func:`blend_patches`).

    Gathers contiguous channel vectors from the channels-last map (several times faster than ``grid_sample``
    on CPU); only the patches that cross the border are masked.
    """
    src = fmap if isinstance(fmap, WindowSource) else WindowSource.of(fmap)
    n, c = centres.shape[0], src.flat.shape[1]
    if n == 0:
        return centres.new_zeros(0, size + 1, size + 1, c), centres.new_zeros(0, 2)
    h, w = src.height, src.width
    corner = centres - (size - 1) / 2                                   # first window position, (x, y)
    base = torch.floor(corner)
    frac = corner - base
    t = torch.arange(size + 1, device=centres.device)
    far = 2 * (h + w + size)  # beyond any map position; keeps the integer conversion in range
    px = base[:, 0].clamp(-far, far).long()[:, None] + t                 # N, size+1
    py = base[:, 1].clamp(-far, far).long()[:, None] + t
    idx = (b.long() * (h * w))[:, None, None] + py.clamp(0, h - 1)[:, :, None] * w + px.clamp(0, w - 1)[:, None, :]
    patch = src.flat.index_select(0, idx.reshape(-1)).view(n, size + 1, size + 1, c).to(centres.dtype)
    in_x, in_y = (px >= 0) & (px < w), (py >= 0) & (py < h)
    crossing = (~(in_x.all(1) & in_y.all(1))).nonzero()[:, 0]
    if len(crossing):  # zero the positions outside the map (read clamped above)
        inside = (in_y[crossing, :, None] & in_x[crossing, None, :]).to(patch.dtype)[..., None]
        patch[crossing] = patch[crossing] * inside
    return patch, frac


def blend_patches(patch: torch.Tensor, frac: torch.Tensor) -> torch.Tensor:
    """Patches ``(N, S+1, S+1, C)`` and fractions ``(N, 2)`` of :func:`gather_patches` → the bilinearly
    sampled windows ``(N, S², C)``."""
    n, s1, _, c = patch.shape
    size = s1 - 1
    rows = patch.reshape(n, s1, s1 * c)
    # blend along x (two contiguous runs of each row), then along y
    across = torch.lerp(rows[:, :, :size * c], rows[:, :, c:], frac[:, 0, None, None])    # N, S+1, S·C
    return torch.lerp(across[:, :-1], across[:, 1:], frac[:, 1, None, None]).reshape(n, size * size, c)


def sample_windows(fmap: torch.Tensor | WindowSource, b: torch.Tensor, centres: torch.Tensor,
                   size: int) -> torch.Tensor:
    """Bilinearly sample ``size×size`` windows (unit spacing) around ``centres`` ``(N, 2)`` from
    ``fmap`` ``(B, C, H, W)`` (or its :class:`WindowSource`) of batch items ``b`` ``(N,)``.
    Returns ``(N, size², C)`` (zeros outside the map, like ``grid_sample`` with zero padding).

    A window at unit spacing is one integer ``(size+1)²`` patch blended with the same four bilinear
    weights everywhere (:func:`gather_patches`, :func:`blend_patches`).
    """
    return blend_patches(*gather_patches(fmap, b, centres, size))


def _spread_grid(x: torch.Tensor, frac: torch.Tensor) -> torch.Tensor:
    """The transpose of bilinear window sampling (:func:`blend_patches`): weights on the window positions
    ``(M, K, S, S)`` → the patch grid ``(M, K, S+1, S+1)``, each split over its four bilinear corners;
    ``frac`` ``(M, 2)``."""
    fx, fy = frac[:, 0, None, None, None], frac[:, 1, None, None, None]
    x = F.pad(x * (1 - fx), (0, 1)) + F.pad(x * fx, (1, 0))
    return F.pad(x * (1 - fy), (0, 0, 0, 1)) + F.pad(x * fy, (0, 0, 1, 0))


class FineStage(nn.Module):
    """One fine stage on a ``size×size`` reference window around ``ref1`` (half-res px).

    The query feature (projected) attends over the window: the attention weights are the **classification**
    heatmap (softmax over the ``size²`` positions) and the attended feature feeds the **regression** head,
    a bounded offset ``bound · tanh(MLP[q, r_centre, attended, logits])`` from the window centre. Token mixing
    within the image happens before, on the whole fine map (see ``TopDown``), so a match costs
    O(size² · C) here instead of a per-window transformer.
    """

    def __init__(self, dim: int, size: int, bound: float, hidden: int | None = None) -> None:
        super().__init__()
        self.size, self.bound = size, bound
        h = dim if hidden is None else hidden  # the heads' width (the features' ``dim`` by default)
        self.query = nn.Sequential(nn.Linear(dim, h), nn.GELU(), nn.Linear(h, h))
        self.key = nn.Linear(dim, h, bias=False)
        self.regress = nn.Sequential(nn.Linear(3 * dim + size * size, 2 * h), nn.GELU(),
                                     nn.Linear(2 * h, h), nn.GELU(), nn.Linear(h, 2))

    def project(self, q: torch.Tensor) -> torch.Tensor:
        """Query features ``(N, C)`` → their projection against the window's raw features, ``(N, C)``:
        query · key(w) = (query @ W_key) · w, so the query is projected instead of every window position."""
        return self.query(q) @ self.key.weight / q.shape[1] ** 0.5

    def forward(self, q: torch.Tensor, f1: torch.Tensor | WindowSource, b: torch.Tensor, ref1: torch.Tensor,
                group: torch.Tensor | None = None,
                qk: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Query features ``q`` ``(N, C)`` (image 0's fine map at the query points), image 1's fine map
        ``(B, C, H/2, W/2)`` (or its window source). Returns offset ``(N, 2)`` (half-res px, relative to
        ``ref1``) and heatmap ``(N, size²)``.

        ``group`` ``(N,)`` (sorted, optional): queries with equal ids share one reference window (same
        ``b`` and ``ref1``, as the sub-points of a densified match do), which is then read once. ``qk``:
        :meth:`project` of ``q`` if already computed (repeated refinement stages).

        The window is never formed: bilinear sampling is linear, so the logits are computed on the integer
        patch under it and blended, and the attended feature is the patch weighted by the heatmap spread back
        onto it (:func:`_spread_grid`); the same values as on :func:`sample_windows`' window up to rounding.
        """
        n, s = q.shape[0], self.size
        if group is None or n == 0:
            gidx, rank = torch.arange(n, device=q.device), torch.zeros(n, dtype=torch.long, device=q.device)
            starts, width = gidx, 1
        else:
            _, counts = torch.unique_consecutive(group, return_counts=True)
            starts = torch.cumsum(counts, 0) - counts
            gidx = torch.repeat_interleave(torch.arange(len(counts), device=q.device), counts)
            rank = torch.arange(n, device=q.device) - starts[gidx]
            width = int(counts.max())
        patch, frac = gather_patches(f1, b[starts], ref1[starts], s)            # M, S+1, S+1, C
        m, dim = patch.shape[0], q.shape[1]
        flat = patch.view(m, (s + 1) ** 2, dim)
        qk = self.project(q) if qk is None else qk                                # N, C
        slots = q.new_zeros(m, width, dim).index_put((gidx, rank), qk)
        grid = torch.bmm(flat, slots.transpose(1, 2)).view(m, s + 1, s + 1, width)  # (entries, C) as blend_patches
        logits = blend_patches(grid, frac).transpose(1, 2)[gidx, rank]            # N, S²
        heat = torch.softmax(logits, dim=-1)
        weights = heat.new_zeros(m, width, s * s).index_put((gidx, rank), heat).view(m, width, s, s)
        attended = torch.bmm(_spread_grid(weights, frac).reshape(m, width, (s + 1) ** 2), flat)[gidx, rank]
        c = (s - 1) // 2
        centre = blend_patches(patch[:, c:c + 2, c:c + 2], frac)[gidx, 0]        # N, C
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
                 refine_iters: int, radius: float, min_prob: float, hidden: int | None = None) -> None:
        super().__init__()
        self.stage1 = FineStage(dim, size, bound, hidden)
        self.stage2 = FineStage(dim, refine_size, refine_bound, hidden)
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
                ref1: torch.Tensor, group: torch.Tensor | None = None, chunk: int | None = None,
                refine_consistent_only: bool = False) -> FineResult:
        """Fine features ``(B, C, H/2, W/2)``, queries ``(N, 2)`` in image 0 and reference centres ``(N, 2)`` in
        image 1 (half-res px); ``group``: see :meth:`FineStage.forward`. ``chunk``: match the queries of at most
        that many windows at a time (:func:`chunk_bounds`; same result, bounded memory). ``refine_consistent_only``:
        the refinement stages skip the queries that fail the consistency check (inference, when those are dropped:
        their ``match1`` is then the stage-1 position and their refinement offsets zero)."""
        s0, s1 = WindowSource.of(f0), WindowSource.of(f1)  # shared by all stages and chunks
        parts = [self._match(s0, s1, b[lo:hi], query0[lo:hi], ref1[lo:hi], None if group is None else group[lo:hi],
                             refine_consistent_only)
                 for lo, hi in chunk_bounds(len(b), group, chunk)]
        if len(parts) == 1:
            return parts[0]
        cat = lambda xs: torch.cat(list(xs))  # noqa: E731
        return FineResult(cat(p.match1 for p in parts), cat(p.stage1 for p in parts), cat(p.offset1 for p in parts),
                          cat(p.heat for p in parts), cat(p.consistent for p in parts),
                          cat(p.peak_prob for p in parts),
                          [cat(xs) for xs in zip(*(p.offsets2 for p in parts))],
                          [cat(xs) for xs in zip(*(p.refs2 for p in parts))])

    def _match(self, s0: WindowSource, s1: WindowSource, b: torch.Tensor, query0: torch.Tensor, ref1: torch.Tensor,
               group: torch.Tensor | None, consistent_only: bool = False) -> FineResult:
        q = sample_windows(s0, b, query0, 1)[:, 0]  # query features, shared by all stages
        off1, heat = self.stage1(q, s1, b, ref1, group)
        consistent, peak_prob = self.consistency(off1.detach(), heat.detach())
        stage1 = ref1 + off1
        sel = consistent.nonzero()[:, 0] if consistent_only else None
        bq, q0, pos = (b, q, stage1) if sel is None else (b[sel], q[sel], stage1[sel])
        offsets2, refs2 = [], []
        qk = self.stage2.project(q0) if self.refine_iters > 0 else None  # the same for every refinement
        for _ in range(self.refine_iters):
            ref = pos.detach()
            off2, _ = self.stage2(q0, s1, bq, ref, qk=qk)
            offsets2.append(off2)
            refs2.append(ref)
            pos = ref + off2
        if sel is not None:  # back to all queries: the skipped ones keep their stage-1 position, zero offsets
            pos = stage1.index_copy(0, sel, pos)
            offsets2 = [stage1.new_zeros(stage1.shape).index_copy_(0, sel, o) for o in offsets2]
            refs2 = [stage1.detach().index_copy(0, sel, r) for r in refs2]
        return FineResult(pos, stage1, off1, heat, consistent, peak_prob, offsets2, refs2)


def chunk_bounds(n: int, group: torch.Tensor | None, chunk: int | None) -> list[tuple[int, int]]:
    """``[lo, hi)`` ranges covering ``range(n)``, each with at most ``chunk`` windows: runs of equal ``group`` ids
    (sorted ``(n,)``; one window per run, as :meth:`FineStage.forward` reads them), or single items without
    ``group``; never splitting a run. One range when ``chunk`` is None or the windows fit in one."""
    if group is None:
        starts = torch.arange(n)
    else:
        later = (torch.nonzero(group[1:] != group[:-1])[:, 0] + 1).cpu()  # first index of each later run
        starts = torch.cat([torch.zeros(1, dtype=later.dtype), later])
    if chunk is None or len(starts) <= chunk:
        return [(0, n)]
    edges = [0, *starts[chunk::chunk].tolist(), n]
    return [(lo, hi) for lo, hi in zip(edges[:-1], edges[1:]) if hi > lo]
