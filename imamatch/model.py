"""The IMAMatch network: backbone → attention → coarse matching → densification → fine matching.

Works on prepared tensors (grayscale, sides divisible by :attr:`IMAMatchNet.size_multiple`).
:mod:`imamatch.api` turns user images into those and maps keypoints back.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from .attention import CoarseTransformer
from .backbone import BackboneOutput, make_backbone
from .coarse import CoarseMatches, drop_border, dual_softmax, mutual_matches, select_matches
from .config import MatcherConfig
from .densify import FineQueries, cell_centres, densify_mask, make_queries
from .fine import FineMatcher, FineResult
from .layout import GELU
from .neighbourhood import local_affine, neighbourhood_residual
from .runtime import native_bf16
from .subpixel import polish_matches
from .strips import paste_rows, strip_ranges


ISOLATED_MIN_CONFIRMED = 30  # matches too isolated to judge are kept only beside this many confirmed ones
FINE_CHUNK = 1024  # windows (coarse matches) fine-matched at a time at inference: only theirs are in memory


@dataclass
class Attended:
    """Backbone + attention output of a pair: ``coarse0/1`` ``(B, C, h_i, w_i)`` attended 1/8 maps, the
    backbone skips by stride, whether both images ran as one batch (training), and image 0's first
    self-attention output (which another pass with the same image 0 can reuse)."""

    coarse0: torch.Tensor
    coarse1: torch.Tensor
    skips0: dict[int, torch.Tensor]
    skips1: dict[int, torch.Tensor]
    joint: bool
    self0: torch.Tensor | None = None  # image 0's first self-attention output (inference), reusable


@dataclass
class Encoded:
    """Features of a pair. ``coarse0/1``: ``(B, L_i, C)`` after attention (and the matching projection);
    ``fine0/1``: ``(B, Cf, H/2, W/2)`` (None before :meth:`IMAMatchNet.fine_maps`);
    ``conf``: ``(B, L0, L1)`` dual-softmax (None when not asked for); ``grid0/1``: (h, w) of the 1/8 grids;
    masks ``(B, L_i)`` or None."""

    coarse0: torch.Tensor
    coarse1: torch.Tensor
    fine0: torch.Tensor | None
    fine1: torch.Tensor | None
    conf: torch.Tensor | None
    grid0: tuple[int, int]
    grid1: tuple[int, int]
    mask0: torch.Tensor | None
    mask1: torch.Tensor | None


class DWBlock(nn.Module):
    """Residual depthwise-separable 3×3 block (cheap spatial mixing at 1/2 resolution)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(dim, dim, 3, padding=1, groups=dim), nn.Conv2d(dim, dim, 1), GELU(),
                                  nn.Conv2d(dim, dim, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x).add_(x)  # in place on the conv output (not needed by autograd): no new 1/2-res buffer


class TopDown(nn.Module):
    """FPN-like path from the attended 1/8 map back to 1/2: upsample, add lateral skips (at 1/2 also a small
    stem on the raw pixels, space-to-depth 2×2, for pixel-level detail), then depthwise-separable blocks."""

    store_dtype: torch.dtype = torch.float32  # of the strip-wise (inference) output
    strip_rows: int = MatcherConfig.strip_rows  # rows per strip at inference

    def __init__(self, coarse_dim: int, skip_dims: dict[int, int], out_dim: int, n_blocks: int = 2,
                 pixel_stem: bool = True, smooth: bool = True) -> None:
        super().__init__()
        self.strides = sorted(skip_dims, reverse=True)
        self.top = nn.Conv2d(coarse_dim, out_dim, 1)
        self.pixel_stem = nn.Sequential(nn.Conv2d(4, 32, 3, padding=1), GELU(), nn.Conv2d(32, 32, 3, padding=1),
                                        GELU()) if pixel_stem else None
        extra = {s: (32 if s == 2 and pixel_stem else 0) for s in skip_dims}
        self.lateral = nn.ModuleDict({str(s): nn.Conv2d(c + extra[s], out_dim, 1) for s, c in skip_dims.items()})
        # each level's merge smoothed by a depthwise-separable block (``smooth`` False: none, a linear merge)
        self.smooth = nn.ModuleDict({str(s): DWBlock(out_dim) if smooth else nn.Identity() for s in skip_dims})
        self.blocks = nn.Sequential(*[DWBlock(out_dim) for _ in range(n_blocks)])

    def forward(self, coarse: torch.Tensor, skips: dict[int, torch.Tensor], image: torch.Tensor,
                strip: int | None = None, cells: torch.Tensor | None = None) -> torch.Tensor:
        """``coarse`` ``(B, C, H/8, W/8)``, ``skips`` by stride, ``image`` ``(B, 1, H, W)`` → ``(B, Cf, H/2, W/2)``.
        Without autograd the finest level is computed in horizontal strips of ``strip`` rows (default
        :attr:`strip_rows`), each read with the halo its 3×3 convs need (same result; its full-size intermediates
        never exist whole).
        ``cells`` ``(B, H/8, W/8)`` bool (inference): only the 1/8 cells marked in some batch item are needed; each
        strip is then computed over the columns of its marked cells only (with the halo), the rest left zero."""
        strip = strip or self.strip_rows
        x = self.top(coarse)
        *outer, last = self.strides
        for s in outer:
            x = self.smooth[str(s)](self._merge(s, x, skips[s], image, 0, skips[s].shape[-2]))
        skip = skips[last]
        h, w = skip.shape[-2:]
        if torch.is_grad_enabled() or (h <= strip and cells is None):
            return self.blocks(self.smooth[str(last)](self._merge(last, x, skip, image, 0, h)))
        stem = last == 2 and self.pixel_stem is not None
        smoothing = int(isinstance(self.smooth[str(last)], DWBlock))
        halo = (2 if stem else 0) + smoothing + len(self.blocks)  # the 3×3 convs of the pixel stem, smoothing, blocks
        out = None
        if cells is not None:
            cell = h // cells.shape[-2]  # half-res pixels per 1/8 cell
            if w % x.shape[-1] or h % x.shape[-2] or cell * cells.shape[-2] != h:
                cells = None  # (column windows need whole upsampling factors)
            else:
                used = cells.any(0)
                out = zeros((skip.shape[0], h, w, x.shape[1]), self.store_dtype,
                            skip.device).permute(0, 3, 1, 2)  # channels-last
        for lo, hi, r0, r1 in strip_ranges(h, strip, halo):
            c0, c1 = 0, w
            if cells is not None:
                cols = used[r0 // cell:-(-r1 // cell)].any(0).nonzero()[:, 0]
                if len(cols) == 0:
                    continue
                c0, c1 = int(cols[0]) * cell, (int(cols[-1]) + 1) * cell
            left, right = max(0, c0 - halo), min(w, c1 + halo)
            y = self.blocks(self.smooth[str(last)](self._merge(last, x, skip, image, lo, hi, left, right)))
            part = y[:, :, r0 - lo:r1 - lo, c0 - left:c1 - left]
            if cells is None:
                out = paste_rows(out, part, r0, h, dtype=self.store_dtype)
            else:
                out[:, :, r0:r1, c0:c1] = part
        return out

    def _merge(self, s: int, x: torch.Tensor, skip: torch.Tensor, image: torch.Tensor, lo: int,
               hi: int, left: int = 0, right: int | None = None) -> torch.Tensor:
        """Rows ``lo:hi`` and columns ``left:right`` (default all) of level ``s``: ``x`` upsampled to the skip's
        size plus the lateral projection of the skip (at stride 2 with the pixel stem's features)."""
        size = (skip.shape[-2], skip.shape[-1])
        right = size[1] if right is None else right
        skip = skip[:, :, lo:hi, left:right].to(x.dtype)  # (stored in float16 at inference, MatcherConfig.store_fp16)
        lateral = self.lateral[str(s)]
        up = upsample_rows(x, size, lo, hi, left, right)
        if s != 2 or self.pixel_stem is None:
            return lateral(skip).add_(up)
        # the lateral 1×1 conv of [skip, pixel stem] as the sum of its two halves (no concatenated copy)
        stem = self.pixel_stem(F.pixel_unshuffle(image[:, :, 2 * lo:2 * hi, 2 * left:2 * right], 2))
        c = skip.shape[1]
        out = F.conv2d(skip, lateral.weight[:, :c], lateral.bias)
        return out.add_(F.conv2d(stem, lateral.weight[:, c:])).add_(up)


def zeros(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``torch.zeros(shape, dtype=dtype)``. A 16-bit float buffer is zeroed as int16 and viewed (all-zero bits are
    +0.0): PyTorch 2.13's CPU fill of float16 is ~10× slower than that of int16."""
    if dtype in (torch.float16, torch.bfloat16):
        return torch.zeros(shape, dtype=torch.int16, device=device).view(dtype)
    return torch.zeros(shape, dtype=dtype, device=device)


def upsample_rows(x: torch.Tensor, size: tuple[int, int], lo: int, hi: int, left: int = 0,
                  right: int | None = None) -> torch.Tensor:
    """Rows ``lo:hi`` and columns ``left:right`` (default all; other than all only for a whole upsampling factor
    in both directions) of ``F.interpolate(x, size, mode="bilinear", align_corners=False)`` without the rest."""
    h_in, h_out = x.shape[-2], size[0]
    right = size[1] if right is None else right
    if left != 0 or right != size[1]:
        f, g = h_out // h_in, size[1] // x.shape[-1]
        if f * h_in != h_out or g * x.shape[-1] != size[1]:
            raise ValueError("a column window needs whole upsampling factors")
        # whole factors: input rows a:b (columns c:d) give output rows f·a:f·b exactly; one more input row and
        # column each side, so that the needed outputs never see the window's clamped edge
        a, b = max(0, lo // f - 1), min(h_in, (hi - 1) // f + 2)
        c, d = max(0, left // g - 1), min(x.shape[-1], (right - 1) // g + 2)
        out = F.interpolate(x[:, :, a:b, c:d], size=((b - a) * f, (d - c) * g), mode="bilinear", align_corners=False)
        return out[:, :, lo - f * a:hi - f * a, left - g * c:right - g * c]
    if lo == 0 and hi == h_out:
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    if h_out % h_in == 0:  # integer factor f: upsampling input rows a:b gives output rows f·a:f·b exactly
        f = h_out // h_in
        a, b = max(0, lo // f - 1), min(h_in, (hi - 1) // f + 2)  # one more input row each side: no clamping
        out = F.interpolate(x[:, :, a:b], size=((b - a) * f, size[1]), mode="bilinear", align_corners=False)
        return out[:, :, lo - f * a:hi - f * a]
    src = ((torch.arange(lo, hi, dtype=torch.float64) + 0.5) * (h_in / h_out) - 0.5).clamp_min(0)
    i0 = src.floor().long().clamp_max(h_in - 1)
    i1 = (i0 + 1).clamp_max(h_in - 1)
    w1 = (src - i0).to(x.dtype)[:, None]
    first, last = int(i0[0]), int(i1[-1])
    cols = F.interpolate(x[:, :, first:last + 1], size=(last + 1 - first, size[1]), mode="bilinear",
                         align_corners=False)  # width only (unit row scale)
    return cols[:, :, i0 - first] * (1 - w1) + cols[:, :, i1 - first] * w1


class IMAMatchNet(nn.Module):
    """The network. ``conf`` fixes the architecture and the matching thresholds."""

    def __init__(self, conf: MatcherConfig) -> None:
        super().__init__()
        self.conf = conf
        self.backbone = make_backbone(conf.backbone, conf.stem, conf.mid, conf.deep)
        cdim = self.backbone.coarse_dim
        self.coarse_in = nn.Conv2d(cdim, conf.dim, 1)
        if cdim == conf.dim:
            # backbone features are L2-normalised; start as a scaled identity so that, with the attention
            # layers (identity at init), the dual-softmax sees cosine similarity / 0.02 from step 0
            with torch.no_grad():
                gain = (conf.dim * conf.temperature / 0.02) ** 0.5
                self.coarse_in.weight.copy_(gain * torch.eye(cdim)[:, :, None, None])
                self.coarse_in.bias.zero_()
        self.transformer = CoarseTransformer(conf.dim, conf.heads, conf.n_blocks, tuple(conf.scales),
                                             conf.focus_power, conf.separable_qkv, conf.ffn_ratio)
        # coarse matching on fewer channels than the attention (its similarity is the costliest product)
        self.match_proj = nn.Linear(conf.dim, conf.match_dim, bias=False) if conf.match_dim else None
        self.top_down = TopDown(conf.dim, self.backbone.skip_dims, conf.fine_dim, conf.fine_blocks, conf.pixel_stem,
                                conf.fine_smooth)
        # strip-wise inference stores the 1/2-res maps in half precision (computed in float32, read back as such)
        for mod in (self.backbone, self.top_down):
            mod.store_dtype = torch.float16 if conf.store_fp16 else torch.float32
            mod.strip_rows = conf.strip_rows
        if conf.attention_bf16 and native_bf16():
            self.transformer.compute_dtype = torch.bfloat16
        self.fine = FineMatcher(conf.fine_dim, conf.fine_window, conf.fine_bound,
                                conf.refine_window, conf.refine_bound, conf.refine_iters,
                                conf.consistency_radius, conf.consistency_min_prob, conf.fine_hidden)

    @property
    def size_multiple(self) -> int:
        """Image sides must be multiples of this: 8 (the coarse grid) times the largest attention stride."""
        return 8 * max(self.conf.scales)

    # ------------------------------------------------------------------ stages
    def encode(self, image0: torch.Tensor, image1: torch.Tensor, valid0: torch.Tensor | None = None,
               valid1: torch.Tensor | None = None, assignment: bool = True,
               features0: BackboneOutput | None = None) -> Encoded:
        """Images ``(B, 1, H_i, W_i)`` in [0, 1] (sides divisible by :attr:`size_multiple`); ``valid_i``
        ``(B, H_i/8, W_i/8)`` bool marks real (unpadded) cells, or None. ``assignment`` False skips the
        dual-softmax matrix (:meth:`coarse_matches` then selects the matches without it). ``features0``:
        ``self.backbone(image0)`` if already computed (inference: reused when image 0 is matched again)."""
        att = self.attend(image0, image1, valid0, valid1, features0)
        enc = self.coarse_encoding(att, valid0, valid1, assignment)
        f0, f1 = self.fine_maps(att, image0, image1)
        return replace(enc, fine0=f0, fine1=f1)

    def attend(self, image0: torch.Tensor, image1: torch.Tensor, valid0: torch.Tensor | None,
               valid1: torch.Tensor | None, features0: BackboneOutput | None = None,
               self0: torch.Tensor | None = None) -> Attended:
        """Backbone and attention (arguments as :meth:`encode`): the attended 1/8 maps and the backbone skips.
        ``self0``: image 0's first self-attention output from an earlier pass with the same image 0 and
        ``valid0`` (:attr:`Attended.self0`; inference)."""
        # training: both images in one batch; inference: one image at a time (same time, 40 % lower peak memory)
        joint = self.training and image0.shape == image1.shape and features0 is None
        if joint:
            out = self.backbone(torch.cat([image0, image1]))
            c0, c1 = self.coarse_in(F.normalize(out.coarse, dim=1)).chunk(2)
            skips0 = {s: x.chunk(2)[0] for s, x in out.skips.items()}
            skips1 = {s: x.chunk(2)[1] for s, x in out.skips.items()}
        else:
            o0 = self.backbone(image0) if features0 is None else features0
            o1 = self.backbone(image1)
            c0, c1 = (self.coarse_in(F.normalize(o.coarse, dim=1)) for o in (o0, o1))
            skips0, skips1 = o0.skips, o1.skips
        if (valid0 is None) != (valid1 is None):
            raise ValueError("give both validity masks or neither")
        if not joint and self.conf.n_blocks > 0:
            self0 = self.transformer.first_self(c0, valid0) if self0 is None else self0
            c0, c1 = self.transformer(c0, c1, valid0, valid1, self0=self0)
        else:
            c0, c1 = self.transformer(c0, c1, valid0, valid1)
        return Attended(c0, c1, skips0, skips1, joint, self0)

    def coarse_encoding(self, att: Attended, valid0: torch.Tensor | None, valid1: torch.Tensor | None,
                        assignment: bool = True) -> Encoded:
        """The coarse part of :class:`Encoded` (fine maps None): tokens, grids, masks, optionally the
        dual-softmax matrix."""
        grid0, grid1 = tuple(att.coarse0.shape[-2:]), tuple(att.coarse1.shape[-2:])
        c0, c1 = att.coarse0.flatten(2).transpose(1, 2), att.coarse1.flatten(2).transpose(1, 2)
        if self.match_proj is not None:
            c0, c1 = self.match_proj(c0), self.match_proj(c1)
        m0 = None if valid0 is None else valid0.flatten(1)
        m1 = None if valid1 is None else valid1.flatten(1)
        conf = dual_softmax(c0, c1, self.conf.temperature, m0, m1) if assignment else None
        return Encoded(c0, c1, None, None, conf, grid0, grid1, m0, m1)

    def fine_maps(self, att: Attended, image0: torch.Tensor, image1: torch.Tensor,
                  matches: CoarseMatches | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The 1/2-resolution fine maps ``(B, Cf, H_i/2, W_i/2)`` of both images (top-down path). At inference
        image 0's skips are released from ``att`` before image 1's map is built (lower peak memory), and with
        the coarse ``matches`` only what fine matching reads is computed (the rest is zero): image 0's
        matched cells, image 1's matched cells and the two cells around them that its windows reach."""
        if att.joint:
            skips = {s: torch.cat([att.skips0[s], att.skips1[s]]) for s in att.skips0}
            return self.top_down(torch.cat([att.coarse0, att.coarse1]), skips, torch.cat([image0, image1])).chunk(2)
        cells0 = cells1 = None
        if matches is not None and not torch.is_grad_enabled():
            cells0 = _cell_mask(matches.b, matches.i0, att.coarse0.shape, 0)
            cells1 = _cell_mask(matches.b, matches.i1, att.coarse1.shape, window_reach(self.conf))
        f0 = self.top_down(att.coarse0, att.skips0, image0, cells=cells0)
        att.skips0 = {}  # no longer needed while image 1's fine map is built
        return f0, self.top_down(att.coarse1, att.skips1, image1, cells=cells1)

    def coarse_matches(self, enc: Encoded) -> CoarseMatches:
        c = self.conf
        if enc.conf is not None:
            return select_matches(enc.conf, c.coarse_threshold, c.border, enc.grid0, enc.grid1)
        m = mutual_matches(enc.coarse0, enc.coarse1, c.temperature, c.coarse_threshold, enc.mask0, enc.mask1,
                           integer=c.coarse_integer, bits=c.coarse_bits)
        return drop_border(m, c.border, enc.grid0, enc.grid1)

    def queries(self, enc: Encoded, matches: CoarseMatches) -> FineQueries:
        c = self.conf
        dense = densify_mask(matches.confidence, c.densify, tuple(c.densify_band), c.densify_points,
                             c.densify_max_queries, matches.i0)
        return make_queries(matches, enc.grid0[1], enc.grid1[1], dense, c.densify_points)

    def refine(self, enc: Encoded, q: FineQueries) -> FineResult:
        inference = not torch.is_grad_enabled()
        chunk = FINE_CHUNK if inference else None  # bounded memory at inference, same result
        # at inference the queries the consistency check drops are not refined (same kept matches)
        return self.fine(enc.fine0, enc.fine1, q.b, q.query0, q.ref1, q.parent, chunk=chunk,
                         refine_consistent_only=inference and self.conf.consistency_check)

    def polish(self, image0: torch.Tensor, image1: torch.Tensor, enc: Encoded, b: torch.Tensor, kp0: torch.Tensor,
               kp1: torch.Tensor, keep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Photometric sub-pixel polish (:mod:`imamatch.subpixel`) of the kept matches ``kp0`` ↔ ``kp1``
        ``(N, 2)`` (input px). Returns the polished ``kp1``, ``keep`` without matches whose patches do not
        correlate (and, unless ``subpixel_keep_unmoved``, those the polish could not confirm), and the number
        moved."""
        c = self.conf
        if not c.subpixel:
            return kp1, keep, torch.tensor(0)
        idx = keep.nonzero()[:, 0]
        bk, k0, k1 = b[idx], kp0[idx], kp1[idx]
        affine = local_affine(bk, k0, k1, image0.shape[0], enc.grid0) if c.subpixel_affine else None
        pol = polish_matches(image0, image1, bk, k0, k1, c.subpixel_radius, c.subpixel_iters, c.subpixel_max_shift,
                             affine=affine, settled=c.subpixel_settled)
        kp1, keep = kp1.clone(), keep.clone()
        kp1[idx] = pol.keypoints1
        keep[idx] = (pol.ncc >= c.subpixel_min_ncc) & (pol.moved | c.subpixel_keep_unmoved)
        return kp1, keep, pol.moved.sum()

    def agree(self, enc: Encoded, b: torch.Tensor, kp0: torch.Tensor, kp1: torch.Tensor, keep: torch.Tensor,
              batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Neighbourhood-agreement filter (:mod:`imamatch.neighbourhood`): ``keep`` without the kept matches
        farther than ``neighbour_max_residual`` px from their neighbours' affine map or too isolated to judge;
        also returns how many were dropped."""
        c = self.conf
        if c.neighbour_max_residual is None:
            return keep, torch.tensor(0)
        idx = keep.nonzero()[:, 0]
        per_cell = c.densify_points if c.densify != "none" else 1  # siblings of one coarse match are no evidence
        res = neighbourhood_residual(b[idx], kp0[idx], kp1[idx], batch, enc.grid0, reach=tuple(c.neighbour_reach),
                                     min_points=max(4, round(1.5 * per_cell)))
        agree = res <= c.neighbour_max_residual  # NaN (isolated) is not, unless kept as such
        if c.neighbour_keep_isolated:  # where a pair has a match field to speak of (not scattered false matches)
            confirmed = torch.bincount(b[idx][agree], minlength=batch)
            agree |= res.isnan() & (confirmed[b[idx]] >= ISOLATED_MIN_CONFIRMED)
        keep = keep.clone()
        keep[idx] = agree
        return keep, (~agree).sum()

    # ------------------------------------------------------------------ inference
    @torch.inference_mode()
    def match(self, image0: torch.Tensor, image1: torch.Tensor, valid0: torch.Tensor | None = None,
              valid1: torch.Tensor | None = None, features0: BackboneOutput | None = None,
              coarse_only_below: float | None = None, self0: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Match prepared images. Returns input-pixel keypoints ``keypoints0/1`` ``(N, 2)``, ``confidence``,
        ``batch``, ``densified``, ``fine_prob`` ``(N,)``, and counts: coarse matches, densified coarse matches,
        fine queries, queries passing the consistency check, matches moved by the sub-pixel polish, matches
        dropped by the neighbourhood-agreement filter. Also the coarse matches' cell centres ``coarse0/1``
        ``(M, 2)`` (input pixels), and ``self0``, image 0's first self-attention output. ``features0``:
        ``self.backbone(image0)``, and ``self0``, that output, when already computed for this image 0 and ``valid0``.

        ``coarse_only_below``: when fewer coarse matches than this share of the valid cells of the smaller
        image are found (a hard pair, to be pre-aligned from them), stop after coarse matching: no fine maps,
        no fine matches (``coarse_only`` True in the output)."""
        att = self.attend(image0, image1, valid0, valid1, features0, self0)
        enc = self.coarse_encoding(att, valid0, valid1, assignment=False)
        matches = self.coarse_matches(enc)
        coarse = {"coarse0": cell_centres(matches.i0, enc.grid0[1]) * 2 + 0.5,  # cell centres, input pixels
                  "coarse1": cell_centres(matches.i1, enc.grid1[1]) * 2 + 0.5,
                  "num_coarse": torch.tensor(len(matches.b)), "self0": att.self0}
        if coarse_only_below is not None and len(matches.b) < coarse_only_below * _valid_cells(enc):
            none = image0.new_zeros(0, 2)
            zero = torch.tensor(0)
            return {"keypoints0": none, "keypoints1": none, "confidence": none[:, 0], "fine_prob": none[:, 0],
                    "batch": torch.zeros(0, dtype=torch.long), "densified": torch.zeros(0, dtype=torch.bool), **coarse,
                    "num_fine": zero, "num_densified": zero, "num_consistent": zero, "num_polished": zero,
                    "num_disagreeing": zero, "coarse_only": torch.tensor(True)}
        f0, f1 = self.fine_maps(att, image0, image1, matches)
        del att
        enc = replace(enc, fine0=f0, fine1=f1)
        q = self.queries(enc, matches)
        fr = self.refine(enc, q)
        keep = fr.consistent if self.conf.consistency_check else torch.ones_like(fr.consistent)
        kp0 = q.query0 * 2 + 0.5  # half-res → input pixels
        kp1 = fr.match1 * 2 + 0.5
        num_consistent = keep.sum()
        kp1, keep, num_polished = self.polish(image0, image1, enc, q.b, kp0, kp1, keep)
        keep, num_disagreeing = self.agree(enc, q.b, kp0, kp1, keep, image0.shape[0])
        return {
            "keypoints0": kp0[keep], "keypoints1": kp1[keep],
            "confidence": matches.confidence[q.parent][keep], "fine_prob": fr.peak_prob[keep],
            "batch": q.b[keep], "densified": q.densified[keep], **coarse,
            "num_fine": torch.tensor(len(q.b)),
            "num_densified": torch.tensor(torch.unique(q.parent[q.densified]).numel()),
            "num_consistent": num_consistent, "num_polished": num_polished,
            "num_disagreeing": num_disagreeing, "coarse_only": torch.tensor(False),
        }


def window_reach(conf: MatcherConfig) -> int:
    """How many 1/8 cells beyond a coarse match's cell in image 1 its fine windows can read: the stage-1 window
    around the cell centre, or the refinement windows after stage 1 and the refinements moved it by their bounds
    (each read bilinearly: one half-res pixel more)."""
    d = 1 + max((conf.fine_window - 1) / 2,
                conf.fine_bound + conf.refine_iters * conf.refine_bound + (conf.refine_window - 1) / 2)
    centre = 1.5  # a cell's centre, in half-res pixels from its first pixel (4 per cell)
    return max(math.floor((centre + d) / 4), -math.floor((centre - d) / 4))


def _cell_mask(b: torch.Tensor, idx: torch.Tensor, shape: torch.Size, reach: int) -> torch.Tensor:
    """``(B, h, w)`` bool: the flat cells ``idx`` ``(M,)`` of batch items ``b`` of a ``(B, C, h, w)`` map, dilated
    by ``reach`` cells."""
    mask = torch.zeros(shape[0], shape[2] * shape[3], device=idx.device)
    mask[b, idx] = 1.0
    mask = mask.view(shape[0], 1, shape[2], shape[3])
    if reach > 0:
        mask = F.max_pool2d(mask, 2 * reach + 1, stride=1, padding=reach)
    return mask[:, 0] > 0


def _valid_cells(enc: Encoded) -> int:
    """Valid 1/8 cells of the smaller image of the pair (summed over the batch)."""
    n0 = enc.coarse0.shape[0] * enc.coarse0.shape[1] if enc.mask0 is None else int(enc.mask0.sum())
    n1 = enc.coarse1.shape[0] * enc.coarse1.shape[1] if enc.mask1 is None else int(enc.mask1.sum())
    return min(n0, n1)
