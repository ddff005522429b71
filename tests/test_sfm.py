"""Many pairs to a 3D model, on a rendered scene with exact cameras."""

import subprocess
import sys

import cv2
import numpy as np
import pytest
from skimage import data

from imamatch import IMAMatch, sfm
from imamatch.errors import DataError
from imamatch.eval.align import aligned_rotation_errors, umeyama
from imamatch.eval.metrics import rotation_error_deg

F, W, H = 260.0, 320, 240
K = np.array([[F, 0, W / 2 - 0.5], [0, F, H / 2 - 0.5], [0, 0, 1]])


def _render(R: np.ndarray, c: np.ndarray, textures: list[np.ndarray]) -> np.ndarray:
    """Ray-cast a room corner: back wall z = 6, left wall x = -3, floor y = 2 (OpenCV axes, y down)."""
    u, v = np.meshgrid(np.arange(W), np.arange(H))
    rays = np.stack([(u - K[0, 2]) / F, (v - K[1, 2]) / F, np.ones_like(u, float)], -1) @ R  # world directions
    best = np.full((H, W), np.inf)
    img = np.zeros((H, W), np.float32)
    planes = [(2, 6.0, (0, 1)), (0, -3.0, (2, 1)), (1, 2.0, (0, 2))]
    for tex, (axis, value, (ia, ib)) in zip(textures, planes):
        with np.errstate(divide="ignore", invalid="ignore"):
            t = (value - c[axis]) / rays[..., axis]
        p = c + t[..., None] * rays
        ok = (t > 0) & (t < best)
        ts = tex.shape[0] / 8.0  # 8 world units across the texture
        mx = ((p[..., ia] + 4) * ts).astype(np.float32)
        my = ((p[..., ib] + 4) * ts).astype(np.float32)
        ok &= (mx >= 0) & (my >= 0) & (mx < tex.shape[1] - 1) & (my < tex.shape[0] - 1)
        sample = cv2.remap(tex, mx, my, cv2.INTER_LINEAR)
        img[ok] = sample[ok]
        best[ok] = t[ok]
    return img


def _look_at(c: np.ndarray, target: np.ndarray) -> np.ndarray:
    z = (target - c) / np.linalg.norm(target - c)
    x = np.cross([0, 1.0, 0], z)
    x /= np.linalg.norm(x)
    return np.stack([x, np.cross(z, x), z])  # rows: camera axes in world → world-to-camera rotation


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    root = tmp_path_factory.mktemp("scene")
    textures = [cv2.resize(im.astype(np.float32) / 255, (512, 512)) for im in
                (data.astronaut().mean(-1), data.coffee().mean(-1), data.chelsea().mean(-1))]
    cams = []
    for k in range(6):
        c = np.array([-0.2 + 0.35 * k, -0.2 + 0.05 * k, 0.5 * np.sin(k)])
        R = _look_at(c, np.array([-1.0, 0.6, 5.0]))
        cv2.imwrite(str(root / f"{k:02d}.png"), (np.clip(_render(R, c, textures), 0, 1) * 255).astype(np.uint8))
        cams.append((R, c))
    return root, cams


def test_pair_selection_and_resumable_matching(scene, tmp_path):
    root, _ = scene
    names = sfm.list_images(root)
    assert len(sfm.select_pairs(names, "exhaustive")) == 15
    assert len(sfm.select_pairs(names, "sequential", window=2)) == 9
    pairs = sfm.select_pairs(names, "sequential", window=2)
    assert sfm.match_pairs(root, pairs[:4], tmp_path) == 4
    assert sfm.match_pairs(root, pairs, tmp_path) == 5  # the first four are skipped
    a, b = pairs[1]  # the second pair of its first image, which was read and encoded for the first pair
    assert a == pairs[0][0]
    stored = np.load(tmp_path / "raw" / f"{sfm.pair_key(a, b)}.npz")
    direct = IMAMatch.from_pretrained().match(root / a, root / b)
    for k in ("keypoints0", "keypoints1", "confidence"):
        np.testing.assert_array_equal(stored[k], direct[k])
    merged = sfm.merge_keypoints(sfm.load_raw([tmp_path], pairs))
    tracks = sfm.track_lengths(merged)
    assert tracks.max() >= 3  # merged keypoints form tracks across pairs
    feats, mats = sfm.write_h5(merged, tmp_path, sfm.image_sizes(root, names))
    import h5py

    with h5py.File(feats) as f, h5py.File(mats) as m:
        a, b = pairs[0]
        m0 = m[sfm.names_to_pair(a, b)]["matches0"][()]
        assert len(m0) == len(f[a]["keypoints"]) and (m0 >= 0).sum() > 50


def test_colmap_reconstruction_recovers_the_cameras(scene, tmp_path):
    root, cams = scene
    r = subprocess.run([sys.executable, "-m", "imamatch", "colmap", str(root), "--out", str(tmp_path), "--resize",
                        "320"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    res = sfm.reconstruct(root, tmp_path)  # all pairs already matched: reuses them
    assert res["registered"] >= 5
    assert res["registered_per_model"][0] == res["registered"] and len(res["registered_per_model"]) == res["models"]
    assert "model(s), registered images " in r.stdout  # (a second mapper run may differ from the first)
    rec = res["reconstruction"]
    R_est, c_est, R_gt, c_gt = [], [], [], []  # centres: trajectory aligned below
    for image_id in rec.reg_image_ids():
        im = rec.images[image_id]
        k = int(im.name.split(".")[0])
        T = im.cam_from_world().matrix()
        R_est.append(T[:3, :3])
        c_est.append(-T[:3, :3].T @ T[:3, 3])
        R_gt.append(cams[k][0])
        c_gt.append(cams[k][1])
    errs = aligned_rotation_errors(R_est, R_gt)
    assert np.max(errs) < 2.0, errs
    s, Ra, ta = umeyama(np.array(c_gt), np.array(c_est))
    resid = np.linalg.norm(s * np.array(c_gt) @ Ra.T + ta - np.array(c_est), axis=1) / s
    assert np.max(resid) < 0.1  # camera centres within 0.1 scene units (baseline 0.35 per view)
    assert res["mean_reprojection_error"] < 1.5


def test_umeyama_recovers_a_similarity():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(10, 3))
    Rt, _ = cv2.Rodrigues(np.array([0.3, -0.2, 0.5]))
    Y = 2.5 * X @ Rt.T + [1, 2, 3]
    s, R, t = umeyama(X, Y)
    assert abs(s - 2.5) < 1e-9 and rotation_error_deg(R, Rt) < 1e-6


def test_worker_processes_share_the_groups_and_give_the_same_matches(scene, tmp_path):
    """``workers`` > 1: the groups of pairs (by first image) go to worker processes; the files are those of one
    process, to the bit."""
    import torch

    root, _ = scene
    pairs = sfm.select_pairs(sfm.list_images(root), "sequential", window=2)[:5]
    threads = torch.get_num_threads()  # the one-process run sets this process's thread count
    try:
        assert sfm.match_pairs(root, pairs, tmp_path / "one", threads=1) == 5  # (thread counts round differently)
    finally:
        torch.set_num_threads(threads)
    assert sfm.match_pairs(root, pairs, tmp_path / "two", workers=2, threads=1) == 5
    for a, b in pairs:
        one, two = (np.load(tmp_path / d / "raw" / f"{sfm.pair_key(a, b)}.npz") for d in ("one", "two"))
        for k in ("keypoints0", "keypoints1", "confidence"):
            np.testing.assert_array_equal(one[k], two[k])


def test_pairs_are_grouped_by_their_first_image_and_split_for_workers():
    pairs = [("q", f"db{k}") for k in range(40)] + [("a", "b"), ("q", "z"), ("a", "c")]
    one = sfm.group_pairs(pairs)
    assert one == [("q", [f"db{k}" for k in range(40)] + ["z"]), ("a", ["b", "c"])]
    two = sfm.group_pairs(pairs, workers=2)
    assert len(two) >= 8 and max(len(bs) for _, bs in two) <= 3  # a query against a database: work for both
    assert sorted((a, b) for a, bs in two for b in bs) == sorted(pairs)  # every pair once


def test_no_matches_at_all_give_no_tracks_not_an_error():
    merged = sfm.merge_keypoints({("a", "b"): {"keypoints0": np.zeros((0, 2), np.float32),
                                               "keypoints1": np.zeros((0, 2), np.float32),
                                               "confidence": np.zeros(0, np.float32)}})
    tracks = sfm.track_lengths(merged)
    assert tracks.shape == (0,) and tracks.dtype.kind == "i"


def test_one_camera_for_images_of_several_sizes_is_refused_before_matching(tmp_path):
    sizes = {"a.png": (640, 480), "b.png": (640, 480), "c.png": (480, 640)}
    with pytest.raises(sfm.DataError, match="2 different sizes"):
        sfm.check_camera_mode(sizes, "single")
    sfm.check_camera_mode(sizes, "per_image")  # one camera per image: fine
    sfm.check_camera_mode({"a.png": (640, 480), "b.png": (640, 480)}, "single")
    images = tmp_path / "images"
    images.mkdir()
    cv2.imwrite(str(images / "a.png"), data.camera())
    cv2.imwrite(str(images / "b.png"), cv2.resize(data.camera(), (256, 300)))
    r = subprocess.run([sys.executable, "-m", "imamatch", "colmap", str(images), "--out", str(tmp_path / "out")],
                       capture_output=True, text=True)
    assert r.returncode == 1 and "--camera-mode per_image" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "out" / "raw").exists()  # refused before any matching


def test_colmap_takes_exif_oriented_photos_in_their_stored_pixels(scene, tmp_path):
    """Phone photos are often stored sideways with an EXIF orientation tag. imamatch matches them upright; COLMAP
    reads the stored pixels, so the database must get the keypoints in those: the same scene, stored turned by a
    quarter with orientation 6, reconstructs as well (relative rotations between the cameras as the truth). The
    file names hold spaces (as phone exports often do): nothing on the way splits them."""
    from PIL import Image

    root, cams = scene
    images = tmp_path / "images"
    images.mkdir()
    for k in range(len(cams)):
        upright = cv2.imread(str(root / f"{k:02d}.png"), cv2.IMREAD_GRAYSCALE)
        im = Image.fromarray(np.ascontiguousarray(np.rot90(upright, 1)))  # stored sideways ...
        exif = im.getexif()
        exif[0x0112] = 6  # ... shown upright (a quarter turn clockwise)
        im.save(images / f"view {k:02d}.jpg", quality=95, exif=exif.tobytes())
    r = subprocess.run([sys.executable, "-m", "imamatch", "colmap", str(images), "--out", str(tmp_path / "out"),
                        "--resize", "320"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    res = sfm.reconstruct(images, tmp_path / "out")
    assert res["registered"] >= 5 and res["mean_reprojection_error"] < 1.5
    rec = res["reconstruction"]
    poses = {int(rec.images[i].name[5:7]): rec.images[i].cam_from_world().matrix()[:3, :3]
             for i in rec.reg_image_ids()}
    for a in poses:
        for b in poses:
            if a < b:  # a relative rotation's angle does not depend on the camera frame's roll
                err = rotation_error_deg(poses[a] @ poses[b].T, cams[a][0] @ cams[b][0].T)
                est = rotation_error_deg(poses[a] @ poses[b].T, np.eye(3))
                true = rotation_error_deg(cams[a][0] @ cams[b][0].T, np.eye(3))
                assert abs(est - true) < 0.75, (a, b, est, true, err)  # upright PNGs: 0.39 at most; keypoints
                # written in the upright frame instead: 1.27


def test_union_of_pair_lists_keeps_each_pair_once_in_name_order():
    names = ["a", "b", "c", "d", "e"]
    sequential = sfm.select_pairs(names, "sequential", 1)  # a-b, b-c, c-d, d-e
    retrieved = [("e", "a"), ("b", "c"), ("a", "c")]  # a loop closure, one already there, one new
    assert sfm.union_pairs(names, sequential, retrieved) == [("a", "b"), ("a", "c"), ("a", "e"), ("b", "c"),
                                                             ("c", "d"), ("d", "e")]


def test_merged_keypoints_are_grid_cells_in_order_of_first_appearance_with_their_best_score():
    f = np.float32
    raw = {("a", "b"): {"keypoints0": np.array([[10.2, 4.0], [30.0, 8.0]], f),
                        "keypoints1": np.array([[5.5, 5.5], [7.9, 1.0]], f),
                        "confidence": np.array([0.5, 0.9], f)},
           ("b", "c"): {"keypoints0": np.array([[7.0, 1.5], [5.9, 4.1], [100.0, 100.0]], f),  # cells of b met before
                        "keypoints1": np.array([[1.0, 1.0], [2.0, 2.0], [3.0, 3.0]], f),
                        "confidence": np.array([0.7, 0.2, 0.4], f)}}
    m = sfm.merge_keypoints(raw, quantize=2.0)
    assert list(m.keypoints) == ["a", "b", "c"]
    np.testing.assert_array_equal(m.keypoints["b"], f([[5.5, 5.5], [7.9, 1.0], [100.0, 100.0]]))  # first points
    np.testing.assert_array_equal(m.scores["b"], f([0.5, 0.9, 0.4]))  # (7.0, 1.5) shares cell (3, 0): 0.9 stays
    np.testing.assert_array_equal(m.keypoints["c"], f([[1.0, 1.0], [2.0, 2.0]]))  # (3, 3) shares (2, 2)'s cell
    np.testing.assert_array_equal(m.matches[("a", "b")], [[0, 0], [1, 1]])
    # in (b, c): b1-c0 (0.7) and b2-c1 (0.4) kept; b0-c1 (0.2) dropped: c's 1 keeps its more confident match
    np.testing.assert_array_equal(m.matches[("b", "c")], [[1, 0], [2, 1]])
    assert sorted(sfm.track_lengths(m)) == [2, 2, 3]  # a0-b0 | b2-c1 | a1-b1-c0


def test_pair_lines_split_where_both_sides_are_image_names(tmp_path):
    """Names with spaces: a pairs-file line splits at the one space that leaves an image name on each side."""
    known = {"a.jpg", "IMG 1.jpg", "IMG 1 b.jpg", "b c.jpg"}
    assert sfm.split_pair_line("a.jpg IMG 1.jpg", known) == ("a.jpg", "IMG 1.jpg")
    assert sfm.split_pair_line("IMG 1.jpg b c.jpg  0.93", known | {"x"}) is None  # a score column needs plain names
    assert sfm.split_pair_line("a.jpg a.jpg 0.5", known) == ("a.jpg", "a.jpg")  # extra columns after plain names
    assert sfm.split_pair_line("a.jpg nope.jpg", known) is None
    with pytest.raises(DataError, match="ambiguous"):
        sfm.split_pair_line("a b c", {"a", "b c", "a b", "c"})  # ("a", "b c") or ("a b", "c")
    (tmp_path / "pairs.txt").write_text("# comment\nIMG 1.jpg b c.jpg\n\na.jpg IMG 1 b.jpg\ngone.jpg a.jpg\n")
    assert sfm.read_pairs(tmp_path / "pairs.txt", known, left_out={"gone.jpg"}) == [
        ("IMG 1.jpg", "b c.jpg"), ("a.jpg", "IMG 1 b.jpg")]
    with pytest.raises(DataError, match=":5: expected two image names"):
        sfm.read_pairs(tmp_path / "pairs.txt", known)
