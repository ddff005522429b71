"""The top-down path to 1/2 resolution: strip-wise inference equals the whole-map computation."""

import pytest
import torch
import torch.nn.functional as F

from imamatch.model import TopDown, upsample_rows, zeros


@pytest.mark.parametrize("size", [(40, 56), (20, 28), (37, 50), (8, 8)])  # integer factors 8, 4; others
def test_upsample_rows_equals_interpolate(size):
    torch.manual_seed(0)
    x = torch.randn(2, 3, 5, 7)
    full = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    for lo in range(size[0]):
        for hi in range(lo + 1, size[0] + 1):
            torch.testing.assert_close(upsample_rows(x, size, lo, hi), full[:, :, lo:hi], atol=1e-6,
                                       rtol=0)


def test_upsample_window_equals_interpolate():
    torch.manual_seed(0)
    x = torch.randn(1, 2, 5, 7)
    size = (20, 28)
    full = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    for lo, hi in ((0, 20), (3, 9), (16, 20)):
        for left in range(0, 28, 3):
            for right in range(left + 1, 29, 5):
                torch.testing.assert_close(upsample_rows(x, size, lo, hi, left, right), full[:, :, lo:hi, left:right],
                                           atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="whole"):
        upsample_rows(x, (19, 28), 0, 5, 2, 9)


def _random_top_down(skip_dims, blocks, stem, smooth=True):
    torch.manual_seed(0)
    td = TopDown(coarse_dim=16, skip_dims=skip_dims, out_dim=8, n_blocks=blocks, pixel_stem=stem,
                 smooth=smooth).eval()
    for p in td.parameters():
        torch.nn.init.normal_(p, std=0.3)
    return td


@pytest.mark.parametrize("blocks,stem,smooth", [(2, True, True), (0, False, True), (0, False, False)])
def test_marked_cells_equal_the_whole_map_there(blocks, stem, smooth):
    """Only the marked 1/8 cells (of any batch item) are computed, column windows per strip: equal to the whole
    map on them, zero on the rows of strips without any (also with linear merges, ``smooth`` False: no halo)."""
    td = _random_top_down({2: 8}, blocks, stem, smooth)
    h, w = 96, 80
    coarse = torch.randn(2, 16, h // 8, w // 8)
    skips = {2: torch.randn(2, 8, h // 2, w // 2)}
    image = torch.rand(2, 1, h, w)
    cells = torch.zeros(2, h // 8, w // 8, dtype=torch.bool)
    cells[0, 1, 2] = cells[0, 2, 7] = cells[1, 4, 0] = cells[1, 4, 9] = True  # first strip; rows 4-7: none
    with torch.no_grad():
        whole = td(coarse, skips, image, strip=16)
        some = td(coarse, skips, image, strip=16, cells=cells)
    marked = cells.any(0).repeat_interleave(4, 0).repeat_interleave(4, 1)  # half-res pixels of marked cells
    assert int(marked.sum()) == 4 * 16
    torch.testing.assert_close(some[:, :, marked], whole[:, :, marked], atol=1e-5, rtol=1e-5)
    assert (some[:, :, 32:] == 0).all() and not (some[:, :, :16] == 0).all()


@pytest.mark.parametrize("blocks,stem,smooth", [(2, True, True), (0, True, True), (0, False, True), (1, False, True),
                                               (0, False, False), (1, True, False)])
@pytest.mark.parametrize("skip_dims", [{2: 8}, {4: 6, 2: 8}])
def test_strips_equal_the_whole_map(skip_dims, blocks, stem, smooth):
    """Also without the 1/2-res blocks, the pixel stem or the smoothing blocks (their 3×3 convs set the strips'
    halo)."""
    td = _random_top_down(skip_dims, blocks, stem, smooth)
    h, w = 64, 48
    coarse = torch.randn(1, 16, h // 8, w // 8)
    skips = {s: torch.randn(1, c, h // s, w // s) for s, c in skip_dims.items()}
    image = torch.rand(1, 1, h, w)
    with torch.no_grad():
        whole = td(coarse, skips, image, strip=h)
        for strip in (4, 7, 16):
            torch.testing.assert_close(td(coarse, skips, image, strip=strip), whole, atol=1e-5, rtol=1e-5)
    assert whole.shape == (1, 8, h // 2, w // 2)


def test_paste_rows_assembles_strips_in_their_memory_format():
    from imamatch.strips import paste_rows

    full = torch.randn(2, 5, 12, 7).contiguous(memory_format=torch.channels_last)
    out = None
    for r0 in (0, 5, 10):
        out = paste_rows(out, full[:, :, r0:r0 + 5], r0, 12)
    assert torch.equal(out, full) and out.is_contiguous(memory_format=torch.channels_last)
    plain = paste_rows(None, torch.ones(1, 2, 3, 4), 0, 3)
    assert plain.is_contiguous() and torch.equal(plain, torch.ones(1, 2, 3, 4))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_zeros_are_positive_zeros_of_the_dtype(dtype):
    z = zeros((2, 3, 5), dtype, torch.device("cpu"))
    assert z.dtype == dtype and z.shape == (2, 3, 5) and z.is_contiguous()
    assert (z == 0).all() and not torch.signbit(z).any()
    z[0, 0, 0] = 1.5  # a writable buffer of its own
    assert z.float().sum() == 1.5
