"""Ground truth from homographies, and the synthetic pairs' convention, checked numerically."""

import numpy as np
import torch

from imamatch.data.synthetic import WarpConfig, make_pair
from imamatch.train.supervision import coarse_truth, homography_transfer, inverse_homography_transfer


def _truth(H, grid=(4, 5)):
    H = torch.as_tensor(H, dtype=torch.float64)[None]
    return coarse_truth(homography_transfer(H), inverse_homography_transfer(H), 1, grid, grid)


def test_identity_matches_every_cell():
    gt = _truth(np.eye(3))
    assert torch.equal(gt.i0, torch.arange(20)) and torch.equal(gt.i1, gt.i0)


def test_translation_by_one_cell():
    H = np.array([[1, 0, 8.0], [0, 1, 0], [0, 0, 1]])
    gt = _truth(H)
    assert len(gt.i0) == 4 * 4  # the last column leaves the image
    assert torch.equal(gt.i1, gt.i0 + 1)


def test_synthetic_pair_homography_maps_pixels():
    rng = np.random.default_rng(3)
    import cv2

    noise = cv2.GaussianBlur(rng.uniform(0, 255, (400, 400)).astype(np.float32), (0, 0), 2.0)
    src = cv2.normalize(noise, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    cfg = WarpConfig(size=128, max_blur=0.0, max_noise=0.0)
    img0, img1, H = make_pair(rng, src, cfg)
    warped = cv2.warpPerspective(img0, H, (128, 128), flags=cv2.INTER_LINEAR)
    inside = cv2.warpPerspective(np.ones_like(img0), H, (128, 128)) > 0.999
    inside &= cv2.erode(inside.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    assert inside.sum() > 500
    corr = np.corrcoef(warped[inside], img1[inside])[0, 1]
    assert corr > 0.97, corr
    # a one-pixel error in the convention would show: the shifted version correlates clearly worse
    shifted = np.corrcoef(np.roll(warped, 2, axis=1)[inside], img1[inside])[0, 1]
    assert shifted < corr - 0.2
