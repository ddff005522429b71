"""A miniature ScanNet written in the exact on-disk formats (``color/N.jpg``, ``depth/N.png`` uint16 millimetres,
``pose/N.txt`` camera-to-world, ``intrinsics.npz``, ``test.npz``) from a ray-cast room of textured planes with
an occluding box: the project's readers and depth supervision checked against the test's own projection, and
``imamatch eval scannet1500`` run end to end on it."""

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from skimage import data

from imamatch.data.depth_pairs import DepthPairs, scannet_scene_pairs
from imamatch.data.standard import scannet_pairs
from imamatch.errors import DataError
from imamatch.train.supervision import coarse_truth
from imamatch.train.trainer import make_transfers

W, H = 160, 120
K = np.array([[144.0, 0, 80.3], [0, 145.5, 59.7], [0, 0, 1]])  # fx ≠ fy, off-centre: catches swapped axes
SCENE = "scene0707_00"
FRAMES = (0, 15, 45)
PAIRS = ((0, 15), (0, 45), (15, 45))


def _rot(yaw: float, pitch: float) -> np.ndarray:
    cy, sy, cp, sp = np.cos(yaw), np.sin(yaw), np.cos(pitch), np.sin(pitch)
    return np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]]) @ np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])


def _c2w(frame: int) -> np.ndarray:
    """Camera-to-world (OpenCV axes: x right, y down, z forwards; the world's y points down too)."""
    k = FRAMES.index(frame)
    P = np.eye(4)
    P[:3, :3] = _rot(np.radians((-6, 5, 12)[k]), np.radians((0, -4, 3)[k]))
    P[:3, 3] = ((0.0, 0.0, 0.0), (0.35, -0.08, 0.15), (0.7, 0.05, -0.1))[k]
    return P


# planes: (origin, in-plane axis a, in-plane axis b, half extents, texture)
def _planes() -> list:
    texs = [cv2.resize(img, (256, 256)) for img in
            (data.astronaut().mean(-1).astype(np.uint8), data.coffee().mean(-1).astype(np.uint8),
             data.chelsea().mean(-1).astype(np.uint8), data.rocket().mean(-1).astype(np.uint8))]
    x, y, z = np.eye(3)
    return [(np.array([0.0, 0, 4]), x, y, (6.0, 6.0), texs[0]),      # back wall z = 4
            (np.array([0.0, 1.2, 2]), x, z, (6.0, 4.0), texs[1]),    # floor y = 1.2
            (np.array([-2.0, 0, 2]), z, y, (4.0, 6.0), texs[2]),     # left wall x = -2
            (np.array([0.1, -0.1, 2.4]), x, y, (0.35, 0.3), texs[3])]  # a box face in front of the wall


def _cast(c2w: np.ndarray, pts: np.ndarray, planes: list) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
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


def _pixels() -> np.ndarray:
    u, v = np.meshgrid(np.arange(W, dtype=np.float64), np.arange(H, dtype=np.float64))
    return np.c_[u.ravel(), v.ravel()]


def _project(p0: np.ndarray, f0: int, f1: int, planes: list) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The test's own truth for pixels ``p0`` of frame ``f0``: their position in frame ``f1``, whether they are
    visible there (inside, and the surface camera 1 sees there is this point's), and whether that is clear-cut
    (no other surface within 1.5 px of the point in either image)."""
    c2w0, w2c1 = _c2w(f0), np.linalg.inv(_c2w(f1))
    d0, _, s0 = _cast(c2w0, p0, planes)
    X0 = np.c_[p0, np.ones(len(p0))] @ np.linalg.inv(K).T * d0[:, None]
    X1 = (X0 @ c2w0[:3, :3].T + c2w0[:3, 3]) @ w2c1[:3, :3].T + w2c1[:3, 3]
    p1 = X1[:, :2] / X1[:, 2:] * K[[0, 1], [0, 1]] + K[:2, 2]
    inside = (X1[:, 2] > 0) & np.all((p1 > -0.5) & (p1 < np.array([W, H]) - 0.5), 1)
    ring = [np.zeros(2)] + [np.array(o) for o in ((-1.5, -1.5), (1.5, 1.5), (-1.5, 1.5), (1.5, -1.5))]
    seen1 = np.stack([_cast(_c2w(f1), p1 + o, planes)[2] for o in ring])
    seen0 = np.stack([_cast(c2w0, p0 + o, planes)[2] for o in ring])
    clear = (seen1 == seen1[0]).all(0) & (seen0 == s0).all(0)
    return p1, inside & (seen1[0] == s0), clear | ~inside


@pytest.fixture(scope="module")
def mini_scannet(tmp_path_factory):
    """``root/scans_test/<scene>/...`` and ``root/index/{test,intrinsics}.npz``."""
    root = tmp_path_factory.mktemp("scannet")
    scene = root / "scans_test" / SCENE
    planes = _planes()
    for sub in ("color", "depth", "pose"):
        (scene / sub).mkdir(parents=True)
    for f in FRAMES:
        depth, val, _ = _cast(_c2w(f), _pixels(), planes)
        assert np.isfinite(depth).all()
        gray = val.reshape(H, W).astype(np.uint8)
        cv2.imwrite(str(scene / "color" / f"{f}.jpg"), cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR),
                    [cv2.IMWRITE_JPEG_QUALITY, 95])
        cv2.imwrite(str(scene / "depth" / f"{f}.png"), np.round(depth.reshape(H, W) * 1000).astype(np.uint16))
        np.savetxt(scene / "pose" / f"{f}.txt", _c2w(f), fmt="%.9f")
    index = root / "index"
    index.mkdir()
    names = np.array([[707, 0, a, b] for a, b in PAIRS], np.uint16)
    rel = np.stack([(np.linalg.inv(_c2w(b)) @ _c2w(a))[:3].ravel() for a, b in PAIRS]).astype(np.float32)
    np.savez(index / "test.npz", name=names, rel_pose=rel)
    np.savez(index / "intrinsics.npz", **{SCENE: K})
    (index / "scannet_test.txt").write_text("test.npz")
    return root, index, planes


def test_depth_png_is_millimetres_and_poses_are_camera_to_world(mini_scannet):
    root, index, planes = mini_scannet
    pairs = scannet_pairs(index)
    assert [(p.image0, p.image1) for p in pairs] == [(f"{SCENE}/color/{a}.jpg", f"{SCENE}/color/{b}.jpg")
                                                     for a, b in PAIRS]
    from_poses = scannet_scene_pairs(root / "scans_test", SCENE, list(PAIRS), K)
    for p, q in zip(pairs, from_poses):
        np.testing.assert_allclose(p.T_0to1, q.T_0to1, atol=1e-6)  # index rel_pose = pose-file relative pose
        np.testing.assert_allclose(p.K0, K)
        np.testing.assert_allclose(p.K1, K)
    item = DepthPairs(root / "scans_test", pairs, long_side=W, pad_to=None)[0]
    exact = _cast(_c2w(0), _pixels(), planes)[0]
    d = item["depth0"][:H, :W].numpy().ravel()
    np.testing.assert_allclose(d, exact, atol=6e-4)  # metres, up to the millimetre rounding


def test_bad_scannet_data_gives_clear_errors(mini_scannet, tmp_path):
    root = mini_scannet[0]
    np.savez(tmp_path / "test.npz", name=np.array([[708, 0, 0, 15]], np.uint16), rel_pose=np.zeros((1, 12)))
    np.savez(tmp_path / "intrinsics.npz", **{SCENE: K})
    with pytest.raises(DataError, match="no intrinsics for scene0708_00"):
        scannet_pairs(tmp_path)
    scene = tmp_path / "root" / SCENE
    for sub in ("color", "depth"):
        (scene / sub).mkdir(parents=True)
    (scene / "color" / "0.jpg").write_bytes((root / "scans_test" / SCENE / "color" / "0.jpg").read_bytes())
    cv2.imwrite(str(scene / "depth" / "0.png"), np.ones((H // 2, W // 2), np.uint16))
    pair = scannet_scene_pairs(root / "scans_test", SCENE, [(0, 15)], K)[0]
    with pytest.raises(DataError, match="depth .* is 80×60 but image .* is 160×120"):
        DepthPairs(tmp_path / "root", [pair], long_side=W, pad_to=None)[0]


@pytest.mark.parametrize("long_side", [W, 2 * W])
@pytest.mark.parametrize("k", range(len(PAIRS)))
def test_depth_supervision_agrees_with_exact_projection(mini_scannet, k, long_side):
    root, index, planes = mini_scannet
    ds = DepthPairs(root / "scans_test", scannet_pairs(index), long_side=long_side, pad_to=None)
    item = ds[k]
    s = long_side / W
    assert item["image0"].shape == (1, -(-int(H * s) // 32) * 32, long_side)
    batch = {key: v[None] for key, v in item.items()}
    fwd, bwd = make_transfers(batch)
    f0, f1 = PAIRS[k]
    # points of the resized image 0 at original pixel centres, where the depth is exact
    p0 = _pixels()[::7]
    q0 = torch.from_numpy((p0 + 0.5) * s - 0.5).float()
    q1, ok = fwd(q0, torch.zeros(len(q0), dtype=torch.long))
    p1, visible, clear = _project(p0, f0, f1, planes)
    got = (q1.double().numpy() + 0.5) / s - 0.5  # back to original pixels
    assert clear.mean() > 0.8 and visible.sum() > 100 and (~visible & clear).sum() > 20
    np.testing.assert_allclose(got[visible], p1[visible], atol=0.02)
    assert np.array_equal(ok.numpy()[clear], visible[clear])
    if s == 1:  # coarse truth: the test's own loop-back over 8-px cells, compared away from depth edges
        gt = coarse_truth(fwd, bwd, 1, (16, 20), (16, 20))
        cells = np.c_[np.arange(20 * 15) % 20, np.arange(20 * 15) // 20] * 8 + 3.5
        c1, vis01, clear01 = _project(cells, f0, f1, planes)
        j = np.floor((c1 + 0.5) / 8).astype(int)
        back, vis10, clear10 = _project(j * 8 + 3.5, f1, f0, planes)
        loop = vis01 & vis10 & (np.floor((back + 0.5) / 8) == np.floor((cells + 0.5) / 8)).all(1)
        # cell centres are half-integers whose depth is read at the nearest pixel, half a pixel away: on slanted
        # surfaces that moves them by up to ~0.3 px here, so cells that close to a cell border are left out
        margin = [np.abs((q + 0.5) / 8 - np.round((q + 0.5) / 8)).min(1) * 8 > 0.4 for q in (c1, back)]
        sure = clear01 & clear10 & margin[0] & margin[1]
        expect = {(i, int(j[i, 1] * 20 + j[i, 0])) for i in np.flatnonzero(loop & sure)}
        got_set = {(a, b) for a, b in zip(gt.i0.tolist(), gt.i1.tolist()) if sure[a]}
        assert sure.mean() > 0.6 and len(expect) > 50
        assert expect == got_set, sorted(expect ^ got_set)


class _Oracle:
    """A matcher that returns the exact correspondences of the rendered scene (visible, away from edges)."""

    def match(self, path0, path1):
        f0, f1 = (int(Path(p).stem) for p in (path0, path1))
        p0 = _pixels()[::5]
        p1, visible, clear = _project(p0, f0, f1, _planes())
        return {"keypoints0": p0[visible & clear], "keypoints1": p1[visible & clear]}


def _eval_table(root: Path, index: Path, out: Path, *extra: str) -> dict[str, float]:
    from imamatch.cli import main

    assert main(["eval", "scannet1500", "--root", str(root), "--index", str(index), "--out", str(out),
                 *extra]) == 0
    head, _, table = out.read_text().partition("\n\n")
    assert head.startswith("scannet1500") and str(root / "scans_test") in head
    cols, _, vals = table.strip().splitlines()
    return dict(zip(cols.strip("| ").split(" | "), (float(v) for v in vals.strip("| ").split(" | "))))


def test_eval_scannet1500_with_exact_matches_is_perfect(mini_scannet, tmp_path, monkeypatch):
    """The whole evaluation path (index, intrinsics, T_0to1, pose solver, metrics) on exact correspondences."""
    import imamatch.cli

    root, index, _ = mini_scannet
    monkeypatch.setattr(imamatch.cli, "_matcher", lambda a: _Oracle())
    res = _eval_table(root, index, tmp_path / "table.md")
    assert res["pairs"] == len(PAIRS) and res["precision"] == 100.0
    assert res["auc5"] > 95 and res["auc20"] > 98, res


def test_eval_scannet1500_runs_the_matcher_end_to_end(mini_scannet, tmp_path):
    root, index, _ = mini_scannet
    one = tmp_path / "index"
    one.mkdir()
    with np.load(index / "test.npz") as t:
        np.savez(one / "test.npz", name=t["name"][:1], rel_pose=t["rel_pose"][:1])
    (one / "intrinsics.npz").write_bytes((index / "intrinsics.npz").read_bytes())
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny images: one thread is fastest, and immune to a busy machine's other jobs
    try:
        res = _eval_table(root, one, tmp_path / "table.md", "--resize", str(W))
    finally:
        torch.set_num_threads(threads)
    assert res["pairs"] == 1 and res["matches"] > 50
