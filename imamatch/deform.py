"""Deformable 3×3 convolution in plain PyTorch (no torchvision).

Semantics follow ``torchvision.ops.deform_conv2d`` with one offset group and no mask: for output
pixel ``p`` and kernel tap ``k`` the input is sampled bilinearly (zero outside the image) at
``p + tap_k + offset[2k:2k+2]`` where the offset pair is ``(dy, dx)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def deform_conv3x3(x: torch.Tensor, offset: torch.Tensor, weight: torch.Tensor,
                   bias: torch.Tensor | None = None) -> torch.Tensor:
    """Deformable 3×3 convolution, stride 1, padding 1.

    Args:
        x: input ``(B, C, H, W)``.
        offset: ``(B, 18, H, W)``, pairs ``(dy, dx)`` per kernel tap in row-major tap order.
        weight: ``(O, C, 3, 3)``.
        bias: ``(O,)`` or None.
    Returns:
        ``(B, O, H, W)``.
    """
    b, c, h, w = x.shape
    ys = torch.arange(h, dtype=x.dtype, device=x.device).view(1, 1, h, 1)
    xs = torch.arange(w, dtype=x.dtype, device=x.device).view(1, 1, 1, w)
    taps = torch.arange(9, device=x.device)
    ty = (taps // 3 - 1).to(x.dtype).view(1, 9, 1, 1)
    tx = (taps % 3 - 1).to(x.dtype).view(1, 9, 1, 1)
    py = ys + ty + offset[:, 0::2]                                      # B, 9, H, W
    px = xs + tx + offset[:, 1::2]
    # all nine taps in one grid_sample (normalised coordinates, align_corners=True), stacked along rows
    grid = torch.stack([2.0 * px / max(w - 1, 1) - 1.0, 2.0 * py / max(h - 1, 1) - 1.0], dim=-1)
    cols = F.grid_sample(x, grid.view(b, 9 * h, w, 2), mode="bilinear", padding_mode="zeros",
                         align_corners=True)                            # B, C, 9·H, W = (B, C·9, H·W)
    # (B, H·W, O) = colsᵀ · Wᵀ, viewed as a channels-last (B, O, H, W) map like the convolutions around it
    out = torch.matmul(cols.reshape(b, c * 9, h * w).transpose(1, 2), weight.reshape(weight.shape[0], c * 9).T)
    out = out.view(b, h, w, -1).permute(0, 3, 1, 2)
    return out if bias is None else out + bias.view(1, -1, 1, 1)


class DeformConv3x3(nn.Module):
    """3×3 deformable convolution whose offsets come from a plain 3×3 conv on the input."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.offset_conv = nn.Conv2d(cin, 18, 3, padding=1, bias=True)
        self.regular_conv = nn.Conv2d(cin, cout, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor, weight: torch.Tensor | None = None,
                bias: torch.Tensor | None = None) -> torch.Tensor:
        """``weight``/``bias``: used instead of the layer's own (e.g. with a BatchNorm folded in)."""
        h, w = x.shape[-2:]
        limit = max(h, w) / 4.0
        offset = self.offset_conv(x).clamp(-limit, limit)
        if weight is None:
            weight, bias = self.regular_conv.weight, self.regular_conv.bias
        return deform_conv3x3(x, offset, weight, bias)
