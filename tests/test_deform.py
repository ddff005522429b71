"""Deformable convolution: checked against plain convolution and a direct bilinear computation."""

import torch
import torch.nn.functional as F

from imamatch.deform import deform_conv3x3


def _direct(x, offset, weight):
    """Loop-by-loop definition: sample x bilinearly (zero outside) at p + tap + offset."""
    b, c, h, w = x.shape
    out = torch.zeros(b, weight.shape[0], h, w, dtype=x.dtype)

    def px(bi, ci, yy, xx):
        if 0 <= yy < h and 0 <= xx < w:
            return x[bi, ci, yy, xx]
        return torch.zeros((), dtype=x.dtype)

    for bi in range(b):
        for y in range(h):
            for xx in range(w):
                for k in range(9):
                    ky, kx = divmod(k, 3)
                    sy = y + ky - 1 + offset[bi, 2 * k, y, xx]
                    sx = xx + kx - 1 + offset[bi, 2 * k + 1, y, xx]
                    y0, x0 = int(torch.floor(sy)), int(torch.floor(sx))
                    fy, fx = sy - y0, sx - x0
                    for ci in range(c):
                        v = ((1 - fy) * (1 - fx) * px(bi, ci, y0, x0) + (1 - fy) * fx * px(bi, ci, y0, x0 + 1)
                             + fy * (1 - fx) * px(bi, ci, y0 + 1, x0) + fy * fx * px(bi, ci, y0 + 1, x0 + 1))
                        out[bi, :, y, xx] += weight[:, ci, ky, kx] * v
    return out


def test_zero_offset_is_plain_conv():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 9, 7, generator=g)
    w = torch.randn(5, 4, 3, 3, generator=g)
    off = torch.zeros(2, 18, 9, 7)
    torch.testing.assert_close(deform_conv3x3(x, off, w), F.conv2d(x, w, padding=1), atol=1e-5, rtol=1e-5)


def test_fractional_offsets_match_direct_bilinear():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, 2, 5, 6, generator=g, dtype=torch.float64)
    w = torch.randn(3, 2, 3, 3, generator=g, dtype=torch.float64)
    off = 1.5 * torch.randn(1, 18, 5, 6, generator=g, dtype=torch.float64)
    torch.testing.assert_close(deform_conv3x3(x, off, w), _direct(x, off, w), atol=1e-9, rtol=1e-9)
