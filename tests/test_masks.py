"""Masks of where matches may lie (COLMAP's convention: nonzero pixels may be matched)."""

import cv2
import numpy as np
import pytest
from skimage import data

from imamatch import IMAMatch, ImageError
from imamatch.io import mask_cells, prepare, read_mask


def test_mask_cells_follow_the_mask_and_an_all_true_mask_keeps_every_cell():
    gray = np.zeros((100, 150), np.float32)  # 100 × 150 → cells of 13 × 19 with partial ones at the edges
    prep = prepare(gray, None, 32)
    assert np.array_equal(mask_cells(np.ones(gray.shape, bool), prep), prep.valid)
    left = np.zeros(gray.shape, bool)
    left[:, :60] = True
    cells = mask_cells(left, prep)[0]
    assert cells[:13, :7].all() and not cells[:, 8:].any()  # cell 7 spans x 56-63: 4 of its 8 columns in the mask
    assert not cells[13:].any()  # padding rows


def test_read_mask_takes_nonzero_as_matchable_and_checks_the_size(tmp_path):
    m = np.zeros((40, 60), np.uint8)
    m[:, :30] = 1  # 0/1 values: nonzero counts, as 0/255 would
    assert np.array_equal(read_mask(m, (40, 60), (40, 60)), m > 0)
    half = read_mask(m, (40, 60), (20, 30))
    assert half.shape == (20, 30) and half[:, :15].all() and not half[:, 15:].any()
    cv2.imwrite(str(tmp_path / "m.png"), m * 255)
    assert np.array_equal(read_mask(tmp_path / "m.png", (40, 60), (40, 60)), m > 0)
    with pytest.raises(ImageError, match="60×40 mask for a 61×40 image"):
        read_mask(m, (40, 61), (40, 61))


@pytest.fixture(scope="module")
def stereo():
    return data.stereo_motorcycle()


def test_all_true_masks_change_nothing(matcher, stereo):
    left, right, _ = stereo
    a = matcher.match(left, right)
    b = matcher.match(left, right, mask0=np.ones(left.shape[:2], bool), mask1=np.full(right.shape[:2], 255, np.uint8))
    for k in a:
        assert np.array_equal(a[k], b[k]), k


def test_matches_stay_on_the_masks_and_keep_their_precision(matcher, stereo):
    left, right, disp = stereo
    h, w = left.shape[:2]
    mask0 = np.zeros((h, w), bool)
    mask0[:, : w // 2] = True  # the left half of the left image
    mask1 = np.ones((h, w), bool)
    mask1[: h // 3] = False  # not the top third of the right image
    out = matcher.match(left, right, mask0=mask0, mask1=mask1)
    k0, k1 = out["keypoints0"], out["keypoints1"]
    assert len(k0) > 300
    assert (np.rint(k0[:, 0]) < w // 2).all() and (np.rint(k1[:, 1]) >= h // 3).all()
    d = disp[np.rint(k0[:, 1]).astype(int), np.rint(k0[:, 0]).astype(int)]
    ok = np.isfinite(d)
    err = np.hypot(k1[ok, 0] - (k0[ok, 0] - d[ok]), k1[ok, 1] - k0[ok, 1])
    assert np.mean(err < 1) > 0.82, np.mean(err < 1)  # as without masks (test_matcher's bound)


def test_masks_follow_image_1_through_its_turn(stereo):
    left, right, _ = stereo
    h, w = right.shape[:2]
    mask1 = np.ones((h, w), bool)
    mask1[:, : w // 2] = False  # the right image's left half is not to be matched
    turned = np.rot90(right, 1)
    out = IMAMatch.from_pretrained(rotations=4).match(left, turned, mask1=np.rot90(mask1, 1))
    assert out["rotation1"] == 270 and len(out["keypoints0"]) > 300
    k1 = out["keypoints1"]  # in the turned image: the masked half of the right image is its bottom half
    assert (np.rint(k1[:, 1]) < turned.shape[0] - w // 2).all()


def test_masks_follow_image_1_into_the_prealigned_pass(matcher, shared):
    img1, img5 = shared / "graf" / "img1.png", shared / "graf" / "img5.png"
    mask1 = np.ones((640, 800), bool)
    mask1[:, 400:] = False
    out = matcher.match(img1, img5, mask1=mask1)
    assert out["prealigned"] and len(out["keypoints0"]) > 300
    assert (np.rint(out["keypoints1"][:, 0]) < 400).all()


def test_match_many_checks_the_number_of_masks(matcher, stereo):
    left, right, _ = stereo
    with pytest.raises(ValueError):
        list(matcher.match_many(left, [right, right], masks1=[None]))
    with_masks = list(matcher.match_many(left, [right, right], masks1=[None, np.ones(right.shape[:2], bool)]))
    assert np.array_equal(with_masks[0]["keypoints1"], with_masks[1]["keypoints1"])


def test_a_mask_with_nothing_to_match_gives_no_matches_not_an_error(matcher, stereo):
    left, right, _ = stereo
    for masks in ({"mask0": np.zeros(left.shape[:2], bool)}, {"mask1": np.zeros(right.shape[:2], np.uint8)}):
        out = matcher.match(left, right, **masks)
        assert out["keypoints0"].shape == out["keypoints1"].shape == (0, 2) and len(out["confidence"]) == 0
