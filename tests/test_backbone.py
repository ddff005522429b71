"""Backbone: the strip-wise half-resolution part gives the whole-image result of the plain definition (both
stems, both kinds of blocks 2 and 3, sides multiples of 8 or of 32)."""

import pytest
import torch
import torch.nn.functional as F

from imamatch.backbone import LocalFeatureBackbone


def plain_forward(bb: LocalFeatureBackbone, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The definition, whole maps: (coarse, 1/2 skip). The 1/32 block reads 4×4 means of the 1/8 map (partial
    windows at the bottom/right edge: the mean of what they hold); its projection is upsampled 4× back."""
    if bb.stem is None:
        x1 = F.avg_pool2d(bb.block1(image.expand(-1, 3, -1, -1)), 2)
    else:
        x1 = bb.stem(image)
    x2 = bb.block2(x1)
    x3 = bb.block3(F.avg_pool2d(x2, 4))
    h3, w3 = x3.shape[-2:]
    pooled = torch.stack([torch.stack([x3[:, :, i:i + 4, j:j + 4].mean((2, 3)) for j in range(0, w3, 4)], -1)
                          for i in range(0, h3, 4)], -2)
    x4 = bb.block4(pooled)
    p1, p2, p3, p4 = (F.selu(p(x)) for p, x in zip(bb.proj, (x1, x2, x3, x4)))
    up = F.interpolate(p4, size=(4 * p4.shape[-2], 4 * p4.shape[-1]), mode="bilinear", align_corners=False)
    coarse = torch.cat([F.avg_pool2d(p1, 4), F.avg_pool2d(p2, 4), p3, up[:, :, :h3, :w3]], dim=1)
    if h3 % 4 == 0 and w3 % 4 == 0:  # sides multiples of 32: as ALIKED (upsampled to the 1/8 size)
        torch.testing.assert_close(up, F.interpolate(p4, size=(h3, w3), mode="bilinear", align_corners=False))
    return coarse, torch.cat([p1, p2], dim=1)


@pytest.mark.parametrize("stem,mid", [("aliked", "aliked"), ("s2d", "aliked"), ("s2d", "lite")])
@pytest.mark.parametrize("shape", [(1, 1, 96, 64), (2, 1, 64, 160), (1, 1, 32, 32), (1, 1, 72, 88), (1, 1, 8, 16)])
def test_strips_equal_the_whole_image(shape, stem, mid):
    torch.manual_seed(0)
    bb = LocalFeatureBackbone(stem, mid).eval()
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


@pytest.mark.parametrize("stem", ["aliked", "s2d"])
def test_training_path_keeps_gradients(stem):
    bb = LocalFeatureBackbone(stem)
    out = bb(torch.rand(1, 1, 64, 64))  # with autograd: one pass, no strips
    (out.coarse.sum() + out.skips[2].sum()).backward()
    first = bb.block1.a.conv if stem == "aliked" else bb.stem.conv
    assert first.weight.grad is not None and bb.block2.a.conv.weight.grad is not None
    assert (bb.block1 is None) == (stem == "s2d") and (bb.stem is None) == (stem == "aliked")


def test_lite_blocks_replace_blocks_2_and_3_and_train():
    from imamatch.backbone import LiteBlock2, PlainBlock3
    bb = LocalFeatureBackbone("s2d", "lite")
    assert isinstance(bb.block2, LiteBlock2) and isinstance(bb.block3, PlainBlock3)
    out = bb(torch.rand(1, 1, 64, 96))
    (out.coarse.sum() + out.skips[2].sum()).backward()
    assert bb.block2.dw1.weight.grad is not None and bb.block3.a.weight.grad is not None
    assert out.coarse.shape == (1, 128, 8, 12) and out.skips[2].shape == (1, 64, 32, 48)


def test_unknown_stem():
    from imamatch.backbone import make_backbone

    with pytest.raises(ValueError, match="stem"):
        LocalFeatureBackbone("tiny")
    with pytest.raises(ValueError, match="mid blocks"):
        LocalFeatureBackbone("s2d", "tiny")
    with pytest.raises(ValueError, match="block 4"):
        LocalFeatureBackbone("s2d", "lite", "tiny")
    with pytest.raises(ValueError, match="'aliked' backbone only"):
        make_backbone("reference", "s2d")
    with pytest.raises(ValueError, match="'aliked' backbone only"):
        make_backbone("reference", mid="lite")
    with pytest.raises(ValueError, match="'aliked' backbone only"):
        make_backbone("reference", deep="plain")
    with pytest.raises(ValueError, match="unknown backbone"):
        make_backbone("vgg")


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
