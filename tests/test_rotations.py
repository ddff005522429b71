"""Matching an image 1 that is turned by quarter turns (``MatcherConfig.rotations``)."""

import numpy as np
import pytest
from skimage import data

from imamatch import IMAMatch
from imamatch.api import unturn_points
from imamatch.config import MatcherConfig


@pytest.mark.parametrize("turns", [0, 1, 2, 3, 5])
def test_unturn_points_inverts_numpy_quarter_turns(turns):
    a = np.arange(5 * 7).reshape(5, 7)
    r = np.rot90(a, turns)
    ys, xs = np.mgrid[:r.shape[0], :r.shape[1]]
    p = unturn_points(np.c_[xs.ravel(), ys.ravel()], turns, a.shape)
    assert p.dtype == np.float32 and p.shape == (r.size, 2)
    x, y = p[:, 0].astype(int), p[:, 1].astype(int)
    assert np.array_equal(a[y, x], r.ravel())  # every pixel of the turned array found where it came from


def test_rotations_setting_is_checked():
    for bad in (0, 3, 8, True):
        with pytest.raises(ValueError, match="rotations"):
            MatcherConfig(rotations=bad)


def _disparity_precision(k0, k1, disp):
    xi, yi = np.round(k0[:, 0]).astype(int), np.round(k0[:, 1]).astype(int)
    d = disp[yi, xi]
    ok = np.isfinite(d)
    err = np.hypot(k1[ok, 0] - (k0[ok, 0] - d[ok]), k1[ok, 1] - k0[ok, 1])
    return float(np.mean(err < 1))


@pytest.fixture(scope="module")
def turning():
    return IMAMatch.from_pretrained(rotations=4)


@pytest.mark.parametrize("turns", [1, 2, 3])
def test_turned_image_is_matched_at_its_turn_as_if_upright(matcher, turning, turns):
    """The Middlebury pair with the right image turned: the upright matcher finds (almost) nothing, the turning
    one finds the turn that undoes it, and the upright pair's matches, in the turned image's pixels."""
    left, right, disp = data.stereo_motorcycle()
    turned = np.rot90(right, turns)
    upright = matcher.match(left, right)
    lost = matcher.match(left, turned)
    out = turning.match(left, turned)
    assert len(lost["keypoints0"]) < 50 and lost["rotation1"] == 0
    assert out["rotation1"] == 90 * ((4 - turns) % 4)
    k1 = unturn_points(out["keypoints1"], turns, right.shape)  # turned image's pixels → the right image's
    assert len(out["keypoints0"]) > 0.95 * len(upright["keypoints0"])
    assert _disparity_precision(out["keypoints0"], k1, disp) > 0.85
    h, w = turned.shape[:2]
    assert (out["keypoints1"] >= -0.5).all() and (out["keypoints1"] <= [w - 0.5, h - 0.5]).all()


def test_upside_down_only_with_two_rotations():
    left, right, _ = data.stereo_motorcycle()
    m = IMAMatch.from_pretrained(rotations=2)
    assert m.match(left, np.rot90(right, 2))["rotation1"] == 180
    assert m.match(left, np.rot90(right, 1))["rotation1"] in (0, 180)  # a quarter turn is not among its choices


def test_easy_upright_pair_is_untouched_by_the_rotation_search(matcher, turning):
    left, right, _ = data.stereo_motorcycle()
    a, b = matcher.match(left, right), turning.match(left, right)
    assert b["num_passes"] == 1 and b["rotation1"] == 0
    for k in a:
        assert np.array_equal(a[k], b[k]), k


def test_turns_are_searched_with_the_prealigned_passes_off_too():
    left, right, _ = data.stereo_motorcycle()
    out = IMAMatch.from_pretrained(rotations=4, prealign_below=None).match(left, np.rot90(right, 1))
    assert out["rotation1"] == 270 and len(out["keypoints0"]) > 1000
