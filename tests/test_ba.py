"""Two-view bundle adjustment: accuracy on synthetic scenes with exact ground truth, convergence, gradients,
degenerate input."""

import cv2
import numpy as np
import pytest
import torch

from imamatch.ba import bundle_adjust, so3_exp
from imamatch.eval.metrics import rotation_error_deg, translation_error_deg
from imamatch.pose import estimate_relative_pose, normalize_points

K = np.array([[500.0, 0, 320], [0, 500, 240], [0, 0, 1]])


def scene(rng, n=300, noise=0.5, outliers=0.2, planar=False, baseline=1.0):
    X = np.c_[rng.uniform(-2, 2, n), rng.uniform(-1.5, 1.5, n), 6.0 * np.ones(n) if planar else rng.uniform(4, 10, n)]
    R, _ = cv2.Rodrigues(rng.normal(0, 0.15, 3))
    t = baseline * (np.array([1, 0.1, 0.2]) + rng.normal(0, 0.2, 3))
    X1 = X @ R.T + t
    p0 = X[:, :2] / X[:, 2:] * 500 + [320, 240] + rng.normal(0, noise, (n, 2))
    p1 = X1[:, :2] / X1[:, 2:] * 500 + [320, 240] + rng.normal(0, noise, (n, 2))
    k = int(outliers * n)
    p1[:k] = rng.uniform(0, 640, (k, 2))
    return p0, p1, R, t / max(np.linalg.norm(t), 1e-12)


def err(est, R, t):
    return max(rotation_error_deg(est.R, R), translation_error_deg(est.t, t))


def test_ba_lowers_pose_error_with_outliers():
    rng = np.random.default_rng(0)
    e_ransac, e_ba, e_poselib, e_poselib_ba = [], [], [], []
    for _ in range(12):
        p0, p1, R, t = scene(rng)
        e_ransac.append(err(estimate_relative_pose(p0, p1, K, K, refine=False, method="magsac"), R, t))
        est = estimate_relative_pose(p0, p1, K, K, refine=True, method="magsac")
        assert est.success
        e_ba.append(err(est, R, t))
        e_poselib.append(err(estimate_relative_pose(p0, p1, K, K, refine=False), R, t))  # refines on its own
        e_poselib_ba.append(err(estimate_relative_pose(p0, p1, K, K, refine=True), R, t))
    assert np.median(e_ba) < 0.7 * np.median(e_ransac), (np.median(e_ba), np.median(e_ransac))
    assert np.median(e_poselib) < 0.7 * np.median(e_ransac), (np.median(e_poselib), np.median(e_ransac))
    assert np.median(e_poselib_ba) < 1.1 * np.median(e_poselib), (np.median(e_poselib_ba), np.median(e_poselib))


def test_converges_from_perturbed_start():
    rng = np.random.default_rng(1)
    p0, p1, R, t = scene(rng, noise=0.3, outliers=0.0)
    x0 = torch.as_tensor(normalize_points(p0, K))[None]
    x1 = torch.as_tensor(normalize_points(p1, K))[None]
    R0 = torch.as_tensor(R)[None] @ so3_exp(torch.tensor([[0.03, -0.04, 0.02]], dtype=torch.float64))
    t0 = torch.as_tensor(t)[None] + torch.tensor([[0.0, 0.15, -0.1]], dtype=torch.float64)
    res = bundle_adjust(x0, x1, R0, t0, iters=30)
    assert rotation_error_deg(R0[0].numpy(), R) > 2.5
    assert rotation_error_deg(res.R[0].numpy(), R) < 0.2
    assert translation_error_deg(res.t[0].numpy(), t) < 0.5
    assert res.cost[0] < 0.05 * res.initial_cost[0]


def test_batched_equals_single():
    rng = np.random.default_rng(2)
    items = [scene(rng, n=60, outliers=0.0) for _ in range(2)]
    x0 = torch.stack([torch.as_tensor(normalize_points(p0, K)) for p0, _, _, _ in items])
    x1 = torch.stack([torch.as_tensor(normalize_points(p1, K)) for _, p1, _, _ in items])
    R = torch.stack([torch.as_tensor(r) for _, _, r, _ in items])
    t = torch.stack([torch.as_tensor(tt) for _, _, _, tt in items])
    both = bundle_adjust(x0, x1, R, t, iters=5)
    one = bundle_adjust(x0[1:], x1[1:], R[1:], t[1:], iters=5)
    torch.testing.assert_close(both.R[1:], one.R)
    torch.testing.assert_close(both.t[1:], one.t)


def test_gradcheck_keypoints_and_confidences():
    rng = np.random.default_rng(3)
    p0, p1, R, t = scene(rng, n=8, noise=0.5, outliers=0.0)
    x0 = torch.as_tensor(normalize_points(p0, K))[None].requires_grad_()
    x1 = torch.as_tensor(normalize_points(p1, K))[None].requires_grad_()
    w = torch.rand(1, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0)).add(0.5).requires_grad_()
    R0, t0 = torch.as_tensor(R)[None], torch.as_tensor(t)[None]

    def f(a, b, c):
        r = bundle_adjust(a, b, R0, t0, c, iters=3, robust="none")
        return torch.cat([r.R.flatten(), r.t.flatten()])

    assert torch.autograd.gradcheck(f, (x0, x1, w), eps=1e-7, atol=1e-5)


@pytest.mark.parametrize("case", ["few", "pure_rotation", "planar", "identical", "nan"])
def test_degenerate_input_is_well_defined(case):
    rng = np.random.default_rng(4)
    if case == "few":
        p0, p1, _, _ = scene(rng, n=5, outliers=0.0)
    elif case == "pure_rotation":
        p0, p1, _, _ = scene(rng, outliers=0.0, baseline=0.0)
    elif case == "planar":
        p0, p1, _, _ = scene(rng, outliers=0.0, planar=True)
    elif case == "identical":
        p0 = np.tile([[100.0, 120.0]], (50, 1))
        p1 = p0.copy()
    else:
        p0, p1, _, _ = scene(rng, outliers=0.0)
        p0[::3] = np.nan
    est = estimate_relative_pose(p0, p1, K, K)
    assert np.isfinite(est.R).all() and np.isfinite(est.t).all()
    assert est.inliers.shape == (len(p0),)
    if case in ("few", "identical"):
        assert not est.success
    if est.success:
        np.testing.assert_allclose(est.R @ est.R.T, np.eye(3), atol=1e-6)
        assert abs(np.linalg.norm(est.t) - 1) < 1e-6


def test_pose_loss_gradients_reach_keypoints_and_confidences():
    from imamatch.train.losses import pose_loss

    rng = np.random.default_rng(5)
    p0, p1, R, t = scene(rng, n=40, noise=1.0, outliers=0.1)
    k0 = torch.as_tensor(p0)[None].requires_grad_()
    k1 = torch.as_tensor(p1)[None].requires_grad_()
    conf = torch.ones(1, 40, dtype=torch.float64, requires_grad=True)
    Kt = torch.as_tensor(K)[None]
    loss = pose_loss(k0, k1, conf, Kt, Kt, torch.as_tensor(R)[None], torch.as_tensor(t)[None])
    loss.backward()
    assert loss.item() > 0 and torch.isfinite(k1.grad).all() and conf.grad.abs().sum() > 0
    # lowering the weight of the outliers (the first 4 matches) lowers the loss
    with torch.no_grad():
        w = torch.ones(1, 40, dtype=torch.float64)
        w[0, :4] = 1e-3
        better = pose_loss(k0, k1, w, Kt, Kt, torch.as_tensor(R)[None], torch.as_tensor(t)[None])
    assert better < loss


@pytest.mark.parametrize("method", ["poselib", "magsac", "ransac"])
def test_every_estimator_recovers_the_pose_convention(method):
    rng = np.random.default_rng(5)
    p0, p1, R, t = scene(rng, noise=0.3, outliers=0.3)
    est = estimate_relative_pose(p0, p1, K, K, refine=False, method=method)
    assert est.success and err(est, R, t) < 1.0  # x1 = R x0 + t with unit t
    assert est.inliers[:90].mean() < 0.1 and est.inliers[90:].mean() > 0.9  # the first 30 % are outliers
    again = estimate_relative_pose(p0, p1, K, K, refine=False, method=method)
    np.testing.assert_array_equal(again.R, est.R)  # deterministic
    with pytest.raises(ValueError, match="unknown pose method"):
        estimate_relative_pose(p0, p1, K, K, method="lmeds")


def test_planar_scenes_are_flagged():
    """A plane (or no baseline) leaves the relative pose ambiguous; a 3-D scene does not."""
    rng = np.random.default_rng(3)
    for planar in (False, True):
        for _ in range(4):
            p0, p1, _, _ = scene(rng, planar=planar, outliers=0.3)
            est = estimate_relative_pose(p0, p1, K, K, threshold_px=1.0, refine=False)
            assert est.success and est.planar == planar
    p0, p1, _, _ = scene(rng, baseline=1e-6)  # pure rotation: one homography maps everything
    assert estimate_relative_pose(p0, p1, K, K, threshold_px=1.0).planar
