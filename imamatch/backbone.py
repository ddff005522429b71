"""CNN backbones: coarse features at 1/8 and skip features for the fine path.

Two backbones share one interface, ``forward(image) -> BackboneOutput``:

* :class:`LocalFeatureBackbone` (default, CPU-fast): the topology of ALIKED-n16 (blocks at 1/1, 1/2, 1/8,
  1/32 with 16/32/64/128 channels, deformable 3×3 convs in the last two blocks), so it can start from the
  BSD-3 ALIKED weights. Coarse features are its four blocks aggregated at 1/8 (128-d).
* :class:`ReferenceBackbone`: the IMAMatch release's MBConv backbone (64/128/192/256), trained from scratch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .config import MatcherConfig
from .deform import DeformConv3x3
from .layout import GELU
from .strips import paste_rows, strip_ranges


@dataclass
class BackboneOutput:
    """``coarse``: ``(B, Cc, H/8, W/8)``; ``skips``: maps keyed by stride (e.g. ``{4: …, 2: …}``)."""

    coarse: torch.Tensor
    skips: dict[int, torch.Tensor]


# --------------------------------------------------------------------------- ALIKED topology
class _ConvBN(nn.Module):
    """3×3 conv (plain or deformable), BatchNorm, optional SELU."""

    def __init__(self, cin: int, cout: int, deform: bool) -> None:
        super().__init__()
        self.conv = DeformConv3x3(cin, cout) if deform else nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.bn.training:
            return self.bn(self.conv(x))
        # running statistics: the BatchNorm folded into the convolution's weights (one pass over the map less)
        bn = self.bn
        conv = self.conv.regular_conv if isinstance(self.conv, DeformConv3x3) else self.conv
        gain = bn.weight * torch.rsqrt(bn.running_var + bn.eps)
        bias = bn.bias + ((0 if conv.bias is None else conv.bias) - bn.running_mean) * gain
        weight = conv.weight * gain[:, None, None, None]
        if isinstance(self.conv, DeformConv3x3):
            return self.conv(x, weight, bias)
        return F.conv2d(x, weight, bias, padding=1)


class _PlainBlock(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.a, self.b = _ConvBN(cin, cout, False), _ConvBN(cout, cout, False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.selu(self.b(F.selu(self.a(x), inplace=True)), inplace=True)


class _ResidualBlock(nn.Module):
    def __init__(self, cin: int, cout: int, deform: bool) -> None:
        super().__init__()
        self.a, self.b = _ConvBN(cin, cout, deform), _ConvBN(cout, cout, deform)
        self.skip = nn.Conv2d(cin, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.selu(self.b(F.selu(self.a(x), inplace=True)).add_(self.skip(x)), inplace=True)


class SpaceToDepthStem(nn.Module):
    """A cheap stand-in for ALIKED's full-resolution block 1 and its 2×2 average pool: the image's 2×2 pixel
    blocks as 4 channels at 1/2 resolution, a 3×3 conv (the same 6×6-pixel receptive field), SELU and a 1×1
    conv to ``cout`` channels. Trained to reproduce the pooled block (``scripts/distil_stem.py``); ~4× cheaper.
    """

    def __init__(self, cout: int, hidden: int = 32) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, hidden, 3, padding=1)
        self.mix = nn.Conv2d(hidden, hidden, 1)
        self.out = nn.Conv2d(hidden, cout, 1)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """``(B, 1, H, W)`` → ``(B, cout, H/2, W/2)``."""
        return self.out(F.relu(self.mix(F.relu(self.conv(F.pixel_unshuffle(image, 2)), inplace=True)), inplace=True))


class LiteBlock2(nn.Module):
    """A cheap stand-in for ALIKED's block 2 at 1/2 resolution: two depthwise 3×3 + pointwise stages (the same
    two 3×3 convs of reach, so the same strip halo) and a 1×1 skip; ~1/6 of the block's multiply-adds.
    Trained to reproduce block 2 (:func:`imamatch.train.distil.distil_mid`)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.dw1 = nn.Conv2d(cin, cin, 3, padding=1, groups=cin)
        self.pw1 = nn.Conv2d(cin, cout, 1)
        self.dw2 = nn.Conv2d(cout, cout, 3, padding=1, groups=cout)
        self.pw2 = nn.Conv2d(cout, cout, 1)
        self.skip = nn.Conv2d(cin, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.selu(self.pw2(self.dw2(F.relu(self.pw1(self.dw1(x)), inplace=True))).add_(self.skip(x)), inplace=True)


class PlainBlock3(nn.Module):
    """A stand-in for ALIKED's deformable block 3 at 1/8 resolution (or block 4 at 1/32): the same residual block
    with plain 3×3 convolutions (deformable sampling is the backbone's slowest op on a CPU), the second one
    ``dilation`` apart (a wider reach for the deformable taps it stands in for). Distilled like :class:`LiteBlock2`."""

    def __init__(self, cin: int, cout: int, dilation: int = 1) -> None:
        super().__init__()
        self.a = nn.Conv2d(cin, cout, 3, padding=1)
        self.b = nn.Conv2d(cout, cout, 3, padding=dilation, dilation=dilation)
        self.skip = nn.Conv2d(cin, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.selu(self.b(F.relu(self.a(x), inplace=True)).add_(self.skip(x)), inplace=True)


DEEP_DILATION = {"plain": 1, "dilated": 3}  # the plain stand-ins for block 4: their second convolution's dilation


class LocalFeatureBackbone(nn.Module):
    """ALIKED-n16 topology. Input grayscale ``(B, 1, H, W)`` in [0, 1], H and W divisible by 8 (the 1/32
    block pools partial windows at the bottom/right edge over what they hold). ``stem`` "aliked": ALIKED's
    block 1 at full resolution, average-pooled to 1/2; "s2d": :class:`SpaceToDepthStem` in its place.
    ``mid`` "aliked": ALIKED's blocks 2 and 3; "lite": :class:`LiteBlock2` and :class:`PlainBlock3` instead.
    ``deep`` "aliked": ALIKED's deformable block 4; "plain": a :class:`PlainBlock3` instead; "dilated": one whose
    second convolution is dilated by 3.

    Returns coarse ``(B, 128, H/8, W/8)`` and a 1/2 skip ``(B, 64, H/2, W/2)``.
    """

    widths = (16, 32, 64, 128)
    coarse_dim = 128
    skip_dims = {2: 64}
    store_dtype: torch.dtype = torch.float32  # of the strip-wise (inference) 1/2 skip
    strip_rows: int = MatcherConfig.strip_rows  # half-res rows per strip at inference

    def __init__(self, stem: str = "aliked", mid: str = "aliked", deep: str = "aliked") -> None:
        super().__init__()
        if stem not in ("aliked", "s2d"):
            raise ValueError(f"unknown stem {stem!r}; choose 'aliked' or 's2d'")
        if mid not in ("aliked", "lite"):
            raise ValueError(f"unknown mid blocks {mid!r}; choose 'aliked' or 'lite'")
        if deep not in DEEP_DILATION and deep != "aliked":
            raise ValueError(f"unknown block 4 {deep!r}; choose 'aliked', 'plain' or 'dilated'")
        c1, c2, c3, c4 = self.widths
        self.block1 = _PlainBlock(3, c1) if stem == "aliked" else None
        self.stem = SpaceToDepthStem(c1) if stem == "s2d" else None
        lite = mid == "lite"
        self.block2 = LiteBlock2(c1, c2) if lite else _ResidualBlock(c1, c2, deform=False)
        self.block3 = PlainBlock3(c2, c3) if lite else _ResidualBlock(c2, c3, deform=True)
        self.block4 = PlainBlock3(c3, c4, DEEP_DILATION[deep]) if deep in DEEP_DILATION else \
            _ResidualBlock(c3, c4, deform=True)
        self.proj = nn.ModuleList([nn.Conv2d(c, c4 // 4, 1, bias=False) for c in self.widths])

    def forward(self, image: torch.Tensor) -> BackboneOutput:
        fine, x3_in = self.half_res(image)
        x3 = self.block3(x3_in)
        x4 = self.block4(F.avg_pool2d(x3, 4, ceil_mode=True))
        p3, p4 = F.selu(self.proj[2](x3), inplace=True), F.selu(self.proj[3](x4), inplace=True)
        h3, w3 = p3.shape[-2:]
        coarse = torch.cat([
            F.avg_pool2d(fine, 4), p3,  # fine = [p1, p2] at 1/2
            F.interpolate(p4, scale_factor=4, mode="bilinear", align_corners=False)[:, :, :h3, :w3],
        ], dim=1)
        return BackboneOutput(coarse, {2: fine})

    def half_res(self, image: torch.Tensor, strip: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Blocks 1 and 2 and their projections: the 1/2 skip ``[p1, p2]`` ``(B, 64, H/2, W/2)`` and block 2's
        output pooled to 1/8 ``(B, 32, H/8, W/8)``. The full-resolution block is average-pooled to 1/2 before its
        projection (4× cheaper than ALIKED). Without autograd, computed in horizontal strips of ``strip`` half-res
        rows (a multiple of 4), each read with the halo its 3×3 convs need (2 rows at each resolution), so the
        result is the same and the full-resolution and block-2 maps never exist whole (default
        :attr:`strip_rows`)."""
        strip = strip or self.strip_rows
        h2 = image.shape[-2] // 2
        if torch.is_grad_enabled() or h2 <= strip:
            p1, p2, pooled = self._half_res_rows(image, 0, h2, 0, h2)
            return torch.cat([p1, p2], dim=1), pooled
        if strip % 4:
            raise ValueError(f"strip must be a multiple of 4 half-res rows, got {strip}")
        fine = pooled = None
        channels = self.proj[0].out_channels + self.proj[1].out_channels
        for lo, hi, r0, r1 in strip_ranges(h2, strip, halo=2):  # block 2's two 3×3 convs
            p1, p2, p = self._half_res_rows(image, lo, hi, r0, r1)
            fine = paste_rows(fine, p1, r0, h2, channels=channels, dtype=self.store_dtype)
            fine = paste_rows(fine, p2, r0, h2, channel=p1.shape[1])
            pooled = paste_rows(pooled, p, r0 // 4, h2 // 4)
        return fine, pooled

    def first_block(self, image: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
        """Half-res rows ``lo:hi`` of block 1 pooled to 1/2 (or of the stem), from the image rows they need."""
        h = image.shape[-2]
        if self.stem is not None:  # one 3×3 conv at 1/2: one half-res row of halo
            a, b = max(0, lo - 1), min(h // 2, hi + 1)
            return self.stem(image[:, :, 2 * a:2 * b])[:, :, lo - a:hi - a]
        flo, fhi = max(0, 2 * lo - 2), min(h, 2 * hi + 2)  # full-resolution rows block 1 reads
        x1 = self.block1(image[:, :, flo:fhi].expand(-1, 3, -1, -1))
        return F.avg_pool2d(x1[:, :, 2 * lo - flo:2 * hi - flo], 2)

    def _half_res_rows(self, image: torch.Tensor, lo: int, hi: int, r0: int,
                       r1: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Half-res rows ``r0:r1`` of the two projections ``p1``, ``p2`` (the 1/2 skip is ``[p1, p2]``) and of
        block 2's output pooled to 1/8 (rows ``r0/4:r1/4``), computed from rows ``lo:hi`` (its halo)."""
        x1 = self.first_block(image, lo, hi)
        x2 = self.block2(x1)[:, :, r0 - lo:r1 - lo]
        x1 = x1[:, :, r0 - lo:r1 - lo]
        return F.selu(self.proj[0](x1), inplace=True), F.selu(self.proj[1](x2), inplace=True), F.avg_pool2d(x2, 4)

    @staticmethod
    def aliked_key_map(key: str) -> str | None:
        """Map a key of ALIKED's state dict to ours (``None`` for the parts we do not use)."""
        if key.startswith(("score_head", "desc_head")):
            return None
        for i in range(4):
            if key.startswith(f"conv{i + 1}."):
                return key.replace(f"conv{i + 1}.", f"proj.{i}.")
        parts = key.split(".")
        if parts[0] in ("block1", "block2", "block3", "block4"):
            sub = {"conv1": "a.conv", "conv2": "b.conv", "bn1": "a.bn", "bn2": "b.bn", "downsample": "skip"}
            head = sub.get(parts[1])
            if head is None:
                return None
            return ".".join([parts[0], head, *parts[2:]])
        return None


# --------------------------------------------------------------------------- reference topology
class ConvBNGELU(nn.Sequential):
    def __init__(self, cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1) -> None:
        super().__init__(nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(cout), GELU())


class MBConv(nn.Module):
    """Inverted residual: 1×1 expand, depthwise 3×3 (optionally strided), 1×1 project."""

    def __init__(self, cin: int, cout: int, stride: int = 1, expansion: int = 1) -> None:
        super().__init__()
        hid = cin * expansion
        self.body = nn.Sequential(ConvBNGELU(cin, hid, 1), ConvBNGELU(hid, hid, 3, stride, groups=hid),
                                  nn.Conv2d(hid, cout, 1, bias=False), nn.BatchNorm2d(cout))
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        return x + y if self.residual else y


class _Down(nn.Module):
    """Residual down block: (max-pool + 1×1) skip plus a strided MBConv."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.skip = nn.Sequential(nn.MaxPool2d(3, 2, 1), nn.Conv2d(cin, cout, 1, bias=False))
        self.mb = MBConv(cin, cout, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.skip(x) + self.mb(x)


class ReferenceBackbone(nn.Module):
    """The release's backbone: coarse ``(B, 256, H/8, W/8)``; skips at 1/4 (192) and 1/2 (128)."""

    coarse_dim = 256
    skip_dims = {4: 192, 2: 128}

    def __init__(self, widths: tuple[int, int, int, int] = (64, 128, 192, 256)) -> None:
        super().__init__()
        w0, w1, w2, w3 = widths
        self.coarse_dim = w3
        self.skip_dims = {4: w2, 2: w1}
        self.stem = nn.Sequential(ConvBNGELU(1, w0, 3, 2), ConvBNGELU(w0, w0))
        self.stage2 = nn.Sequential(ConvBNGELU(w0, w1), ConvBNGELU(w1, w1))
        self.stage4 = nn.Sequential(_Down(w1, w2), MBConv(w2, w2), MBConv(w2, w2))
        self.stage8 = nn.Sequential(_Down(w2, w3), *[MBConv(w3, w3) for _ in range(4)])

    def forward(self, image: torch.Tensor) -> BackboneOutput:
        x2 = self.stage2(self.stem(image))
        x4 = self.stage4(x2)
        return BackboneOutput(self.stage8(x4), {4: x4, 2: x2})


BACKBONES: dict[str, type[nn.Module]] = {"aliked": LocalFeatureBackbone, "reference": ReferenceBackbone}


def make_backbone(name: str, stem: str = "aliked", mid: str = "aliked", deep: str = "aliked") -> nn.Module:
    """The backbone ``name`` (a key of :data:`BACKBONES`); ``stem``, ``mid`` and ``deep`` apply to "aliked" only."""
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose from {sorted(BACKBONES)}")
    if name == "aliked":
        return LocalFeatureBackbone(stem, mid, deep)
    if stem != "aliked" or mid != "aliked" or deep != "aliked":
        raise ValueError(f"stem {stem!r} / mid {mid!r} / deep {deep!r} apply to the 'aliked' backbone only")
    return BACKBONES[name]()
