"""Local affine fits of the match field and the neighbourhood-agreement filter, on generated fields with
known maps and planted outliers, and on the Middlebury pair with its ground-truth disparity."""

import math

import numpy as np
import pytest
import torch
from skimage import data

from imamatch import IMAMatch
from imamatch.eval.suite import stereo_errors
from imamatch.neighbourhood import fit_local_affine, local_affine, neighbourhood_residual, svdvals2x2


def _grid(h: int, w: int, step: float, offset: float = 0.0) -> torch.Tensor:
    ys, xs = torch.meshgrid(torch.arange(offset, h, step), torch.arange(offset, w, step), indexing="ij")
    return torch.stack([xs.flatten(), ys.flatten()], -1).double()


def _homography(p: torch.Tensor) -> torch.Tensor:
    H = torch.tensor([[1.05, 0.08, 12.0], [-0.04, 0.97, -7.0], [2e-4, 1e-4, 1.0]], dtype=p.dtype)
    q = torch.cat([p, torch.ones_like(p[:, :1])], -1) @ H.T
    return q[:, :2] / q[:, 2:]


def test_fit_recovers_a_global_affine_map_exactly_also_leaving_one_out():
    k0 = _grid(128, 160, 4.0, 1.5)
    A = torch.tensor([[0.9, 0.2, 5.0], [-0.1, 1.1, -3.0]], dtype=k0.dtype)
    k1 = k0 @ A[:, :2].T + A[:, 2]
    b = torch.zeros(len(k0), dtype=torch.long)
    for loo in (False, True):
        fit = fit_local_affine(b, k0, k1, batch=1, grid=(16, 20), leave_one_out=loo)
        assert fit.ok.all()
        assert torch.allclose(fit.A, A.expand_as(fit.A), atol=1e-8)
    # the linear part, as the sub-pixel polish uses it
    assert torch.allclose(local_affine(b, k0, k1, batch=1, grid=(16, 20)), A[:, :2].expand(len(k0), 2, 2), atol=1e-8)


def test_batch_items_do_not_share_neighbourhoods():
    k0 = _grid(64, 64, 4.0, 1.5)
    shift = torch.tensor([3.0, -2.0], dtype=k0.dtype)
    kk0 = torch.cat([k0, k0])
    kk1 = torch.cat([k0 + shift, k0 - shift])  # same positions, opposite motions in the two items
    b = torch.cat([torch.zeros(len(k0)), torch.ones(len(k0))]).long()
    res = neighbourhood_residual(b, kk0, kk1, batch=2, grid=(8, 8))
    assert not res.isnan().any() and res.max() < 1e-6


def test_residual_flags_planted_outliers_in_a_homography_field():
    gen = torch.Generator().manual_seed(0)
    k0 = _grid(240, 320, 4.0, 1.5)
    k1 = _homography(k0) + 0.1 * torch.randn(k0.shape, generator=gen, dtype=k0.dtype)  # 0.1 px noise
    bad = torch.randperm(len(k0), generator=gen)[: len(k0) // 20]
    angle = torch.rand(len(bad), generator=gen, dtype=k0.dtype) * 2 * math.pi
    k1[bad] += 4.0 * torch.stack([angle.cos(), angle.sin()], -1)  # 4 px off
    b = torch.zeros(len(k0), dtype=torch.long)
    res = neighbourhood_residual(b, k0, k1, batch=1, grid=(30, 40))
    good = torch.ones(len(k0), dtype=torch.bool)
    good[bad] = False
    assert (res[bad] > 2.0).all()
    assert (res[good] < 1.0).float().mean() > 0.99
    # without the second pass the outliers drag their neighbours' fits: more good matches exceed 0.5 px
    one = neighbourhood_residual(b, k0, k1, batch=1, grid=(30, 40), passes=1)
    assert (one[good] > 0.5).sum() > (res[good] > 0.5).sum()


def test_isolated_matches_are_undetermined_and_sparse_ones_use_a_wider_reach():
    k0 = _grid(384, 384, 24.0, 3.5)  # one match every 3 cells
    k1 = _homography(k0)
    b = torch.zeros(len(k0), dtype=torch.long)
    near = neighbourhood_residual(b, k0, k1, batch=1, grid=(48, 48), reach=(1,), min_points=6)
    assert near.isnan().all()
    wide = neighbourhood_residual(b, k0, k1, batch=1, grid=(48, 48), reach=(1, 2, 4), min_points=6)
    interior = ((k0 > 64) & (k0 < 384 - 64)).all(-1)
    assert not wide[interior].isnan().any() and wide[interior].max() < 0.5
    lone = neighbourhood_residual(b[:1], k0[:1], k1[:1], batch=1, grid=(32, 32))
    assert lone.isnan().all()


def test_closed_form_singular_values_match_the_svd():
    m = torch.randn(1000, 2, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    m[0] = torch.tensor([[2.0, 4.0], [1.0, 2.0]])  # singular
    m[1] = torch.eye(2) * 3
    assert torch.allclose(svdvals2x2(m), torch.linalg.svdvals(m), atol=1e-6)


def test_no_matches():
    e = torch.zeros(0, 2)
    assert neighbourhood_residual(torch.zeros(0, dtype=torch.long), e, e, batch=1, grid=(4, 4)).shape == (0,)


def test_filter_raises_precision_on_middlebury(matcher):
    left, right, disp = data.stereo_motorcycle()
    unfiltered = IMAMatch.from_pretrained(neighbour_max_residual=None, subpixel_keep_unmoved=True)

    def precision(out):
        e = stereo_errors(out["keypoints0"], out["keypoints1"], disp)
        e = e[np.isfinite(e)]
        return np.mean(e < 1), np.mean(e < 3)

    with_filter, without = matcher.match(left, right), unfiltered.match(left, right)
    assert with_filter["num_disagreeing"] > 0 and without["num_disagreeing"] == 0
    assert len(without["keypoints0"]) > len(with_filter["keypoints0"]) > 1500
    (p1, p3), (q1, q3) = precision(with_filter), precision(without)
    assert p1 > q1 + 0.1 and p3 > q3 + 0.05, (p1, q1, p3, q3)


@pytest.mark.parametrize("reach", [(1,), (2, 4)])
def test_reach_is_configurable(reach):
    m = IMAMatch.from_pretrained(neighbour_reach=reach, resize=320)
    img = data.astronaut().mean(-1) / 255.0
    out = m.match(img, img)
    assert len(out["keypoints0"]) > 1000
    err = np.linalg.norm(out["keypoints1"] - out["keypoints0"], axis=1)
    # (image pixels, 1.6 per matching pixel at 320 px; the round-8 network leaves ~2 % at 1-2 px, round 3 ~1.4 %)
    assert np.median(err) < 0.1 and np.mean(err < 1.0) > 0.97 and np.mean(err < 2.0) > 0.995


@pytest.mark.parametrize("keep_isolated", [True, False])
def test_the_filter_drops_disagreeing_matches_and_keeps_isolated_ones_when_asked(keep_isolated):
    """A dense field on one surface with a planted outlier, and two lone matches far from it (a few matches on a
    second object): the outlier is dropped either way; the lone ones are kept only with
    ``neighbour_keep_isolated`` (the default: on wide-baseline pairs they are the few off-plane matches)."""
    from types import SimpleNamespace

    net = IMAMatch.from_pretrained(neighbour_keep_isolated=keep_isolated).net
    k0 = _grid(160, 160, 4.0, 2.0)
    k1 = _homography(k0)
    k1[50] += torch.tensor([6.0, -4.0])  # inside the field, off by 7 px
    lone0 = torch.tensor([[360.0, 300.0], [370.0, 352.0]], dtype=k0.dtype)
    k0, k1 = torch.cat([k0, lone0]), torch.cat([k1, lone0 + 30.0])
    b = torch.zeros(len(k0), dtype=torch.long)
    keep = torch.ones(len(k0), dtype=torch.bool)
    kept, dropped = net.agree(SimpleNamespace(grid0=(48, 48)), b, k0, k1, keep, batch=1)
    assert not kept[50] and kept[:50].all() and kept[51:-2].all()
    assert kept[-2:].tolist() == [keep_isolated] * 2 and int(dropped) == (1 if keep_isolated else 3)
