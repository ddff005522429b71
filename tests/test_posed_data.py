"""Ground-truth conventions of the shared data, verified numerically (skipped without ../shared/data)."""

import cv2
import numpy as np

from imamatch.data.posed import GL_TO_CV, load_transforms, relative_pose, select_pairs, undistorted_image


def _sift_matches(a, b):
    sift = cv2.SIFT_create(3000)
    ka, da = sift.detectAndCompute(cv2.cvtColor(a, cv2.COLOR_BGR2GRAY), None)
    kb, db = sift.detectAndCompute(cv2.cvtColor(b, cv2.COLOR_BGR2GRAY), None)
    good = [m for m, n in cv2.BFMatcher().knnMatch(da, db, k=2) if m.distance < 0.7 * n.distance]
    return (np.float64([ka[m.queryIdx].pt for m in good]), np.float64([kb[m.trainIdx].pt for m in good]))


def _sampson_px(p0, p1, K, R, t):
    tx = np.array([[0, -t[2], t[1]], [t[2], 0, -t[0]], [-t[1], t[0], 0]])
    F = np.linalg.inv(K).T @ tx @ R @ np.linalg.inv(K)
    x0, x1 = np.c_[p0, np.ones(len(p0))], np.c_[p1, np.ones(len(p1))]
    a, b = x0 @ F.T, x1 @ F
    return np.sqrt(np.sum(x1 * a, 1) ** 2 / (a[:, 0] ** 2 + a[:, 1] ** 2 + b[:, 0] ** 2 + b[:, 1] ** 2))


def test_fox_poses_are_opengl_camera_to_world(shared):
    frames = load_transforms(shared / "fox")
    assert len(frames) == 50
    f0, f1 = frames[4], frames[5]
    p0, p1 = _sift_matches(undistorted_image(f0), undistorted_image(f1))
    R, t = relative_pose(f0, f1)
    ours = np.median(_sampson_px(p0, p1, f0.K, R, t))
    # the same poses without the OpenGL → OpenCV axis flip explain the matches far worse
    c0, c1 = np.linalg.inv(f0.w2c) @ GL_TO_CV, np.linalg.inv(f1.w2c) @ GL_TO_CV
    T = np.linalg.inv(c1) @ c0
    raw = np.median(_sampson_px(p0, p1, f0.K, T[:3, :3], T[:3, 3]))
    assert ours < 1.0 and raw > 3 * ours, (ours, raw)


def test_fox_pair_list_spans_baselines(shared):
    frames = load_transforms(shared / "fox")
    pairs = select_pairs(frames)
    assert len(pairs) == 40 and len(set(pairs)) == 40


def test_aloe_disparity_is_in_pixels(shared):
    s = shared / "stereo"
    a, b = cv2.imread(str(s / "aloeL.jpg")), cv2.imread(str(s / "aloeR.jpg"))
    gt = cv2.imread(str(s / "aloeGT.png"), cv2.IMREAD_UNCHANGED).astype(np.float64)
    p0, p1 = _sift_matches(a, b)
    d = gt[np.round(p0[:, 1]).astype(int), np.round(p0[:, 0]).astype(int)]
    ok = (d > 0) & (np.abs(p0[:, 1] - p1[:, 1]) < 1)
    ratio = np.median((p0[ok, 0] - p1[ok, 0]) / d[ok])
    assert abs(ratio - 1) < 0.02, ratio


def test_graffiti_homography_convention(shared):
    g = shared / "graf"
    a, b = cv2.imread(str(g / "img1.png")), cv2.imread(str(g / "img2.png"))
    p0, p1 = _sift_matches(a, b)
    H = np.loadtxt(g / "H1to2p")
    q = np.c_[p0, np.ones(len(p0))] @ H.T
    err = np.linalg.norm(q[:, :2] / q[:, 2:] - p1, axis=1)
    assert np.median(err) < 1.0


def test_benchmark_pairs_are_the_evaluated_images(shared):
    from imamatch.eval.suite import benchmark_pairs
    from imamatch.io import read_image

    pairs = benchmark_pairs(shared)
    names = [n for n, _, _ in pairs]
    assert names[:5] == [f"graf_1to{k}" for k in range(2, 7)] and names[5:7] == ["motorcycle", "aloe"]
    assert len(names) == 47 and len(set(names)) == 47 and all(n.startswith("fox_") for n in names[7:])
    graf1 = read_image(shared / "graf" / "img1.png")
    np.testing.assert_array_equal(pairs[0][1], graf1)
    for _, a, b in pairs:
        assert a.dtype == np.float32 and a.ndim == 2 and b.ndim == 2 and 0 <= a.min() and a.max() <= 1
    fox = pairs[-1][1]
    assert fox.shape == (1920, 1080)  # the phone frames, undistorted at full size
