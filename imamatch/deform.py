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
    ys = torch.arange(h, dtype=x.dtype, device=x.device).view(1, h, 1)
    xs = torch.arange(w, dtype=x.dtype, device=x.device).view(1, 1, w)
    samples = []
    for k in range(9):
        ky, kx = divmod(k, 3)
        py = ys + (ky - 1) + offset[:, 2 * k]
        px = xs + (kx - 1) + offset[:, 2 * k + 1]
        # normalised coordinates for grid_sample with align_corners=True
        gx = 2.0 * px / max(w - 1, 1) - 1.0
        gy = 2.0 * py / max(h - 1, 1) - 1.0
        grid = torch.stack([gx, gy], dim=-1)
        samples.append(F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros",
                                     align_corners=True))
    cols = torch.stack(samples, dim=2)  # B, C, 9, H, W
    out = torch.einsum("bckhw,ock->bohw", cols, weight.reshape(weight.shape[0], c, 9))
    if bias is not None:
        out = out + bias.view(1, -1, 1, 1)
    return out


class DeformConv3x3(nn.Module):
    """3×3 deformable convolution whose offsets come from a plain 3×3 conv on the input."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.offset_conv = nn.Conv2d(cin, 18, 3, padding=1, bias=True)
        self.regular_conv = nn.Conv2d(cin, cout, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        limit = max(h, w) / 4.0
        offset = self.offset_conv(x).clamp(-limit, limit)
        return deform_conv3x3(x, offset, self.regular_conv.weight, self.regular_conv.bias)
