"""Backbone: the strip-wise full-resolution block gives the whole-image result."""

import pytest
import torch
import torch.nn.functional as F

from imamatch.backbone import LocalFeatureBackbone


@pytest.mark.parametrize("shape", [(1, 1, 96, 64), (2, 1, 64, 160), (1, 1, 32, 32)])
def test_strips_equal_the_whole_image(shape):
    torch.manual_seed(0)
    bb = LocalFeatureBackbone().eval()
    x = torch.rand(shape)
    with torch.no_grad():
        whole = F.avg_pool2d(bb.block1(x.expand(-1, 3, -1, -1)), 2)
        for strip in (8, 16, 30):
            torch.testing.assert_close(bb.pooled_block1(x, strip), whole, atol=1e-6, rtol=0)
        out = bb(x)
    assert out.coarse.shape == (shape[0], 128, shape[2] // 8, shape[3] // 8)
    assert out.skips[2].shape == (shape[0], 64, shape[2] // 2, shape[3] // 2)


def test_training_path_keeps_gradients():
    bb = LocalFeatureBackbone()
    x = torch.rand(1, 1, 64, 64)
    bb.pooled_block1(x, 16).sum().backward()  # with autograd: one pass, no strips
    assert bb.block1.a.conv.weight.grad is not None
