"""The homography that pre-aligns hard pairs for a second matching pass (imamatch.api.prealign_homography)."""

import numpy as np
import pytest

from imamatch.api import prealign_homography


def _project(H, pts):
    p = np.c_[pts, np.ones(len(pts))] @ H.T
    return p[:, :2] / p[:, 2:]


@pytest.fixture
def points():
    return np.random.default_rng(0).uniform([0, 0], [640, 480], (200, 2))


def test_recovers_the_homography_despite_outliers(points):
    H = np.array([[0.8, 0.2, 30], [-0.1, 0.9, 12], [3e-4, -2e-4, 1]])
    k1 = _project(H, points)
    k1[:60] = np.random.default_rng(1).uniform([0, 0], [640, 480], (60, 2))  # 30 % wrong
    est = prealign_homography(points, k1, (480, 640), threshold_px=3.0)
    assert est is not None
    np.testing.assert_allclose(_project(est / est[2, 2], points[60:]), k1[60:], atol=1e-3)


def test_refuses_too_few_inliers_and_folds(points):
    H = np.array([[1.0, 0, 5], [0, 1.0, -3], [0, 0, 1]])
    assert prealign_homography(points[:7], _project(H, points[:7]), (480, 640), 3.0) is None  # < 8 inliers
    fold = np.array([[1.0, 0, 0], [0, 1.0, 0], [-4e-3, 0, 1]])  # the horizon crosses image 0 at x = 250
    inside = points[:, 0] < 200
    assert prealign_homography(points[inside], _project(fold, points[inside]), (480, 640), 3.0) is None


def test_accepts_a_horizon_that_cuts_a_corner_and_masks_what_lies_behind(points):
    """The horizon of ``H`` crosses image 0 at x = 600 (94 % of it in front): the homography is kept (its sign
    fixed so that the matches lie in front), and :func:`front_mask` marks exactly the columns behind."""
    from imamatch.api import front_mask

    H = np.array([[1.0, 0, 0], [0, 1.0, 0], [-1 / 600, 0, 1]])
    inside = points[:, 0] < 500
    est = prealign_homography(points[inside], _project(H, points[inside]), (480, 640), 3.0)
    assert est is not None
    np.testing.assert_allclose(est / est[2, 2], H, atol=1e-4)
    mask = front_mask(est, (480, 640))
    assert mask.shape == (480, 640) and mask[:, :600].all() and not mask[:, 601:].any()
    neg = prealign_homography(points[inside], _project(-H, points[inside]), (480, 640), 3.0)
    assert (np.c_[points[inside], np.ones(inside.sum())] @ neg[2] > 0).all()  # same sign whatever the fit's
    assert front_mask(np.eye(3), (480, 640)) is None  # all in front: nothing to mask


def test_covered_cells_follow_the_homography_and_the_horizon():
    """Image 1 warped onto image 0 by a shift of 160 working pixels (20 cells): the last 20 columns of cells show
    nothing, whatever the arrays' size. Under a homography whose horizon crosses image 0 at x = 400, image 1
    covers the convex region x ≤ 639.5 d, y ≤ 479.5 d (d = 1 - x/400): cells inside it are covered, cells
    outside one of its sides are not, and neither are padded ones."""
    from imamatch.api import covered_cells
    from imamatch.io import prepare

    for scale in (1, 2):  # arrays at the working size and at twice it
        shape = (480 * scale, 640 * scale)
        shift = np.array([[1.0, 0, 160 * scale], [0, 1.0, 0], [0, 0, 1]])
        cells = covered_cells(shift, shape, prepare(np.zeros(shape, np.float32), 640, 32))
        assert cells.shape == (1, 60, 80) and cells[0, :, :60].all() and not cells[0, :, 60:].any()
    horizon = np.array([[1.0, 0, 0], [0, 1.0, 0], [-1 / 400, 0, 1]])
    cells = covered_cells(horizon, (480, 640), prepare(np.zeros((470, 640), np.float32), None, 32))[0].numpy()
    assert cells.shape == (60, 80) and not cells[59].any()  # 470 rows padded to 480: the last row of cells
    ys, xs = np.mgrid[0:8 * 59 + 1:8, 0:641:8] - 0.5  # cell corners, array pixels
    d = 1 - xs / 400
    sides = [xs <= 639.5 * d, ys <= 479.5 * d, d > 0]
    corners = [lambda m: m[:-1, :-1], lambda m: m[1:, :-1], lambda m: m[:-1, 1:], lambda m: m[1:, 1:]]
    inside = np.logical_and.reduce([c(s) for s in sides for c in corners])
    outside = np.logical_or.reduce([np.logical_and.reduce([~c(s) for c in corners]) for s in sides])
    rows = slice(0, 58)  # row 58 is partly padding
    assert inside[rows].sum() > 300 and outside[rows].sum() > 2000
    assert cells[rows][inside[rows]].all() and not cells[rows][outside[rows]].any()
