"""Backbone: the strip-wise half-resolution part gives the whole-image result of the plain definition."""

import pytest
import torch
import torch.nn.functional as F

from imamatch.backbone import LocalFeatureBackbone


def plain_forward(bb: LocalFeatureBackbone, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The definition, whole maps: (coarse, 1/2 skip)."""
    x1 = F.avg_pool2d(bb.block1(image.expand(-1, 3, -1, -1)), 2)
    x2 = bb.block2(x1)
    x3 = bb.block3(F.avg_pool2d(x2, 4))
    x4 = bb.block4(F.avg_pool2d(x3, 4))
    p1, p2, p3, p4 = (F.selu(p(x)) for p, x in zip(bb.proj, (x1, x2, x3, x4)))
    coarse = torch.cat([F.avg_pool2d(p1, 4), F.avg_pool2d(p2, 4), p3,
                        F.interpolate(p4, size=p3.shape[-2:], mode="bilinear", align_corners=False)], dim=1)
    return coarse, torch.cat([p1, p2], dim=1)


@pytest.mark.parametrize("shape", [(1, 1, 96, 64), (2, 1, 64, 160), (1, 1, 32, 32)])
def test_strips_equal_the_whole_image(shape):
    torch.manual_seed(0)
    bb = LocalFeatureBackbone().eval()
    x = torch.rand(shape)
    with torch.no_grad():
        coarse, fine = plain_forward(bb, x)
        for strip in (4, 8, 12, 1000):
            f, _ = bb.half_res(x, strip)
            torch.testing.assert_close(f, fine, atol=1e-6, rtol=0)
        out = bb(x)
    torch.testing.assert_close(out.coarse, coarse, atol=1e-6, rtol=0)
    torch.testing.assert_close(out.skips[2], fine, atol=1e-6, rtol=0)
    assert out.coarse.shape == (shape[0], 128, shape[2] // 8, shape[3] // 8)
    with pytest.raises(ValueError, match="multiple of 4"):
        with torch.no_grad():
            bb.half_res(torch.rand(1, 1, 64, 64), 6)


def test_training_path_keeps_gradients():
    bb = LocalFeatureBackbone()
    out = bb(torch.rand(1, 1, 64, 64))  # with autograd: one pass, no strips
    (out.coarse.sum() + out.skips[2].sum()).backward()
    assert bb.block1.a.conv.weight.grad is not None and bb.block2.a.conv.weight.grad is not None


@pytest.mark.parametrize("deform", [False, True])
def test_batchnorm_folded_into_the_convolution_at_inference(deform):
    from imamatch.backbone import _ConvBN

    torch.manual_seed(0)
    layer = _ConvBN(6, 8, deform)
    conv = layer.conv.regular_conv if deform else layer.conv
    conv.bias = torch.nn.Parameter(torch.randn(8))  # (ALIKED's have none; the fold must not depend on that)
    layer.bn.running_mean.normal_()
    layer.bn.running_var.uniform_(0.5, 2.0)
    torch.nn.init.normal_(layer.bn.weight)
    torch.nn.init.normal_(layer.bn.bias)
    x = torch.randn(2, 6, 9, 11)
    with torch.no_grad():
        layer.eval()
        folded = layer(x)
        unfolded = layer.bn(layer.conv(x))  # conv with its own weights, then BatchNorm with running statistics
    torch.testing.assert_close(folded, unfolded, atol=1e-5, rtol=1e-5)
