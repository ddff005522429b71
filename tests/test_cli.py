"""The command line: usage errors, documented exit codes, files written."""

import subprocess
import sys

import numpy as np


def run(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "imamatch", *args], capture_output=True, text=True, cwd=cwd)


def test_usage_errors_exit_2_without_traceback():
    for args in ([], ["match"], ["match", "a.png"], ["nonsense"], ["match", "a", "b", "--resize", "x"]):
        r = run(*args)
        assert r.returncode == 2, args
        assert "Traceback" not in r.stderr and "usage" in r.stderr


def test_version():
    from imamatch import __version__

    r = run("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"imamatch {__version__}"


def test_missing_image_exits_1_naming_it(tmp_path):
    r = run("match", str(tmp_path / "nope.png"), str(tmp_path / "nope2.png"), "--out", str(tmp_path / "o.png"))
    assert r.returncode == 1
    assert "nope.png" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "o.png").exists()


def test_bad_matcher_setting_exits_1_naming_it(tmp_path):
    r = run("demo", "--prealign-resize", "0", "--out", str(tmp_path / "demo.png"))
    assert r.returncode == 1 and "prealign_resize" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "demo.png").exists()


def test_demo_writes_picture_and_matches(tmp_path):
    r = run("demo", "--out", str(tmp_path / "demo.png"), "--save", str(tmp_path / "m.npz"))
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "demo.png").stat().st_size > 10000
    m = np.load(tmp_path / "m.npz")
    assert m["keypoints0"].shape == m["keypoints1"].shape and len(m["keypoints0"]) > 100
    assert "picture:" in r.stdout and "within 3 px" in r.stdout
    assert not list(tmp_path.glob(".*tmp*"))  # no temporary files left behind


def test_max_matches_keeps_the_most_confident_and_threads_are_checked(tmp_path):
    r = run("demo", "--out", str(tmp_path / "demo.png"), "--save", str(tmp_path / "m.npz"), "--max-matches", "50",
            "--threads", "1")
    assert r.returncode == 0, r.stderr
    conf = np.load(tmp_path / "m.npz")["confidence"]
    assert len(conf) == 50 and (np.diff(conf) <= 0).all()
    for flag in ("--threads", "--max-matches"):
        bad = run("demo", "--out", str(tmp_path / "x.png"), flag, "0")
        assert bad.returncode == 1 and f"{flag} must be at least 1" in bad.stderr


def test_demo_with_the_accurate_weights_by_name(tmp_path):
    r = run("demo", "--weights", "accurate", "--out", str(tmp_path / "demo.png"), "--save", str(tmp_path / "m.npz"))
    assert r.returncode == 0, r.stderr
    assert len(np.load(tmp_path / "m.npz")["keypoints0"]) > 1000 and "within 3 px" in r.stdout


def test_pose_command_prints_rotation(shared, tmp_path):
    import json

    meta = json.loads((shared / "fox" / "transforms.json").read_text())
    k = f"{meta['fl_x']},{meta['fl_y']},{meta['cx']},{meta['cy']}"
    images = sorted((shared / "fox" / "images").glob("*.jpg"))
    a, b = images[10], images[12]
    r = run("pose", str(a), str(b), "--K0", k, "--K1", k, "--json", str(tmp_path / "pose.json"))
    assert r.returncode == 0, r.stderr
    assert "R =" in r.stdout and "t =" in r.stdout and "inliers" in r.stdout
    from imamatch.data.posed import load_posed, relative_pose
    from imamatch.eval.metrics import rotation_error_deg

    frames = {f.path.name: f for f in load_posed(shared / "fox")}
    R, _ = relative_pose(frames[a.name], frames[b.name])  # 8.2° apart
    est = json.loads((tmp_path / "pose.json").read_text())
    assert rotation_error_deg(np.array(est["R"]), R) < 0.5 and abs(est["rotation_deg"] - 8.2) < 0.5
    bad = run("pose", str(a), str(b), "--K0", "1,2,3", "--K1", k)
    assert bad.returncode == 2 and "fx,fy,cx,cy" in bad.stderr


def test_atomic_writes_get_normal_permissions(tmp_path):
    import os

    from imamatch.atomic import atomic_path

    with atomic_path(tmp_path / "x.txt") as tmp:
        tmp.write_text("ok")
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "x.txt").stat().st_mode & 0o777 == 0o666 & ~umask


def test_pairs_command_takes_the_matcher_flags_and_shipped_weights_by_name(tmp_path):
    """`imamatch pairs` builds its matcher from the same flags as `match` (here --rotations, --weights accurate)."""
    import cv2
    from skimage import data

    left, right, _ = data.stereo_motorcycle()
    images = tmp_path / "images"
    images.mkdir()
    cv2.imwrite(str(images / "a.png"), np.ascontiguousarray(left[..., ::-1]))
    cv2.imwrite(str(images / "b.png"), np.ascontiguousarray(np.rot90(right, 1)[..., ::-1]))  # a quarter turn
    counts = {}
    for flags in ((), ("--rotations", "4", "--weights", "accurate")):
        out = tmp_path / f"out{len(flags)}"
        r = run("pairs", str(images), "--out", str(out), *flags)
        assert r.returncode == 0, r.stderr
        (raw,) = (out / "raw").glob("*.npz")
        counts[flags] = len(np.load(raw)["keypoints0"])
    assert counts[()] < 50 and counts[("--rotations", "4", "--weights", "accurate")] > 1500, counts


def test_closed_output_pipe_stops_quietly(tmp_path):
    """`imamatch demo | head -1`: the reader goes away; no traceback, exit code 141 (as a shell reports SIGPIPE)."""
    p = subprocess.Popen([sys.executable, "-m", "imamatch", "demo", "--out", str(tmp_path / "demo.png")],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.stdout.close()  # nobody reads what it prints
    err = p.stderr.read().decode()
    assert p.wait() == 141 and "Traceback" not in err and "BrokenPipe" not in err, err
    assert (tmp_path / "demo.png").stat().st_size > 10000  # the picture was written before the printing failed


def test_pairs_command_applies_colmap_style_masks(tmp_path):
    """`--masks DIR`: DIR/<image name>.png, zero pixels not matched; images without a mask file are matched anywhere."""
    import cv2
    from skimage import data

    left, right, _ = data.stereo_motorcycle()
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    cv2.imwrite(str(images / "a.png"), np.ascontiguousarray(left[..., ::-1]))
    cv2.imwrite(str(images / "b.png"), np.ascontiguousarray(right[..., ::-1]))
    keep = np.zeros(left.shape[:2], np.uint8)
    keep[:, : left.shape[1] // 2] = 255
    cv2.imwrite(str(masks / "a.png.png"), keep)  # a's left half only; b has no mask
    r = run("pairs", str(images), "--out", str(tmp_path / "out"), "--masks", str(masks))
    assert r.returncode == 0, r.stderr
    (raw,) = (tmp_path / "out" / "raw").glob("*.npz")
    k0 = np.load(raw)["keypoints0"]
    assert len(k0) > 300 and (np.rint(k0[:, 0]) < left.shape[1] // 2).all()
    bad = run("pairs", str(images), "--out", str(tmp_path / "out2"), "--masks", str(tmp_path / "nowhere"))
    assert bad.returncode == 1 and "mask folder not found" in bad.stderr


def test_pairs_by_retrieval_pair_each_photo_with_its_other_view(tmp_path, twin_photos):
    import cv2

    names, images = twin_photos
    folder = tmp_path / "images"
    folder.mkdir()
    for n, im in zip(names, images):
        cv2.imwrite(str(folder / f"{n}.png"), im)
    out = tmp_path / "out"
    r = run("pairs", str(folder), "--out", str(out), "--mode", "retrieval", "--top", "1")
    assert r.returncode == 0, r.stderr
    pairs = sorted(tuple(line.split()) for line in (out / "pairs.txt").read_text().splitlines())
    assert pairs == sorted((f"{n}_a.png", f"{n}_b.png") for n in ("astronaut", "chelsea", "coffee"))
    assert (out / "retrieval.npz").is_file() and len(list((out / "raw").glob("*.npz"))) == 3
    again = run("pairs", str(folder), "--out", str(out), "--mode", "retrieval", "--top", "1")
    assert again.returncode == 0 and "describing" not in again.stderr  # the descriptors were kept
    cv2.imwrite(str(folder / "coffee_b.png"), images[3][::-1])  # a file changed: all described again
    changed = run("pairs", str(folder), "--out", str(out), "--mode", "retrieval", "--top", "1")
    assert changed.returncode == 0 and "describing" in changed.stderr


def test_unreadable_images_stop_pairs_before_matching_or_are_left_out(tmp_path):
    """A truncated JPEG, a text file named .png and a zero-byte file are all reported before any pair is matched;
    with --skip-unreadable they are left out (also from a pairs file) and the readable pair is matched."""
    import cv2
    from skimage import data

    left, right, _ = data.stereo_motorcycle()
    images = tmp_path / "images"
    images.mkdir()
    cv2.imwrite(str(images / "a.png"), np.ascontiguousarray(left[..., ::-1]))
    cv2.imwrite(str(images / "b.jpg"), np.ascontiguousarray(right[..., ::-1]))
    (images / "c.jpg").write_bytes((images / "b.jpg").read_bytes()[:4000])  # truncated
    (images / "d.png").write_text("not an image")
    (images / "e.jpg").write_bytes(b"")
    out = tmp_path / "out"
    r = run("pairs", str(images), "--out", str(out))
    assert r.returncode == 1 and "3 of 5 images cannot be read" in r.stderr, r.stderr
    assert "c.jpg: corrupt or truncated" in r.stderr and "d.png: not an image" in r.stderr and "e.jpg: empty" in r.stderr
    assert not (out / "raw").exists() or not list((out / "raw").glob("*.npz"))  # nothing matched
    (tmp_path / "pairs.txt").write_text("a.png c.jpg\na.png b.jpg\n")
    for extra in ((), ("--pairs-file", str(tmp_path / "pairs.txt"))):
        out = tmp_path / f"out{len(extra)}"
        r = run("pairs", str(images), "--out", str(out), "--skip-unreadable", *extra)
        assert r.returncode == 0 and "leaving out 3 of 5 images" in r.stderr, r.stderr
        assert (out / "pairs.txt").read_text() == "a.png b.jpg\n"
        (raw,) = (out / "raw").glob("*.npz")
        assert len(np.load(raw)["keypoints0"]) > 500


def test_pose_without_intrinsics_guesses_them_and_warns_on_a_planar_scene(tmp_path):
    """No --K0/--K1: the EXIF focal length (here 35 mm-equivalent 28 mm) is used and said; two views of a flat
    picture are a planar scene, whose pose the command flags; --json records it all."""
    import json

    import cv2
    from PIL import Image
    from skimage import data

    img = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2GRAY)
    H = np.array([[0.95, 0.05, 12], [-0.04, 0.97, 8], [2e-4, 1e-4, 1]])
    other = cv2.warpPerspective(img, H, img.shape[::-1], borderMode=cv2.BORDER_REFLECT)
    exif = Image.Exif()
    exif.get_ifd(0x8769)[0xA405] = 28
    for name, im in (("a.jpg", img), ("b.jpg", other)):
        Image.fromarray(im).save(tmp_path / name, exif=exif, quality=95)
    r = run("pose", str(tmp_path / "a.jpg"), str(tmp_path / "b.jpg"), "--json", str(tmp_path / "pose.json"))
    assert r.returncode == 0, r.stderr
    f = 28 / np.hypot(36, 24) * np.hypot(512, 512)
    assert f"K0: f = {f:.1f} px" in r.stderr and "28 mm" in r.stderr
    assert "lie on one plane" in r.stderr
    rec = json.loads((tmp_path / "pose.json").read_text())
    assert rec["success"] and rec["planar"] and rec["inliers"] > 100
    np.testing.assert_allclose(np.array(rec["K1"]), [[f, 0, 255.5], [0, f, 255.5], [0, 0, 1]])
    assert np.allclose(np.array(rec["R"]) @ np.array(rec["R"]).T, np.eye(3), atol=1e-6)


def test_heic_folders_match_with_pairs_and_colmap_says_it_cannot_read_them(tmp_path):
    import pytest

    pytest.importorskip("pillow_heif")
    import cv2
    import pillow_heif
    from PIL import Image
    from skimage import data

    pillow_heif.register_heif_opener()
    left, right, _ = data.stereo_motorcycle()
    images = tmp_path / "images"
    images.mkdir()
    for name, im in (("a.heic", left), ("b.heic", right)):
        Image.fromarray(im).save(images / name, quality=95)
    r = run("pairs", str(images), "--out", str(tmp_path / "out"))
    assert r.returncode == 0, r.stderr
    (raw,) = (tmp_path / "out" / "raw").glob("*.npz")
    k0, k1 = np.load(raw)["keypoints0"], np.load(raw)["keypoints1"]
    assert len(k0) > 1000 and np.median(np.abs(k0[:, 1] - k1[:, 1])) < 1.0  # rectified: same rows
    c = run("colmap", str(images), "--out", str(tmp_path / "c"))
    assert c.returncode == 1 and "COLMAP cannot read HEIC/HEIF files (2, e.g. a.heic)" in c.stderr, c.stderr
    assert not (tmp_path / "c" / "raw").exists()  # refused before matching
