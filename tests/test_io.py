"""Image input: every supported kind of input, and a clear ImageError naming the input for bad ones."""


import cv2
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image

from imamatch.errors import ImageError
from imamatch.io import prepare, read_image, read_image_sized, to_gray, to_gray_sized, to_original


def _ramp(h=60, w=80):
    return (np.arange(h)[:, None] * 2 + np.arange(w)[None, :]).astype(np.uint8)


def test_16bit_rgba_palette_and_plain(tmp_path):
    g = _ramp()
    cv2.imwrite(str(tmp_path / "g16.png"), g.astype(np.uint16) * 257)
    a = read_image(tmp_path / "g16.png")
    np.testing.assert_allclose(a, g / 255.0, atol=1e-4)
    rgba = np.dstack([g, g, g, np.full_like(g, 255)])
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    np.testing.assert_allclose(read_image(tmp_path / "rgba.png"), g / 255.0, atol=1e-2)
    Image.fromarray(g).convert("P").save(tmp_path / "pal.png")
    assert read_image(tmp_path / "pal.png").shape == g.shape


def test_exif_orientation_is_applied(tmp_path):
    g = _ramp(40, 100)
    im = Image.fromarray(g)
    exif = im.getexif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    im.save(tmp_path / "rot.jpg", exif=exif.tobytes(), quality=95)
    assert read_image(tmp_path / "rot.jpg").shape == (100, 40)


@pytest.mark.parametrize("kind", ["missing", "zero", "truncated", "garbage", "text", "dir"])
def test_bad_files_raise_image_error_naming_the_file(tmp_path, kind):
    p = tmp_path / f"bad_{kind}.png"
    if kind == "zero":
        p.write_bytes(b"")
    elif kind == "truncated":
        ok, buf = cv2.imencode(".png", np.random.default_rng(0).integers(0, 255, (200, 200), dtype=np.uint8))
        p.write_bytes(buf.tobytes()[: len(buf) // 2])
    elif kind == "garbage":
        p.write_bytes(np.random.default_rng(1).bytes(5000))
    elif kind == "text":
        p.write_text("not an image at all\n" * 20)
    elif kind == "dir":
        p.mkdir()
    with pytest.raises(ImageError, match="bad_"):
        read_image(p)


def test_arrays_tensors_and_pil():
    g = _ramp()
    ref = g / 255.0
    np.testing.assert_allclose(to_gray(g), ref, atol=1e-6)
    np.testing.assert_allclose(to_gray(np.dstack([g] * 3)), ref, atol=1e-4)
    np.testing.assert_allclose(to_gray(torch.from_numpy(g)[None, None].float() / 255), ref, atol=1e-6)
    np.testing.assert_allclose(to_gray(torch.from_numpy(np.dstack([g] * 3)).permute(2, 0, 1)), ref, atol=1e-4)
    np.testing.assert_allclose(to_gray(Image.fromarray(g)), ref, atol=1e-6)
    assert to_gray(np.zeros((1, 1), np.float32)).shape == (1, 1)


@pytest.mark.parametrize("bad", [np.full((10, 10), np.nan, np.float32), np.zeros((4, 5, 6)), np.zeros((0, 5)),
                                 np.zeros((2, 3, 4, 5)), "x" * 3])
def test_bad_arrays(bad):
    with pytest.raises(ImageError):
        to_gray(bad if not isinstance(bad, str) else [bad], name="img")


def test_prepare_pads_and_maps_back():
    g = np.random.default_rng(0).random((300, 500), dtype=np.float32)
    p = prepare(g, 640)
    assert p.size == (384, 640) and p.tensor.shape == (1, 1, 384, 640)
    assert p.valid.shape == (1, 48, 80) and bool(p.valid.all())
    q = prepare(g, 200)
    assert q.tensor.shape[-1] % 32 == 0 and q.size == (120, 200)
    assert int(q.valid.sum()) == 15 * 25
    # pixel centres map back exactly: resized pixel x ↔ original (x + 0.5) * s - 0.5
    np.testing.assert_allclose(to_original(np.array([[-0.5, -0.5], [199.5, 119.5]]), q), [[-0.5, -0.5], [499.5, 299.5]])
    # a 16:9 frame at 640: 360 rows, a multiple of 8 (no padding) but not of 32 (24 padded rows)
    wide = np.zeros((1080, 1920), np.float32)
    assert prepare(wide, 640, 8).tensor.shape == (1, 1, 360, 640)
    assert prepare(wide, 640).tensor.shape == (1, 1, 384, 640)
    assert prepare(g, 200, 8).tensor.shape == (1, 1, 120, 200) and bool(prepare(g, 200, 8).valid.all())
    with pytest.raises(ValueError, match="multiple of 8"):
        prepare(g, 640, 12)


def test_huge_jpeg_decodes_with_bounded_size(tmp_path):
    big = np.tile(_ramp(100, 100), (40, 200))  # 4000 × 20000
    cv2.imwrite(str(tmp_path / "huge.jpg"), big)
    a = read_image(tmp_path / "huge.jpg", max_side=640)
    assert max(a.shape) < 20000 and max(a.shape) >= 640  # decoded at a reduced scale
    b, full = read_image_sized(tmp_path / "huge.jpg", max_side=640)
    assert b.shape == a.shape and full == (4000, 20000)  # keypoints map back to the file's pixels


@pytest.mark.parametrize("orientation", [1, 6])
def test_reduced_decode_reports_the_full_size_after_exif(tmp_path, orientation):
    img = Image.fromarray(np.tile(_ramp(100, 100), (12, 32)))  # 1200 × 3200
    exif = Image.Exif()
    exif[0x0112] = orientation
    img.save(tmp_path / "o.jpg", exif=exif)
    gray, full = to_gray_sized(tmp_path / "o.jpg", max_side=300)
    expect = (1200, 3200) if orientation == 1 else (3200, 1200)  # 6 = rotate 90°: the axes swap
    assert full == expect and max(gray.shape) < 3200
    assert gray.shape[0] / gray.shape[1] == pytest.approx(full[0] / full[1], rel=0.01)
    arr = np.zeros((30, 50), np.float32)
    assert to_gray_sized(arr)[1] == (30, 50)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(min_size=0, max_size=3000))
def test_fuzz_file_bytes(tmp_path_factory, data):
    p = tmp_path_factory.mktemp("fz") / "f.img"
    p.write_bytes(data)
    try:
        a = read_image(p)
    except ImageError:
        return
    assert a.ndim == 2 and a.dtype == np.float32 and np.isfinite(a).all()


@settings(max_examples=60, deadline=None)
@given(hnp.arrays(dtype=st.sampled_from([np.uint8, np.uint16, np.float32, np.float64, np.int32, np.bool_]),
                  shape=hnp.array_shapes(min_dims=1, max_dims=4, min_side=0, max_side=12)))
def test_fuzz_arrays(arr):
    try:
        a = to_gray(arr)
    except ImageError:
        return
    assert a.ndim == 2 and a.dtype == np.float32 and np.isfinite(a).all() and a.min() >= 0 and a.max() <= 1


def test_huge_finite_floats_are_refused_as_out_of_range_not_as_nan():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow in a float32 cast before the check
        with pytest.raises(ImageError, match=r"\[0, 1\]; this one spans \[-1e\+300, 1e\+300\]"):
            to_gray(np.array([[1e300, -1e300], [0.5, 2.0]]))
        a = to_gray(np.array([[1.2, -0.2], [0.5, 1.0]]))  # float64, slight overshoot: clipped
    np.testing.assert_array_equal(a, np.array([[1.0, 0.0], [0.5, 1.0]], np.float32))


@pytest.mark.parametrize("orientation", range(1, 9))
def test_points_map_back_to_the_stored_pixels_of_an_exif_oriented_file(tmp_path, orientation):
    """read_image applies the EXIF orientation; to_stored_pixels takes its points back to the file's own pixels
    (what COLMAP reads): every displayed pixel lands on the stored pixel that shows it."""
    from imamatch.io import stored_orientation, to_stored_pixels

    stored = (np.arange(9 * 13).reshape(9, 13) * 2).astype(np.uint8)  # 13 × 9, every pixel distinct
    im = Image.fromarray(stored)
    exif = im.getexif()
    exif[0x0112] = orientation
    im.save(tmp_path / "o.png", exif=exif.tobytes())
    shown = np.rint(read_image(tmp_path / "o.png") * 255).astype(np.uint8)
    o, size = stored_orientation(tmp_path / "o.png")
    assert o == orientation and size == (13, 9)
    ys, xs = np.mgrid[:shown.shape[0], :shown.shape[1]]
    back = np.rint(to_stored_pixels(np.c_[xs.ravel(), ys.ravel()], o, size)).astype(int)
    assert np.array_equal(stored[back[:, 1], back[:, 0]], shown.ravel())


def test_float_images_far_outside_the_unit_range_are_refused_with_a_hint():
    """A float image of 8-bit values (0-255) would be clipped to white and match nothing: refused, with a hint.
    Slight overshoot (resampling) is clipped as before."""
    g = np.arange(12 * 10, dtype=np.float32).reshape(12, 10) / 119
    np.testing.assert_array_equal(to_gray(g), g)
    np.testing.assert_array_equal(to_gray(g * 1.2 - 0.1), np.clip(g * 1.2 - 0.1, 0, 1))
    with pytest.raises(ImageError, match=r"\[0, 1\].*divide by 255"):
        to_gray(g * 255)
    with pytest.raises(ImageError, match="divide by 65535"):
        to_gray(torch.from_numpy(g * 60000)[None])
    with pytest.raises(ImageError, match=r"spans \[-2"):
        to_gray((g - 0.5) * 4)  # mean-subtracted, normalised
    with pytest.raises(ImageError, match="NaN or inf"):
        to_gray(np.array([[np.inf, 0.0]]))


def test_float_files_are_stretched_to_the_unit_range_and_float_masks_read_as_nonzero(tmp_path):
    from imamatch.io import read_mask

    g = np.arange(12 * 10, dtype=np.float32).reshape(12, 10)
    Image.fromarray(g * 3 + 7, mode="F").save(tmp_path / "f.tif")
    np.testing.assert_allclose(read_image(tmp_path / "f.tif"), g / g.max(), atol=1e-6)
    Image.fromarray(g / g.max(), mode="F").save(tmp_path / "unit.tif")
    np.testing.assert_allclose(read_image(tmp_path / "unit.tif"), g / g.max(), atol=1e-6)
    mask = np.zeros((12, 10), np.float32)
    mask[:, 5:] = 255.0
    np.testing.assert_array_equal(read_mask(mask, (12, 10), (12, 10)), mask > 0)


def test_heic_photos_read_with_pillow_heif_and_are_refused_clearly_without(tmp_path, monkeypatch):
    """iPhone photos (HEIC) match like any other file when the optional pillow-heif is installed; without it, the
    reader and the collection check name the missing package."""
    pytest.importorskip("pillow_heif")
    from skimage import data

    import imamatch.io as io
    from imamatch import IMAMatch

    img = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2GRAY)
    H = np.array([[0.95, 0.05, 12], [-0.04, 0.97, 8], [2e-4, 1e-4, 1]])
    other = cv2.warpPerspective(img, H, img.shape[::-1], borderMode=cv2.BORDER_REFLECT)
    assert io.heif_support()
    for name, im in (("a.heic", img), ("b.HEIF", other)):
        Image.fromarray(im).convert("RGB").save(tmp_path / name, quality=95)
    assert io.unreadable_reason(tmp_path / "a.heic") is None
    np.testing.assert_allclose(read_image(tmp_path / "a.heic") * 255, img, atol=12)  # lossy, but this picture
    out = IMAMatch.from_pretrained().match(tmp_path / "a.heic", tmp_path / "b.HEIF")
    k0, k1 = out["keypoints0"], out["keypoints1"]
    proj = cv2.perspectiveTransform(k0[None].astype(np.float64), H)[0]
    assert len(k0) > 500 and np.median(np.linalg.norm(proj - k1, axis=1)) < 1.0
    monkeypatch.setattr(io, "_heif", False)  # as without the package
    assert "pip install pillow-heif" in io.unreadable_reason(tmp_path / "a.heic")
    with pytest.raises(ImageError, match="pillow-heif"):
        read_image(tmp_path / "a.heic")
