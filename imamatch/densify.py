"""Increased matching amount: several fine queries per coarse match in key regions.

Coordinates here are in the 1/2-resolution frame, where half-pixel ``j`` has its centre at ``j``. A 1/8
cell ``c`` covers half-pixels ``4c … 4c+3`` (centre ``4c + 1.5``). A match selected for densification
is replaced by ``n×n`` query points evenly spread over its cell in image 0; all share the match's cell
in image 1 as reference and its confidence.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .coarse import CoarseMatches


@dataclass
class FineQueries:
    """``b`` ``(N,)``; ``query0``/``ref1`` ``(N, 2)`` half-res (x, y); ``parent`` ``(N,)`` index of the
    coarse match; ``densified`` ``(N,)`` bool."""

    b: torch.Tensor
    query0: torch.Tensor
    ref1: torch.Tensor
    parent: torch.Tensor
    densified: torch.Tensor


def cell_centres(idx: torch.Tensor, grid_w: int) -> torch.Tensor:
    """Flat 1/8 cell indices ``(M,)`` → cell centres in half-res pixels ``(M, 2)``."""
    x = (idx % grid_w).to(torch.float32)
    y = torch.div(idx, grid_w, rounding_mode="floor").to(torch.float32)
    return torch.stack([x, y], dim=-1) * 4.0 + 1.5


def sub_offsets(n: int, device: torch.device | None = None) -> torch.Tensor:
    """``n×n`` offsets (x, y) from a cell centre, evenly spread over the 4×4 half-pixel cell: ``(n², 2)``."""
    t = (torch.arange(n, dtype=torch.float32, device=device) + 0.5) * (4.0 / n) - 2.0
    gy, gx = torch.meshgrid(t, t, indexing="ij")
    return torch.stack([gx.flatten(), gy.flatten()], dim=-1)


GOLDEN = (math.sqrt(5) - 1) / 2


def densify_mask(confidence: torch.Tensor, mode: str, band: tuple[float, float], n_points: int = 4,
                 max_queries: int | None = None, cells: torch.Tensor | None = None) -> torch.Tensor:
    """Which coarse matches ``(M,)`` to densify: ``mode`` = "none", "all" or "band" (``band[0] <= c < band[1]``).

    ``max_queries``: when expanding the selected ones into ``n_points`` queries each would give more fine
    queries than this, only as many as keep the total within it are expanded (none when the coarse matches
    alone exceed it): those whose cell index in image 0 (``cells`` ``(M,)``; default their order) has the
    smallest ``frac(index · golden ratio)``. That spreads them evenly over the grid, and a match more or less
    changes at most one other's choice."""
    if mode == "none":
        return torch.zeros_like(confidence, dtype=torch.bool)
    if mode == "all":
        dense = torch.ones_like(confidence, dtype=torch.bool)
    elif mode == "band":
        dense = (confidence >= band[0]) & (confidence < band[1])
    else:
        raise ValueError(f"unknown densify mode {mode!r}; expected 'none', 'all' or 'band'")
    if max_queries is None or n_points <= 1:
        return dense
    selected = dense.nonzero()[:, 0]
    room = max(0, (max_queries - len(confidence)) // (n_points - 1))  # expansions the budget allows
    if len(selected) <= room:
        return dense
    index = torch.arange(len(confidence), device=confidence.device) if cells is None else cells
    key = torch.frac(index[selected].double() * GOLDEN)
    chosen = selected[torch.argsort(key, stable=True)[:room]]
    return torch.zeros_like(dense).index_fill_(0, chosen, True)


def make_queries(matches: CoarseMatches, grid_w0: int, grid_w1: int, dense: torch.Tensor,
                 n_points: int) -> FineQueries:
    """Expand coarse matches into fine queries; ``dense`` ``(M,)`` bool selects the expanded ones."""
    n = int(round(math.sqrt(n_points)))
    if n * n != n_points or n < 1:
        raise ValueError(f"densify_points must be a square (1, 4, 9, 16), got {n_points}")
    c0 = cell_centres(matches.i0, grid_w0)
    c1 = cell_centres(matches.i1, grid_w1)
    idx = torch.arange(len(c0), device=c0.device)
    single = ~dense
    offs = sub_offsets(n, c0.device)
    d_idx = idx[dense]
    q_dense = (c0[dense][:, None, :] + offs[None]).reshape(-1, 2)
    d_parent = d_idx.repeat_interleave(n * n)
    parent = torch.cat([idx[single], d_parent])
    query0 = torch.cat([c0[single], q_dense])
    flags = torch.cat([torch.zeros(int(single.sum()), dtype=torch.bool, device=c0.device),
                       torch.ones(len(d_parent), dtype=torch.bool, device=c0.device)])
    order = torch.argsort(parent, stable=True)
    parent, query0, flags = parent[order], query0[order], flags[order]
    return FineQueries(matches.b[parent], query0, c1[parent], parent, flags)
