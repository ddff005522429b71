"""Photometric sub-pixel polish: exact sub-pixel shifts and affine warps of an analytic texture."""

import math

import torch

from imamatch.neighbourhood import local_affine
from imamatch.subpixel import polish_matches

H, W = 96, 128


def texture(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """A smooth, aperiodic-looking texture in [0, 1], evaluated exactly at any real position."""
    v = torch.zeros_like(x)
    for k, (fx, fy, ph) in enumerate([(0.31, 0.17, 0.3), (-0.23, 0.41, 1.1), (0.13, -0.29, 2.0), (0.47, 0.07, 0.7)]):
        v = v + torch.sin(fx * x + fy * y + ph) / (k + 1)
    return 0.5 + 0.2 * v


def render(affine: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Image 1 such that image-0 point p appears at ``affine @ p + shift``: ``(1, 1, H, W)``."""
    ys, xs = torch.meshgrid(torch.arange(H, dtype=torch.float32), torch.arange(W, dtype=torch.float32),
                            indexing="ij")
    inv = torch.linalg.inv(affine)
    p = torch.stack([xs - shift[0], ys - shift[1]], -1) @ inv.T
    return texture(p[..., 0], p[..., 1])[None, None]


def image0() -> torch.Tensor:
    ys, xs = torch.meshgrid(torch.arange(H, dtype=torch.float32), torch.arange(W, dtype=torch.float32),
                            indexing="ij")
    return texture(xs, ys)[None, None]


def points(n: int = 200, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 2, generator=g) * torch.tensor([W - 40.0, H - 40.0]) + 20


def test_subpixel_shift_is_recovered():
    shift = torch.tensor([3.37, -1.62])
    k0 = points()
    truth = k0 + shift
    g = torch.Generator().manual_seed(1)
    start = truth + (torch.rand(len(k0), 2, generator=g) - 0.5) * 2.4  # up to 1.2 px off in x and y
    out = polish_matches(image0(), render(torch.eye(2), shift), torch.zeros(len(k0), dtype=torch.long), k0, start,
                         radius=3, iters=5, max_shift=3.0)
    err = (out.keypoints1 - truth).norm(dim=-1)
    assert out.moved.float().mean() > 0.95
    assert err.median() < 0.02 and err.quantile(0.95) < 0.1 and err.max() < 0.3, (err.median(), err.max())
    assert (out.ncc > 0.99).all()


def test_affine_warp_is_followed_when_given():
    angle, scale = math.radians(25), 1.3
    affine = scale * torch.tensor([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    shift = torch.tensor([-10.0, 4.0])
    k0 = points(seed=2)
    truth = k0 @ affine.T + shift
    inside = (truth[:, 0] > 12) & (truth[:, 0] < W - 12) & (truth[:, 1] > 12) & (truth[:, 1] < H - 12)
    k0, truth = k0[inside], truth[inside]
    start = truth + torch.tensor([0.8, -0.6])
    b = torch.zeros(len(k0), dtype=torch.long)
    img1 = render(affine, shift)
    warped = polish_matches(image0(), img1, b, k0, start, max_shift=3.0, affine=affine.expand(len(k0), 2, 2))
    plain = polish_matches(image0(), img1, b, k0, start, max_shift=3.0)
    err_warped = (warped.keypoints1 - truth).norm(dim=-1)
    err_plain = (plain.keypoints1 - truth).norm(dim=-1)
    assert err_warped.median() < 0.05, err_warped.median()
    assert err_warped.median() < err_plain.median()


def test_flat_patches_and_far_moves_are_left_alone():
    flat = torch.full((1, 1, H, W), 0.5)
    k0 = points(50)
    out = polish_matches(flat, flat, torch.zeros(50, dtype=torch.long), k0, k0 + 0.7)
    assert not out.moved.any()
    torch.testing.assert_close(out.keypoints1, k0 + 0.7)
    # a start 4 px from the truth: the polish may not travel that far, so the match stays where it was
    shift = torch.tensor([2.0, 1.0])
    start = k0 + shift + torch.tensor([4.0, 0.0])
    out = polish_matches(image0(), render(torch.eye(2), shift), torch.zeros(50, dtype=torch.long), k0, start,
                         max_shift=1.5)
    moved = (out.keypoints1 - start).norm(dim=-1)
    assert (moved[out.moved] <= 1.5 + 1e-5).all() and (moved[~out.moved] == 0).all()


def test_local_affine_recovers_a_known_map():
    a = torch.tensor([[1.2, 0.1], [-0.05, 0.9]])
    ys, xs = torch.meshgrid(torch.arange(4.0, 120, 4), torch.arange(4.0, 160, 4), indexing="ij")
    k0 = torch.stack([xs.flatten(), ys.flatten()], -1)
    k1 = k0 @ a.T + torch.tensor([5.0, -3.0])
    b = torch.zeros(len(k0), dtype=torch.long)
    est = local_affine(b, k0, k1, batch=1, grid=(16, 20))
    torch.testing.assert_close(est, a.expand_as(est), atol=1e-4, rtol=0)
    # a lone match has no neighbourhood to fit: identity
    lone = local_affine(b[:1], k0[:1], k1[:1], batch=1, grid=(16, 20))
    torch.testing.assert_close(lone, torch.eye(2)[None])


def test_polish_is_differentiable_in_the_images():
    shift = torch.tensor([1.3, 0.4])
    k0 = points(20)
    img1 = render(torch.eye(2), shift).requires_grad_()
    out = polish_matches(image0(), img1, torch.zeros(20, dtype=torch.long), k0, k0 + shift + 0.5, max_shift=3.0)
    out.keypoints1.sum().backward()
    assert img1.grad is not None and img1.grad.abs().sum() > 0


def test_closed_form_2x2_solve_equals_linalg_solve():
    from imamatch.subpixel import solve_2x2

    g = torch.Generator().manual_seed(3)
    m = torch.randn(500, 2, 2, dtype=torch.float64, generator=g)
    a = m @ m.transpose(1, 2)  # symmetric positive semi-definite, as the Gauss–Newton matrices
    damp = torch.rand(500, dtype=torch.float64, generator=g) * 1e-2 + 1e-6
    rhs = torch.randn(500, 2, dtype=torch.float64, generator=g)
    expect = torch.linalg.solve(a + damp[:, None, None] * torch.eye(2, dtype=torch.float64), rhs)
    torch.testing.assert_close(solve_2x2(a, damp, rhs), expect, rtol=1e-8, atol=1e-10)


def test_settled_matches_stop_early_and_land_where_the_full_iterations_do():
    shift = torch.tensor([2.21, 0.83])
    k0 = points(seed=3)
    truth = k0 + shift
    g = torch.Generator().manual_seed(2)
    start = truth + (torch.rand(len(k0), 2, generator=g) - 0.5) * 2.0
    start[:5] = truth[:5]  # already exact: their first step is ~0, they settle at once
    b = torch.zeros(len(k0), dtype=torch.long)
    full = polish_matches(image0(), render(torch.eye(2), shift), b, k0, start, iters=6)
    early = polish_matches(image0(), render(torch.eye(2), shift), b, k0, start, iters=6, settled=0.01)
    assert (early.moved[5:] == full.moved[5:]).all()  # (the exact ones gain nothing but rounding either way)
    assert (early.keypoints1 - full.keypoints1)[5:].abs().max() < 0.02
    assert (early.keypoints1 - truth).norm(dim=-1).median() < 0.02
    # settled 0 stops only matches whose step was exactly zero: the same positions as every step for all
    none = polish_matches(image0(), render(torch.eye(2), shift), b, k0, start, iters=6, settled=0.0)
    torch.testing.assert_close(none.keypoints1, full.keypoints1)
