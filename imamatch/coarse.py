"""Coarse matching at 1/8: dual-softmax, mutual nearest neighbours, confidence threshold."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
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
    best, best1 = conf.max(dim=2)                   # (B, L0) best cell of image 1 for each cell of image 0
    col_best = conf.amax(dim=1)                     # (B, L1); a column max reduces along rows, vectorised
    mask = best >= torch.gather(col_best, 1, best1)  # mutual: also the best of its column
    mask &= best > threshold
    b, i0 = mask.nonzero(as_tuple=True)
    i1 = best1[b, i0]
    matches = CoarseMatches(b, i0, i1, conf[b, i0, i1])
    if border > 0 and grid0 is not None and grid1 is not None:
        matches = drop_border(matches, border, grid0, grid1)
    return matches


def _border_mask(grid: tuple[int, int], border: int, device: torch.device) -> torch.Tensor:
    h, w = grid
    m = torch.zeros(h, w, dtype=torch.bool, device=device)
    m[border:h - border, border:w - border] = True
    return m.flatten()


def drop_border(matches: CoarseMatches, border: int, grid0: tuple[int, int],
                grid1: tuple[int, int]) -> CoarseMatches:
    """Matches whose cells are at least ``border`` cells from both grids' edges (``border`` 0: all)."""
    if border <= 0:
        return matches
    keep = (_border_mask(grid0, border, matches.i0.device)[matches.i0]
            & _border_mask(grid1, border, matches.i1.device)[matches.i1])
    return CoarseMatches(matches.b[keep], matches.i0[keep], matches.i1[keep], matches.confidence[keep])


CANDIDATE_GROUP = 16  # columns screened together for coarse-match candidates
LOG2E, LN2 = 1 / math.log(2), math.log(2)


def mutual_matches(f0: torch.Tensor, f1: torch.Tensor, temperature: float, threshold: float,
                   m0: torch.Tensor | None = None, m1: torch.Tensor | None = None,
                   block: int = 256, integer: bool = False, bits: int = 8) -> CoarseMatches:
    """Inference: ``select_matches(dual_softmax(f0, f1, temperature, m0, m1), threshold)`` without the
    ``(B, L0, L1)`` probability matrix in memory.

    In the log domain, ``log conf = 2 s - logsumexp_row - logsumexp_col``. One pass over row blocks of the
    similarity (each small enough to stay in cache) accumulates both log-sum-exps and keeps, per row, the
    candidates whose row softmax exceeds ``threshold`` (fewer than 1/``threshold``): a match needs ``conf`` =
    row softmax · column softmax > ``threshold``, so its row's best and its column's best are among them.
    Memory stays O(block · L1); with ``threshold`` ≤ 0 a second pass recomputes the blocks instead. Padded
    cells are dropped first. Same result as the two-step path up to floating-point rounding (ties resolved by
    either). ``integer``: the similarity from int8 matrix products (:class:`IntegerSimilarity`, CPU; float32
    where it does not suit the features) of ``bits`` 8 (one product: logits within ~1 % of their size,
    confidences within ~0.05, ~1.6× faster than float32) or 16 (two products: within ~3e-5, ~1.1× faster).
    """
    if bits not in IntegerSimilarity.BITS:
        raise ValueError(f"bits must be one of {IntegerSimilarity.BITS}, got {bits}")
    scale = 1.0 / (f0.shape[-1] * temperature)
    out_b, out_i0, out_i1, out_c = [], [], [], []
    for bi in range(f0.shape[0]):
        rows = torch.arange(f0.shape[1], device=f0.device) if m0 is None else m0[bi].nonzero()[:, 0]
        cols = torch.arange(f1.shape[1], device=f1.device) if m1 is None else m1[bi].nonzero()[:, 0]
        if len(rows) == 0 or len(cols) == 0:
            continue
        i, j, log_conf = _log_conf_candidates(f0[bi, rows] * scale, f1[bi, cols], threshold, block,
                                              bits if integer else None)
        row_best = log_conf.new_full((len(rows),), float("-inf")).scatter_reduce_(0, i, log_conf, "amax")
        col_best = log_conf.new_full((len(cols),), float("-inf")).scatter_reduce_(0, j, log_conf, "amax")
        conf = log_conf.exp()
        keep = (log_conf == row_best[i]) & (log_conf >= col_best[j]) & (conf > threshold)
        i, j, conf = i[keep], j[keep], conf[keep]
        first = torch.ones_like(i, dtype=torch.bool)  # a row tied between two columns: keep the first
        first[1:] = i[1:] != i[:-1]
        i, j, conf = i[first], j[first], conf[first]
        out_b.append(torch.full((len(i),), bi, dtype=torch.long, device=f0.device))
        out_i0.append(rows[i])
        out_i1.append(cols[j])
        out_c.append(conf)
    if not out_b:
        empty = torch.zeros(0, dtype=torch.long, device=f0.device)
        return CoarseMatches(empty, empty, empty, f0.new_zeros(0))
    return CoarseMatches(torch.cat(out_b), torch.cat(out_i0), torch.cat(out_i1), torch.cat(out_c))


class IntegerSimilarity:
    """Blocks of ``a @ b.T`` (``a`` ``(n0, C)``, ``b`` ``(n1, C)`` float) from int8 matrix products with int32
    output, which this CPU computes several times faster than float32 ones.

    Each row is scaled to ±127. ``bits`` 8: rounded to int8, one product; the rounding costs ~0.3 % of
    ``|a_i| |b_j|`` per channel. ``bits`` 16: split into a high and a low int8 part, ``x ≈ s (h + l / 256)``,
    and ``a·b ≈ s_a s_b (h_a·h_b + (h_a·l_b + l_a·h_b) / 256)`` from two products (the second over the
    concatenated channels); what is dropped, ``l_a·l_b / 256²`` and the rounding of ``l``, is ~1.5e-5 of
    ``|a_i| |b_j|`` per channel: the logits are within ~3e-5 of their magnitude."""

    MAX_CHANNELS = 512  # C · 127² · 258 stays below 2³¹: the int32 sums cannot overflow
    BITS = (8, 16)

    @classmethod
    def suits(cls, a: torch.Tensor, b: torch.Tensor) -> bool:
        """Whether these features can take the integer path: on the CPU, int8 products available on this build,
        at most :attr:`MAX_CHANNELS` channels, all values finite."""
        return (a.device.type == "cpu" and a.shape[1] <= cls.MAX_CHANNELS and integer_products_available()
                and bool(torch.isfinite(a.sum() + b.sum())))  # NaN or ±inf anywhere: not finite

    def __init__(self, a: torch.Tensor, b: torch.Tensor, bits: int = 16) -> None:
        if a.shape[1] > self.MAX_CHANNELS:
            raise ValueError(f"at most {self.MAX_CHANNELS} channels (int32 sums), got {a.shape[1]}")
        if bits not in self.BITS:
            raise ValueError(f"bits must be one of {self.BITS}, got {bits}")
        self.bits = bits
        if bits == 8:
            self.ha, self.sa = _quantise8(a)
            hb, self.sb = _quantise8(b)
            self.hb_t = hb.T                   # (C, n1) view of row-major (n1, C): the fast layout
            return
        self.ha, la, self.sa = _split16(a)
        hb, lb, sb = _split16(b)
        self.sb = sb / 256
        self.cross_a = torch.cat([self.ha, la], 1)
        self.hb_t = hb.T
        self.cross_b_t = torch.cat([lb, hb], 1).T

    def block(self, s: int, e: int) -> torch.Tensor:
        """Rows ``s:e`` of the similarity, ``(e - s, n1)`` float32."""
        hh = torch._int_mm(self.ha[s:e], self.hb_t)
        if self.bits == 8:
            out = hh.float()
        else:
            out = torch._int_mm(self.cross_a[s:e], self.cross_b_t).add_(hh, alpha=256).float()
        return out.mul_(self.sa[s:e, None]).mul_(self.sb[None])


@functools.cache
def integer_products_available() -> bool:
    """Whether this PyTorch build multiplies int8 matrices on the CPU (``torch._int_mm``); else the float32
    similarity is used."""
    try:
        a = torch.ones(32, 32, dtype=torch.int8)
        return bool((torch._int_mm(a, a.T) == 32).all())
    except (RuntimeError, NotImplementedError, AttributeError):
        return False


def _row_scales(x: torch.Tensor) -> torch.Tensor:
    """``(n, C)`` → ``(n, 1)``: each row's largest magnitude maps to 127."""
    return x.abs().amax(1, keepdim=True).clamp_min(1e-30) / 127


def _quantise8(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(n, C)`` float → int8 ``(n, C)`` and row scales ``(n,)``, ``x ≈ s q``."""
    s = _row_scales(x)
    return (x / s).round_().clamp_(-127, 127).to(torch.int8), s[:, 0]


def _split16(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(n, C)`` float → high and low int8 parts ``(n, C)`` and row scales ``(n,)``, ``x ≈ s (h + l / 256)``."""
    s = _row_scales(x)
    y = x / s
    hi = y.round()
    lo = y.sub_(hi).mul_(256).round_().clamp_(-127, 127)
    return hi.to(torch.int8), lo.to(torch.int8), s[:, 0]


# with a fixed exp2 reference, rows whose sum of exp2 falls below this are too far under it to trust
UNDERFLOW_GUARD = 2.0 ** -100
EXP2_HEADROOM = 120.0  # log2 of the largest row sum of exp2 taken without an offset (float32 overflows at 128)


def _log_conf_candidates(a: torch.Tensor, b: torch.Tensor, threshold: float, block: int,
                         bits: int | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Scaled features ``a`` ``(n0, C)``, ``b`` ``(n1, C)`` → row and column indices ``(K,)`` (sorted by row,
    then column) of the similarity entries that can be coarse matches, and their log dual-softmax
    confidence ``(K,)``: those whose row softmax exceeds ``threshold``, or (``threshold`` ≤ 0) the rows' bests
    that are also their columns' bests. ``bits``: blocks from :class:`IntegerSimilarity` (None: float32).

    Works in base 2 (scores × log2 e, ``exp2`` and ``log2``): this CPU's ``exp2`` is several times faster than its
    ``exp``, and the one pass of it over the similarity is the costliest step after the product. With one int8
    product the block loop is cheap enough that a running maximum costs a fifth of it, so the exp2 reference is
    instead fixed from the start: none (the scores exponentiated as they are) while the Cauchy–Schwarz bound
    ``max |a_i| · max |b_j|`` on every score leaves a row's sum within float32, else that bound (a pass with
    the running maximum again if some row lies so far under it that its sum could underflow)."""
    a = a * LOG2E
    n0, n1 = len(a), len(b)
    group = CANDIDATE_GROUP
    n1p = -(-n1 // group) * group  # columns padded to whole groups (their scores set to -inf)
    if n1p != n1:
        b = torch.cat([b, b.new_zeros(n1p - n1, b.shape[1])])
    reference = None
    if bits is not None and IntegerSimilarity.suits(a, b):
        sim = IntegerSimilarity(a, b, bits)
        rows_of = sim.block
        if bits == 8:
            bound = float(a.norm(dim=1).max() * b.norm(dim=1).max())  # at or above every score
            # no offset at all while a row's sum of exp2 cannot overflow float32 (< 2^128): one pass fewer
            reference = 0.0 if bound + math.log2(n1p) < EXP2_HEADROOM else bound
    else:
        def rows_of(s: int, e: int) -> torch.Tensor:
            return torch.mm(a[s:e], b.T)
    lse = _blocked_log_sum_exps(rows_of, n0, n1, threshold, block, reference)
    if lse is None:
        lse = _blocked_log_sum_exps(rows_of, n0, n1, threshold, block, None)
    row_lse, col_lse, cand = lse
    if threshold > 0:
        i, j, score = cand
        return i, j, (2 * score - row_lse[i] - col_lse[j]) * LN2
    # no threshold: every row's best (by confidence) and each column's best score, from recomputed blocks
    best_val, best_idx = a.new_empty(n0), torch.empty(n0, dtype=torch.long, device=a.device)
    col_best = torch.full((n1,), float("-inf"), dtype=a.dtype, device=a.device)
    for s in range(0, n0, block):
        score = rows_of(s, s + block)[:, :n1].mul_(2).sub_(row_lse[s:s + block, None]).sub_(col_lse[None])
        torch.max(score, dim=1, out=(best_val[s:s + block], best_idx[s:s + block]))
        torch.maximum(col_best, score.amax(0), out=col_best)
    mutual = best_val >= col_best[best_idx]
    return torch.arange(n0, device=a.device)[mutual], best_idx[mutual], best_val[mutual] * LN2


def _blocked_log_sum_exps(rows_of: Callable[[int, int], torch.Tensor], n0: int, n1: int, threshold: float,
                          block: int, reference: float | None
                          ) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, ...]] | None:
    """One pass over row blocks ``rows_of(s, e)`` ``(e - s, n1p)`` (base-2 scores, columns padded to whole
    candidate groups) → row and column log2-sum-exp2s ``(n0,)``, ``(n1,)`` and (``threshold`` > 0) the candidates'
    rows, columns and scores ``(K,)`` sorted by row then column. ``reference``: a fixed exp2 reference that
    keeps every row's sum of ``exp2(score - reference)`` finite (0: none; None: the running maximum); None is
    returned where a row's sum falls under :data:`UNDERFLOW_GUARD` of it."""
    row_lse, col_sum = None, None
    top = torch.tensor(float("-inf") if reference is None else reference)
    cand_i, cand_j, cand_s = [], [], []
    for s in range(0, n0, block):
        blk = rows_of(s, s + block)
        if col_sum is None:
            row_lse, col_sum = blk.new_empty(n0), blk.new_zeros(blk.shape[1])
            top = top.to(blk)
        blk[:, n1:] = float("-inf")
        if reference is None:
            new_top = torch.maximum(top, blk.amax())
            e = (blk - new_top).exp2_()
            col_sum.mul_((top - new_top).exp2())
            top = new_top
        else:
            e = (blk if reference == 0 else blk.sub_(top)).exp2_()  # in place: a score is log2(e) + top again
        col_sum.add_(e.sum(0))
        row_sum = e.sum(1)
        if reference is not None and bool((row_sum < UNDERFLOW_GUARD).any()):
            return None
        row_lse[s:s + block] = row_sum.log2() + top
        if threshold > 0:
            # entries above threshold · row sum: first groups of columns (strided, so that the max over a group
            # vectorises) by their maximum, since nonzero over a bool matrix is a slow serial scan, then inside them
            bound = threshold * row_sum[:, None]
            grouped = e.view(len(e), CANDIDATE_GROUP, -1)
            r, g = (grouped.amax(1) > bound).nonzero(as_tuple=True)
            k, o = (grouped[r, :, g] > bound[r]).nonzero(as_tuple=True)
            r, c = r[k], o * grouped.shape[2] + g[k]
            cand_i.append(r + s)
            cand_j.append(c)
            cand_s.append(blk[r, c] if reference is None else e[r, c].log2_().add_(top))
    col_lse = col_sum[:n1].log2_() + top
    if threshold <= 0:
        return row_lse, col_lse, ()
    i, j = torch.cat(cand_i), torch.cat(cand_j)
    order = torch.argsort(i * n1 + j)
    return row_lse, col_lse, (i[order], j[order], torch.cat(cand_s)[order])
