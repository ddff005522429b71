"""The shipped matcher on real images with known answers."""

import dataclasses

import cv2
import numpy as np
import pytest
from skimage import data

from imamatch.eval.metrics import homography_corner_error
from imamatch.pose import estimate_homography


def test_graffiti_1to3_homography_under_3px(matcher, shared):
    out = matcher.match(shared / "graf" / "img1.png", shared / "graf" / "img3.png")
    H_gt = np.loadtxt(shared / "graf" / "H1to3p")
    H, inl = estimate_homography(out["keypoints0"], out["keypoints1"], threshold_px=3.0)
    err = homography_corner_error(H, H_gt, 800, 640)
    assert err < 3.0, err
    assert len(out["keypoints0"]) > 300


def test_stereo_pair_matches_follow_the_disparity(matcher):
    left, right, disp = data.stereo_motorcycle()
    out = matcher.match(left, right)
    k0, k1 = out["keypoints0"], out["keypoints1"]
    assert len(k0) > 1000
    xi, yi = np.round(k0[:, 0]).astype(int), np.round(k0[:, 1]).astype(int)
    d = disp[yi, xi]
    ok = np.isfinite(d)
    err = np.hypot(k1[ok, 0] - (k0[ok, 0] - d[ok]), k1[ok, 1] - k0[ok, 1])
    assert np.mean(err < 3) > 0.93 and np.mean(err < 1) > 0.82, (np.mean(err < 3), np.mean(err < 1))  # SIFT: .93, .82
    assert out["densified"].any() and out["num_densified"] > 0 and out["num_polished"] > len(k0) / 2


def test_scale_change_and_different_sizes(matcher):
    img = data.astronaut().mean(-1) / 255.0  # 512×512
    half = cv2.resize(img, (256, 256), interpolation=cv2.INTER_AREA)
    out = matcher.match(img, half)
    k0, k1 = out["keypoints0"], out["keypoints1"]
    assert len(k0) > 200
    expect = (k0 + 0.5) / 2 - 0.5  # pixel-centre convention
    err = np.linalg.norm(k1 - expect, axis=1)
    assert np.median(err) < 1.0, np.median(err)
    assert (k1 >= -0.5).all() and (k1[:, 0] <= 255.5).all() and (k1[:, 1] <= 255.5).all()


def test_deterministic_bit_identical(matcher):
    left, right, _ = data.stereo_motorcycle()
    a, b = matcher.match(left, right), matcher.match(left, right)
    for k in a:
        assert np.array_equal(a[k], b[k]), k


@pytest.mark.parametrize("shape", [(1, 1), (7, 5), (40, 30), (3000, 20)])
def test_tiny_and_odd_images_give_well_formed_results(matcher, shape):
    rng = np.random.default_rng(0)
    out = matcher.match(rng.random(shape, dtype=np.float32), rng.random((64, 64), dtype=np.float32))
    n = len(out["keypoints0"])
    assert out["keypoints0"].shape == (n, 2) and out["keypoints1"].shape == (n, 2)
    assert out["confidence"].shape == (n,) and out["densified"].dtype == bool
    assert np.isfinite(out["keypoints0"]).all()


def test_blank_and_identical_images(matcher):
    blank = np.full((240, 320), 0.5, np.float32)
    out = matcher.match(blank, blank)
    assert out["keypoints0"].shape[1] == 2  # well-formed, possibly empty
    img = data.camera() / 255.0
    same = matcher.match(img, img)
    assert len(same["keypoints0"]) > 500
    err = np.linalg.norm(same["keypoints0"] - same["keypoints1"], axis=1)
    # the photometric polish lands textured points on themselves
    assert np.median(err) < 0.2 and np.mean(err < 1) > 0.75, (np.median(err), np.mean(err < 1))


def test_relative_pose_on_the_posed_sequence(matcher, shared):
    from imamatch.data.posed import load_transforms, relative_pose, undistorted_image
    from imamatch.eval.metrics import pose_error_deg

    frames = load_transforms(shared / "fox")
    i, j = 10, 14
    a, b = undistorted_image(frames[i]), undistorted_image(frames[j])
    out = matcher.match(a, b, K0=frames[i].K, K1=frames[j].K)
    R_gt, t_gt = relative_pose(frames[i], frames[j])
    assert out["pose_success"]
    assert pose_error_deg(out["R"], out["t"], R_gt, t_gt) < 5.0
    with pytest.raises(ValueError, match="K1"):
        matcher.match(a, b, K0=frames[i].K, K1=np.eye(2))


def test_half_precision_storage_keeps_the_matches(matcher):
    from imamatch import IMAMatch

    left, right, _ = data.stereo_motorcycle()
    assert matcher.conf.store_fp16
    half = matcher.match(left, right)
    full = IMAMatch.from_pretrained(store_fp16=False).match(left, right)
    moved = _moved_between(full, half, min_common=0.98)
    assert np.median(moved) < 0.01 and np.mean(moved < 0.1) > 0.98


def _moved_between(a: dict, b: dict, min_common: float) -> np.ndarray:
    """Two results of one pair: asserts about the same matches (image-0 keypoints equal to 1e-3 px for at least
    ``min_common`` of ``a``'s) and returns how far their image-1 keypoints lie apart (px)."""
    assert abs(len(b["keypoints0"]) - len(a["keypoints0"])) < 0.01 * len(a["keypoints0"])
    idx = {tuple(k): i for i, k in enumerate(np.round(a["keypoints0"], 3))}
    pairs = [(idx[tuple(k)], i) for i, k in enumerate(np.round(b["keypoints0"], 3)) if tuple(k) in idx]
    assert len(pairs) > min_common * len(a["keypoints0"])
    return np.hypot(*(a["keypoints1"][[i for i, _ in pairs]] - b["keypoints1"][[j for _, j in pairs]]).T)


def test_strip_rows_change_the_memory_not_the_matches(matcher):
    """``strip_rows`` sets how many 1/2-res rows the backbone and top-down compute at a time: 8-row strips (28 on
    this pair, 224 rows) and the default (two) give the same matches up to float rounding; bad values are refused."""
    from imamatch import IMAMatch

    left, right, _ = data.stereo_motorcycle()
    narrow = IMAMatch.from_pretrained(strip_rows=8)
    assert narrow.net.backbone.strip_rows == narrow.net.top_down.strip_rows == 8
    moved = _moved_between(matcher.match(left, right), narrow.match(left, right), min_common=0.99)
    assert np.median(moved) < 1e-3 and np.mean(moved < 0.05) > 0.99
    with pytest.raises(ValueError, match="strip_rows"):
        IMAMatch.from_pretrained(strip_rows=30)


def test_large_jpeg_keypoints_are_in_the_file_pixels(matcher, tmp_path):
    """Files are decoded at a reduced scale for speed; the keypoints must still be in the file's pixels."""
    from PIL import Image

    big = cv2.resize(data.astronaut().mean(-1).astype(np.uint8), (2600, 2600), interpolation=cv2.INTER_CUBIC)
    Image.fromarray(big[:2000, :2400]).save(tmp_path / "a.jpg", quality=95)
    Image.fromarray(big[48:2048, 96:2496]).save(tmp_path / "b.jpg", quality=95)  # b(x, y) = a(x + 96, y + 48)
    out = matcher.match(tmp_path / "a.jpg", tmp_path / "b.jpg")
    shift = out["keypoints0"] - out["keypoints1"]
    assert len(shift) > 200
    np.testing.assert_allclose(np.median(shift, 0), [96, 48], atol=1.0)
    assert out["keypoints0"][:, 0].max() > 1200  # spans the file, not the 1/2- or 1/4-scale decode


def _strong_perspective():
    img = data.astronaut().mean(-1).astype(np.float32) / 255  # 512 × 512
    src = np.float32([[0, 0], [511, 0], [511, 511], [0, 511]])
    dst = np.float32([[150, 60], [430, 0], [470, 511], [110, 420]])  # foreshortened and turned
    H = cv2.getPerspectiveTransform(src, dst)  # image-0 pixels → image-1 pixels
    return img, cv2.warpPerspective(img, H, (512, 512), flags=cv2.INTER_LINEAR), H


def test_prealigned_pass_maps_matches_back_exactly():
    """Forced second pass (always): image 1 is warped onto image 0 and matched again; the matches must come
    back in image 1's pixels and follow the true homography."""
    from imamatch import IMAMatch

    img0, img1, H = _strong_perspective()
    out = IMAMatch.from_pretrained(prealign_below=1.0).match(img0, img1)
    assert out["prealigned"] and len(out["keypoints0"]) > 300
    expect = cv2.perspectiveTransform(out["keypoints0"][None].astype(np.float64), H)[0]
    err = np.linalg.norm(out["keypoints1"] - expect, axis=1)
    assert np.median(err) < 0.5 and np.mean(err < 2) > 0.9, (np.median(err), np.mean(err < 2))


def test_prealigned_passes_repeat_while_the_matches_grow():
    """``prealign_passes`` bounds the pre-aligned passes; each starts from the previous pass's matches and the
    loop stops as soon as a pass does not add matches; the pass with the most matches is returned."""
    from imamatch import IMAMatch

    img0, img1, H = _strong_perspective()
    counts = {}
    for passes in (0, 1, 3):
        out = IMAMatch.from_pretrained(prealign_below=1.0, prealign_passes=passes).match(img0, img1)
        assert out["prealigned"] == (passes > 0)
        assert 1 + min(passes, 1) <= out["num_passes"] <= 1 + passes
        counts[passes] = len(out["keypoints0"])
        expect = cv2.perspectiveTransform(out["keypoints0"][None].astype(np.float64), H)[0]
        assert np.median(np.linalg.norm(out["keypoints1"] - expect, axis=1)) < (2.0 if passes == 0 else 0.5)
    assert counts[0] < counts[1] <= counts[3]


def test_prealigned_pass_without_homography_or_matches():
    """Noise gives no coarse match, hence no homography to pre-align with: one pass, counted as one (two with the
    coarse-only shortcut: the first pass stops after coarse matching, then runs in full). A pre-aligned
    pass that finds nothing (here image 1 replaced by a blank one after the homography was found) returns an
    empty, well-formed result."""
    from imamatch import IMAMatch

    m = IMAMatch.from_pretrained(prealign_below=1.0)
    rng = np.random.default_rng(0)
    noise = rng.random((480, 640), dtype=np.float32), rng.random((480, 640), dtype=np.float32)
    out = m.match(*noise)
    assert len(out["keypoints0"]) == 0 and out["num_passes"] == 2 and not out["prealigned"]
    out = IMAMatch.from_pretrained(prealign_below=1.0, prealign_coarse_below=None).match(*noise)
    assert len(out["keypoints0"]) == 0 and out["num_passes"] == 1 and not out["prealigned"]
    img0, img1, _ = _strong_perspective()
    first = m._match_gray(img0, img1)
    assert len(first.result["keypoints0"]) > 100
    again = m._prealigned(img0, np.full_like(img1, 0.5), first)
    assert again is not None and again.result["prealigned"]
    assert again.result["keypoints0"].shape == again.result["keypoints1"].shape == (0, 2)


def test_graffiti_1to6_needs_the_prealigned_pass(matcher, shared):
    """The 60° view: one pass finds almost nothing; the homography of those few matches pre-aligns the second."""
    from imamatch import IMAMatch

    img1, img6 = shared / "graf" / "img1.png", shared / "graf" / "img6.png"
    H_gt = np.loadtxt(shared / "graf" / "H1to6p")
    one = IMAMatch.from_pretrained(prealign_below=None).match(img1, img6)
    out = matcher.match(img1, img6)
    assert not one["prealigned"] and len(one["keypoints0"]) < 100
    assert out["prealigned"] and len(out["keypoints0"]) > 1000
    H, _ = estimate_homography(out["keypoints0"], out["keypoints1"], threshold_px=3.0)
    assert homography_corner_error(H, H_gt, 800, 640) < 5.0


def test_prealigned_passes_at_their_own_resolution():
    """``prealign_resize``: the first pass at ``resize`` (320 px here), the pre-aligned pass of the hard pair at
    512 px, with image 0's features recomputed at that size (those of the first pass do not fit it); the matches
    still follow the true homography in the images' own pixels."""
    from imamatch import IMAMatch

    img0, img1, H = _strong_perspective()
    m = IMAMatch.from_pretrained(resize=320, prealign_resize=512, prealign_below=1.0)
    first = m._match_gray(img0, img1)
    again = m._prealigned(img0, img1, first)
    assert (first.side, again.side) == (320, 512) and first.px == pytest.approx(1.6) and again.px == 1.0
    assert first.features0.coarse.shape[-2:] == (40, 40) and again.features0.coarse.shape[-2:] == (64, 64)
    out = m.match(img0, img1)
    assert out["prealigned"] and len(out["keypoints0"]) > 1000
    expect = cv2.perspectiveTransform(out["keypoints0"][None].astype(np.float64), H)[0]
    assert np.median(np.linalg.norm(out["keypoints1"] - expect, axis=1)) < 0.5
    for bad in (0, -640, 12.5, True, "640"):
        with pytest.raises(ValueError, match="prealign_resize"):
            IMAMatch.from_pretrained(prealign_resize=bad)
    assert IMAMatch.from_pretrained(prealign_resize=np.int64(640)).conf.prealign_resize == 640


def test_prealigned_pass_falls_back_to_the_coarse_matches():
    """When too few fine matches survive for a homography, the coarse matches' cell centres give it."""
    from imamatch import IMAMatch

    img0, img1, H = _strong_perspective()
    m = IMAMatch.from_pretrained()
    first = m._match_gray(img0, img1)
    assert len(first.coarse[0]) > 100
    none = {k: v[:0] if isinstance(v, np.ndarray) and v.ndim else v for k, v in first.result.items()}  # no fine match
    out = m._prealigned(img0, img1, dataclasses.replace(first, result=none)).result
    assert out["prealigned"] and len(out["keypoints0"]) > 300
    expect = cv2.perspectiveTransform(out["keypoints0"][None].astype(np.float64), H)[0]
    assert np.median(np.linalg.norm(out["keypoints1"] - expect, axis=1)) < 0.5


def test_hard_first_pass_stops_after_coarse_matching():
    """A first pass with few coarse matches (here any: ``prealign_coarse_below=1``) builds no fine maps and
    returns no fine matches; the pre-aligned pass then starts from its coarse matches and must still follow
    the true homography. Without pre-alignment the first pass is always run in full."""
    from imamatch import IMAMatch

    img0, img1, H = _strong_perspective()
    m = IMAMatch.from_pretrained(prealign_coarse_below=1.0)
    first = m._match_gray(img0, img1, coarse_only_below=1.0)
    assert first.coarse_only and len(first.result["keypoints0"]) == 0 and len(first.coarse[0]) > 100
    out = m.match(img0, img1)
    assert out["prealigned"] and len(out["keypoints0"]) > 300
    expect = cv2.perspectiveTransform(out["keypoints0"][None].astype(np.float64), H)[0]
    assert np.median(np.linalg.norm(out["keypoints1"] - expect, axis=1)) < 0.5
    never = IMAMatch.from_pretrained(prealign_coarse_below=1.0, prealign_below=None).match(img0, img1)
    assert not never["prealigned"] and never["num_passes"] == 1 and len(never["keypoints0"]) > 100


def test_coarse_only_first_pass_is_redone_in_full_when_pre_alignment_fails(monkeypatch):
    """No pre-aligned pass possible after a coarse-only first pass: the first pass runs in full after all, so
    the result is the one without the shortcut."""
    from imamatch import IMAMatch

    img0, img1, _ = _strong_perspective()
    expect = IMAMatch.from_pretrained(prealign_below=None).match(img0, img1)
    m = IMAMatch.from_pretrained(prealign_coarse_below=1.0)
    monkeypatch.setattr(m, "_prealigned", lambda *args, **kwargs: None)
    out = m.match(img0, img1)
    assert not out["prealigned"] and out["num_passes"] == 2
    np.testing.assert_array_equal(out["keypoints0"], expect["keypoints0"])
    np.testing.assert_array_equal(out["keypoints1"], expect["keypoints1"])


def test_fine_maps_only_around_the_coarse_matches_give_the_same_matches(monkeypatch):
    """At inference the fine maps are computed only where fine matching reads them (image 0's matched cells,
    image 1's and two cells around them): the matches equal those on the whole maps up to rounding. The
    photometric polish is off: its Gauss-Newton steps can turn the maps' ~1e-4 px rounding into a few 1e-3 px."""
    from imamatch import IMAMatch

    img0, img1, _ = _strong_perspective()
    img1 = img1[:400]  # part of image 0 has no counterpart: fewer cells matched
    m = IMAMatch.from_pretrained(prealign_below=None, subpixel=False)
    some = m.match(img0, img1)
    full_maps = m.net.fine_maps
    monkeypatch.setattr(m.net, "fine_maps", lambda att, i0, i1, matches=None: full_maps(att, i0, i1))
    whole = m.match(img0, img1)
    assert len(some["keypoints0"]) > 300
    np.testing.assert_array_equal(some["keypoints0"], whole["keypoints0"])
    np.testing.assert_allclose(some["keypoints1"], whole["keypoints1"], atol=1e-3)


def test_prealigned_pass_reuses_image_0s_self_attention_exactly():
    """Image 0's first self-attention output depends on image 0 alone: a pre-aligned pass that reuses it gives
    the matches of one that computes it again."""
    from imamatch import IMAMatch

    img0, img1, _ = _strong_perspective()
    m = IMAMatch.from_pretrained()
    first = m._match_gray(img0, img1)
    assert first.self0 is not None
    reused = m._prealigned(img0, img1, first).result
    again = m._prealigned(img0, img1, dataclasses.replace(first, self0=None)).result
    assert len(reused["keypoints0"]) > 300
    for k in ("keypoints0", "keypoints1", "confidence"):
        np.testing.assert_array_equal(reused[k], again[k])


def test_query_budget_bounds_the_fine_queries_not_the_precision(matcher):
    """Past ``densify_max_queries`` only some coarse matches are densified: fewer queries, the same coarse matches,
    and matches at least as precise on Middlebury Motorcycle (ground-truth disparity)."""
    from imamatch import IMAMatch
    from imamatch.eval.suite import stereo_errors

    left, right, disp = data.stereo_motorcycle()
    budget = matcher.match(left, right)
    full = IMAMatch.from_pretrained(densify_max_queries=None).match(left, right)
    assert matcher.conf.densify_max_queries == 4000
    assert budget["num_queries"] <= 4000 < full["num_queries"]
    assert budget["num_coarse"] == full["num_coarse"]
    assert len(full["keypoints0"]) > len(budget["keypoints0"]) > 1500

    def within_1px(out):
        e = stereo_errors(out["keypoints0"], out["keypoints1"], disp)
        return np.mean(e[np.isfinite(e)] < 1)

    assert within_1px(budget) >= within_1px(full) - 0.01


def test_match_many_equals_match_pair_by_pair(matcher):
    """One image 0 against several images 1 (an easy pair, a hard one that is pre-aligned, the easy one again):
    image 0 is read and encoded once, and every result equals :meth:`IMAMatch.match` on its pair to the bit, the
    relative pose with intrinsics included."""
    img0, warped, _ = _strong_perspective()
    hard = cv2.warpAffine(warped, cv2.getRotationMatrix2D((256, 256), 45, 1.0), (512, 512))  # and turned 45°
    shift = np.float32([[1, 0, 9.5], [0, 1, -6.25]])
    easy = cv2.warpAffine(img0, shift, (512, 512), flags=cv2.INTER_LINEAR)
    K = np.array([[500.0, 0, 256], [0, 500.0, 256], [0, 0, 1]])
    images1 = [easy, hard, easy]
    many = list(matcher.match_many(img0, iter(images1), K0=K, K1s=[K] * 3))
    assert [r["prealigned"] for r in many] == [False, True, False] and len(many[1]["keypoints0"]) > 300
    for got, image1 in zip(many, images1):
        expect = matcher.match(img0, image1, K0=K, K1=K)
        assert got.keys() == expect.keys()
        for k in expect:
            np.testing.assert_array_equal(got[k], expect[k], err_msg=k)
    with pytest.raises(ValueError, match="K1s"):
        next(matcher.match_many(img0, [easy], K0=K))
    with pytest.raises(ValueError):  # one intrinsics matrix per image 1
        list(matcher.match_many(img0, [easy, hard], K0=K, K1s=[K]))
