"""COLMAP models as posed folders: conventions (world-to-camera from qvec/tvec, OpenCV axes, COLMAP's +0.5 pixel
centres) checked against models written with pycolmap and by hand, and the training/eval readers on them."""

import cv2
import numpy as np
import pycolmap
import pytest

from imamatch.data.posed import PosedPairs, colmap_intrinsics, load_colmap, load_posed, relative_pose
from imamatch.errors import DataError

W, H = 96, 64
YAWS = (0, 5, 12, 25, 40)  # degrees: relative rotations over all of select_pairs' bins


def _w2c(k: int) -> np.ndarray:
    a, b = np.radians(YAWS[k]), np.radians(3.0 * k)
    R = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]]) @ \
        np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = R, (0.2 * k, -0.05 * k, 0.1)
    return T


def _write_images(folder, n):
    (folder / "images").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for k in range(n):
        cv2.imwrite(str(folder / "images" / f"{k}.png"), rng.integers(0, 255, (H, W), np.uint8))


@pytest.fixture
def pycolmap_scene(tmp_path):
    """``scene/images/*.png`` and a binary ``scene/sparse/0`` written by pycolmap: an OPENCV camera with
    distortion for the even images, a PINHOLE camera for the odd ones; image 3's file is missing."""
    rec = pycolmap.Reconstruction()
    cams = [pycolmap.Camera(model="OPENCV", width=W, height=H, camera_id=1,
                            params=[90.0, 91.0, 48.3, 31.7, 0.01, -0.02, 0.001, 0.002]),
            pycolmap.Camera(model="PINHOLE", width=W, height=H, camera_id=2, params=[80.0, 82.0, 47.0, 33.0])]
    for c in cams:
        rec.add_camera_with_trivial_rig(c)
    for k in range(len(YAWS)):
        T = _w2c(k)
        img = pycolmap.Image(name=f"{k}.png", camera_id=1 + k % 2, image_id=k + 1)
        rec.add_image_with_trivial_frame(img, pycolmap.Rigid3d(pycolmap.Rotation3d(T[:3, :3]), T[:3, 3]))
    scene = tmp_path / "scene"
    (scene / "sparse" / "0").mkdir(parents=True)
    rec.write(str(scene / "sparse" / "0"))
    _write_images(scene, len(YAWS))
    (scene / "images" / "3.png").unlink()
    return scene, rec


def test_colmap_model_written_by_pycolmap(pycolmap_scene):
    scene, rec = pycolmap_scene
    frames = load_posed(scene)
    assert [f.path.name for f in frames] == ["0.png", "1.png", "2.png", "4.png"]
    X = np.array([[0.3, -0.2, 4.0], [-0.5, 0.4, 6.0], [0.1, 0.1, 3.0]])
    for f in frames:
        k = int(f.path.stem)
        np.testing.assert_allclose(f.w2c, _w2c(k), atol=1e-12)
        if k % 2:  # PINHOLE: our projection + 0.5 is COLMAP's (pixel centres at +0.5 there)
            np.testing.assert_allclose(f.K, [[80, 0, 46.5], [0, 82, 32.5], [0, 0, 1]])
            assert not f.dist.any()
            Xc = X @ f.w2c[:3, :3].T + f.w2c[:3, 3]
            ours = Xc @ f.K.T
            colmap = np.stack([rec.images[k + 1].project_point(x) for x in X])
            np.testing.assert_allclose(ours[:, :2] / ours[:, 2:] + 0.5, colmap, atol=1e-9)
        else:  # OPENCV: the distortion is OpenCV's own model
            np.testing.assert_allclose(f.dist, [0.01, -0.02, 0.001, 0.002])
            Xc = X @ f.w2c[:3, :3].T + f.w2c[:3, 3]
            ours = cv2.projectPoints(Xc, np.zeros(3), np.zeros(3), f.K, f.dist)[0][:, 0]
            colmap = np.stack([rec.images[k + 1].project_point(x) for x in X])
            np.testing.assert_allclose(ours + 0.5, colmap, atol=1e-9)
    # relative pose: x1 = R x0 + t for camera coordinates
    R, t = relative_pose(frames[0], frames[1])
    X0 = X @ frames[0].w2c[:3, :3].T + frames[0].w2c[:3, 3]
    X1 = X @ frames[1].w2c[:3, :3].T + frames[1].w2c[:3, 3]
    np.testing.assert_allclose(X0 @ R.T + t, X1, atol=1e-12)


def test_hand_written_text_model_qvec_is_w_first(tmp_path):
    """A legacy text model (no rigs/frames), written by hand: QW QX QY QZ TX TY TZ is world-to-camera."""
    q = np.array([0.9, 0.1, -0.3, 0.2])
    q /= np.linalg.norm(q)
    w, x, y, z = q
    R = np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
                  [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
                  [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]])
    t = np.array([0.4, -1.2, 2.5])
    (tmp_path / "cameras.txt").write_text(f"1 SIMPLE_RADIAL {W} {H} 100 48 32 -0.05\n")
    (tmp_path / "images.txt").write_text(f"7 {w} {x} {y} {z} {t[0]} {t[1]} {t[2]} 1 0.png\n\n")
    (tmp_path / "points3D.txt").write_text("")
    _write_images(tmp_path, 1)
    (f,) = load_colmap(tmp_path)
    np.testing.assert_allclose(f.w2c[:3, :3], R, atol=1e-12)
    np.testing.assert_allclose(f.w2c[:3, 3], t)
    np.testing.assert_allclose(f.K, [[100, 0, 47.5], [0, 100, 31.5], [0, 0, 1]])
    np.testing.assert_allclose(f.dist, [-0.05, 0, 0, 0])


def test_posed_training_and_eval_read_a_colmap_folder(pycolmap_scene):
    from imamatch.eval.suite import Timer, eval_posed

    scene, _ = pycolmap_scene
    present = (0, 1, 2, 4)
    angles = [np.degrees(np.arccos((np.trace(_w2c(b)[:3, :3] @ _w2c(a)[:3, :3].T) - 1) / 2))
              for n, a in enumerate(present) for b in present[n + 1:]]
    ds = PosedPairs(scene, long_side=W)
    assert len(ds) == sum(3 <= a < 45 for a in angles) >= 4  # training pairs span 3–45° of relative rotation
    item = ds[0]
    i, j = ds.pairs[0]
    np.testing.assert_allclose(item["T_0to1"].numpy(), ds.frames[j].w2c @ np.linalg.inv(ds.frames[i].w2c))
    assert item["image0"].shape == (1, 64, 96)
    res = eval_posed(lambda a, b: (np.zeros((0, 2)), np.zeros((0, 2))), scene, Timer(), refine=False)
    assert res["fox_pairs"] == sum(3 <= a < 60 for a in angles) and res["fox_auc20"] == 0.0


def test_bad_colmap_input_gives_clear_errors(tmp_path):
    with pytest.raises(DataError, match="neither a transforms.json nor a COLMAP model"):
        load_posed(tmp_path)
    with pytest.raises(DataError, match="FULL_OPENCV is not supported"):
        colmap_intrinsics("FULL_OPENCV", np.zeros(12))
    with pytest.raises(DataError, match="needs 4 parameters, got 3"):
        colmap_intrinsics("PINHOLE", np.zeros(3))
    (tmp_path / "cameras.txt").write_text(f"1 PINHOLE {W} {H} 100 100 48 32\n")
    (tmp_path / "images.txt").write_text("1 1 0 0 0 0 0 0 1 missing.png\n\n")
    (tmp_path / "points3D.txt").write_text("")
    with pytest.raises(DataError, match="none of the registered images"):
        load_posed(tmp_path)
