"""Elementwise ops on channels-last maps through their (B, H, W, C) view: same values, same layout."""

import torch
import torch.nn.functional as F

from imamatch.layout import GELU, pointwise


def test_gelu_on_channels_last_matches_and_keeps_the_layout():
    x = torch.randn(2, 16, 9, 13).contiguous(memory_format=torch.channels_last) * 3
    y = GELU()(x)
    torch.testing.assert_close(y, F.gelu(x.contiguous()), atol=1e-5, rtol=0)
    assert y.is_contiguous(memory_format=torch.channels_last) and y.shape == x.shape
    assert GELU().state_dict().keys() == torch.nn.GELU().state_dict().keys()


def test_pointwise_passes_other_layouts_through():
    for x in (torch.randn(2, 3, 4, 5), torch.randn(7, 3), torch.randn(2, 3, 4, 5)[:, :, ::2]):
        torch.testing.assert_close(pointwise(torch.exp, x), torch.exp(x))
    x = torch.randn(1, 4, 6, 6, requires_grad=True)
    pointwise(F.selu, x.contiguous(memory_format=torch.channels_last)).sum().backward()
    torch.testing.assert_close(x.grad, torch.autograd.grad(F.selu(x).sum(), x)[0])

