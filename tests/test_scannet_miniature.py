"""A miniature ScanNet written in the exact on-disk formats (``color/N.jpg``, ``depth/N.png`` uint16 millimetres,
``pose/N.txt`` camera-to-world, ``intrinsics.npz``, ``test.npz``) from a ray-cast room of textured planes with
an occluding box: the project's readers and depth supervision checked against the test's own projection, and
``imamatch eval scannet1500`` run end to end on it."""

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from imamatch.data.depth_pairs import DepthPairs, scannet_scene_pairs
from imamatch.data.standard import scannet_pairs
from imamatch.errors import DataError
from imamatch.train.supervision import coarse_truth

from mini_scannet import (H, K, PAIRS, SCENE, W, assert_warp_is_exact, camera_to_world, pixel_grid, project,
                          ray_cast, room_planes, write_scene)


@pytest.fixture(scope="module")
def mini_scannet(tmp_path_factory):
    """``root/scans_test/<scene>/...`` and ``root/index/{test,intrinsics}.npz``."""
    root = tmp_path_factory.mktemp("scannet")
    scene = root / "scans_test" / SCENE
    planes = room_planes()
    write_scene(scene, planes)
    index = root / "index"
    index.mkdir()
    names = np.array([[707, 0, a, b] for a, b in PAIRS], np.uint16)
    rel = np.stack([(np.linalg.inv(camera_to_world(b)) @ camera_to_world(a))[:3].ravel()
                    for a, b in PAIRS]).astype(np.float32)
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
    exact = ray_cast(camera_to_world(0), pixel_grid(), planes)[0]
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
    f0, f1 = PAIRS[k]
    fwd, bwd = assert_warp_is_exact(item, f0, f1, planes, s)
    if s == 1:  # coarse truth: the test's own loop-back over 8-px cells, compared away from depth edges
        gt = coarse_truth(fwd, bwd, 1, (16, 20), (16, 20))
        cells = np.c_[np.arange(20 * 15) % 20, np.arange(20 * 15) // 20] * 8 + 3.5
        c1, vis01, clear01 = project(cells, f0, f1, planes)
        j = np.floor((c1 + 0.5) / 8).astype(int)
        back, vis10, clear10 = project(j * 8 + 3.5, f1, f0, planes)
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
        p0 = pixel_grid()[::5]
        p1, visible, clear = project(p0, f0, f1, room_planes())
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
