"""Depth + pose supervision checked against the exact plane-induced homography."""

import numpy as np
import torch

from imamatch.train.supervision import coarse_truth, depth_transfer, homography_transfer

K = torch.tensor([[200.0, 0, 79.5], [0, 200, 63.5], [0, 0, 1]], dtype=torch.float64)


def _plane_scene():
    """Plane z = 4 in camera 0; camera 1 rotated and shifted. Returns depths, T, and the true homography."""
    ang = 0.1
    R = torch.tensor([[np.cos(ang), 0, np.sin(ang)], [0, 1, 0], [-np.sin(ang), 0, np.cos(ang)]], dtype=torch.float64)
    t = torch.tensor([0.3, 0.05, 0.1], dtype=torch.float64)
    T = torch.eye(4, dtype=torch.float64)
    T[:3, :3], T[:3, 3] = R, t
    h, w = 128, 160
    depth0 = torch.full((h, w), 4.0, dtype=torch.float64)
    # depth of the plane seen from camera 1: plane n·X0 = 4 with n = (0, 0, 1); X0 = Rᵀ(X1 - t)
    n1 = R @ torch.tensor([0.0, 0, 1], dtype=torch.float64)  # plane normal in camera 1
    d1 = 4.0 + n1 @ t                                        # plane: n1·X1 = d1
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    rays = torch.stack([xs, ys, torch.ones_like(xs)], -1) @ torch.linalg.inv(K).T
    depth1 = d1 / (rays @ n1)
    Hmat = K @ (R + torch.outer(t, torch.tensor([0.0, 0, 1], dtype=torch.float64)) / 4.0) @ torch.linalg.inv(K)
    return depth0[None], depth1[None], T[None], Hmat[None]


def test_depth_transfer_equals_plane_homography():
    d0, d1, T, H = _plane_scene()
    f = depth_transfer(d0, d1, K[None], K[None], T)
    pts = torch.tensor([[10.0, 20.0], [80.0, 64.0], [150.0, 100.0]], dtype=torch.float64)
    b = torch.zeros(3, dtype=torch.long)
    p1, ok = f(pts, b)
    ph, _ = homography_transfer(H)(pts, b)
    inside = (ph[:, 0] >= 0) & (ph[:, 0] < 160) & (ph[:, 1] >= 0) & (ph[:, 1] < 128)
    torch.testing.assert_close(p1, ph)
    assert torch.equal(ok, inside)


def test_occlusion_is_rejected_by_depth_consistency():
    d0, d1, T, _ = _plane_scene()
    d1 = d1.clone()
    d1[:, :, :80] *= 0.5  # something closer covers the left half of image 1
    f = depth_transfer(d0, d1, K[None], K[None], T)
    p1, ok = f(torch.tensor([[10.0, 60.0], [90.0, 60.0]], dtype=torch.float64), torch.zeros(2, dtype=torch.long))
    assert p1[0, 0] < 80 and not ok[0]
    assert p1[1, 0] >= 80 and ok[1]


def test_coarse_truth_from_depth_matches_homography_truth():
    d0, d1, T, H = _plane_scene()
    Tinv = torch.linalg.inv(T)
    gd = coarse_truth(depth_transfer(d0, d1, K[None], K[None], T), depth_transfer(d1, d0, K[None], K[None], Tinv),
                      1, (16, 20), (16, 20))
    gh = coarse_truth(homography_transfer(H), homography_transfer(torch.linalg.inv(H)), 1, (16, 20), (16, 20))
    a = set(zip(gd.i0.tolist(), gd.i1.tolist()))
    b = set(zip(gh.i0.tolist(), gh.i1.tolist()))
    assert len(a) > 100 and len(a ^ b) <= 0.02 * len(b)  # equal up to cells on the rounding boundary
