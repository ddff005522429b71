"""A miniature ScanNet room for tests: a ray-cast room of textured planes with an occluding box, seen by a camera
with fx ≠ fy and an off-centre principal point from three poses, written in ScanNet's exact on-disk formats, and
the exact projection of its pixels between frames (the truth the readers and the supervision are checked against).
"""

from pathlib import Path

import cv2
import numpy as np
from skimage import data

W, H = 160, 120
K = np.array([[144.0, 0, 80.3], [0, 145.5, 59.7], [0, 0, 1]])  # fx ≠ fy, off-centre: catches swapped axes
SCENE = "scene0707_00"
FRAMES = (0, 15, 45)
PAIRS = ((0, 15), (0, 45), (15, 45))


def rotation(yaw: float, pitch: float) -> np.ndarray:
    cy, sy, cp, sp = np.cos(yaw), np.sin(yaw), np.cos(pitch), np.sin(pitch)
    return np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]]) @ np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])


def camera_to_world(frame: int) -> np.ndarray:
    """Camera-to-world (OpenCV axes: x right, y down, z forwards; the world's y points down too)."""
    k = FRAMES.index(frame)
    P = np.eye(4)
    P[:3, :3] = rotation(np.radians((-6, 5, 12)[k]), np.radians((0, -4, 3)[k]))
    P[:3, 3] = ((0.0, 0.0, 0.0), (0.35, -0.08, 0.15), (0.7, 0.05, -0.1))[k]
    return P


# planes: (origin, in-plane axis a, in-plane axis b, half extents, texture)
def room_planes() -> list:
    texs = [cv2.resize(img, (256, 256)) for img in
            (data.astronaut().mean(-1).astype(np.uint8), data.coffee().mean(-1).astype(np.uint8),
             data.chelsea().mean(-1).astype(np.uint8), data.rocket().mean(-1).astype(np.uint8))]
    x, y, z = np.eye(3)
    return [(np.array([0.0, 0, 4]), x, y, (6.0, 6.0), texs[0]),      # back wall z = 4
            (np.array([0.0, 1.2, 2]), x, z, (6.0, 4.0), texs[1]),    # floor y = 1.2
            (np.array([-2.0, 0, 2]), z, y, (4.0, 6.0), texs[2]),     # left wall x = -2
            (np.array([0.1, -0.1, 2.4]), x, y, (0.35, 0.3), texs[3])]  # a box face in front of the wall


def ray_cast(c2w: np.ndarray, pts: np.ndarray, planes: list) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ray-cast pixels ``pts`` (N, 2): camera depth (z) of the nearest surface, its intensity, and which plane."""
    R, c = c2w[:3, :3], c2w[:3, 3]
    rays = (np.c_[pts, np.ones(len(pts))] @ np.linalg.inv(K).T) @ R.T  # world directions with camera z = 1
    depth = np.full(len(pts), np.inf)
    val = np.zeros(len(pts), np.float32)
    which = np.full(len(pts), -1)
    for k, (o, a, b, (ea, eb), tex) in enumerate(planes):
        n = np.cross(a, b)
        with np.errstate(divide="ignore", invalid="ignore"):
            s = ((o - c) @ n) / (rays @ n)
        X = c + s[:, None] * rays
        la, lb = (X - o) @ a, (X - o) @ b
        hit = (s > 1e-6) & (np.abs(la) <= ea) & (np.abs(lb) <= eb) & (s < depth)
        u = ((la / ea + 1) * 0.5 * 255).astype(np.float32)[:, None]
        v = ((lb / eb + 1) * 0.5 * 255).astype(np.float32)[:, None]
        t = cv2.remap(tex, u, v, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)[:, 0]
        depth, val, which = np.where(hit, s, depth), np.where(hit, t, val), np.where(hit, k, which)
    return depth, val, which


def pixel_grid() -> np.ndarray:
    u, v = np.meshgrid(np.arange(W, dtype=np.float64), np.arange(H, dtype=np.float64))
    return np.c_[u.ravel(), v.ravel()]


def project(p0: np.ndarray, f0: int, f1: int, planes: list) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The test's own truth for pixels ``p0`` of frame ``f0``: their position in frame ``f1``, whether they are
    visible there (inside, and the surface camera 1 sees there is this point's), and whether that is clear-cut
    (no other surface within 1.5 px of the point in either image)."""
    c2w0, w2c1 = camera_to_world(f0), np.linalg.inv(camera_to_world(f1))
    d0, _, s0 = ray_cast(c2w0, p0, planes)
    X0 = np.c_[p0, np.ones(len(p0))] @ np.linalg.inv(K).T * d0[:, None]
    X1 = (X0 @ c2w0[:3, :3].T + c2w0[:3, 3]) @ w2c1[:3, :3].T + w2c1[:3, 3]
    p1 = X1[:, :2] / X1[:, 2:] * K[[0, 1], [0, 1]] + K[:2, 2]
    inside = (X1[:, 2] > 0) & np.all((p1 > -0.5) & (p1 < np.array([W, H]) - 0.5), 1)
    ring = [np.zeros(2)] + [np.array(o) for o in ((-1.5, -1.5), (1.5, 1.5), (-1.5, 1.5), (1.5, -1.5))]
    seen1 = np.stack([ray_cast(camera_to_world(f1), p1 + o, planes)[2] for o in ring])
    seen0 = np.stack([ray_cast(c2w0, p0 + o, planes)[2] for o in ring])
    clear = (seen1 == seen1[0]).all(0) & (seen0 == s0).all(0)
    return p1, inside & (seen1[0] == s0), clear | ~inside


def write_scene(scene: Path, planes: list) -> None:
    """The frames ``FRAMES`` of the room in ScanNet's formats under the scene folder ``scene``: ``color/N.jpg``,
    ``depth/N.png`` (uint16 millimetres), ``pose/N.txt`` (camera-to-world)."""
    for sub in ("color", "depth", "pose"):
        (scene / sub).mkdir(parents=True)
    for f in FRAMES:
        depth, val, _ = ray_cast(camera_to_world(f), pixel_grid(), planes)
        assert np.isfinite(depth).all()
        gray = val.reshape(H, W).astype(np.uint8)
        cv2.imwrite(str(scene / "color" / f"{f}.jpg"), cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR),
                    [cv2.IMWRITE_JPEG_QUALITY, 95])
        cv2.imwrite(str(scene / "depth" / f"{f}.png"), np.round(depth.reshape(H, W) * 1000).astype(np.uint16))
        np.savetxt(scene / "pose" / f"{f}.txt", camera_to_world(f), fmt="%.9f")


def assert_warp_is_exact(item: dict, f0: int, f1: int, planes: list, s: float = 1.0) -> tuple:
    """Check the depth transfer 0→1 of a DepthPairs ``item`` (images resized by ``s``) against :func:`project`
    at original pixel centres, where the depth is exact; returns the transfers (0→1, 1→0)."""
    import torch

    from imamatch.train.trainer import make_transfers

    fwd, bwd = make_transfers({key: v[None] for key, v in item.items()})
    p0 = pixel_grid()[::7]
    q0 = torch.from_numpy((p0 + 0.5) * s - 0.5).float()
    q1, ok = fwd(q0, torch.zeros(len(q0), dtype=torch.long))
    p1, visible, clear = project(p0, f0, f1, planes)
    got = (q1.double().numpy() + 0.5) / s - 0.5  # back to original pixels
    assert clear.mean() > 0.8 and visible.sum() > 100 and (~visible & clear).sum() > 20
    np.testing.assert_allclose(got[visible], p1[visible], atol=0.02)
    assert np.array_equal(ok.numpy()[clear], visible[clear])
    return fwd, bwd
