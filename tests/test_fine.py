"""Fine matching pieces: window sampling, heatmap lookup, consistency check, output geometry."""

import torch

from imamatch.fine import FineMatcher, WindowSource, chunk_bounds, heat_at, sample_windows, window_offsets


def test_windows_sample_exact_positions():
    h, w = 20, 30
    ys, xs = torch.meshgrid(torch.arange(h).float(), torch.arange(w).float(), indexing="ij")
    fmap = torch.stack([xs, ys])[None].repeat(2, 1, 1, 1)  # channel 0 = x, channel 1 = y
    fmap[1] += 100
    centres = torch.tensor([[10.25, 7.5], [3.0, 4.0]])
    b = torch.tensor([0, 1])
    win = sample_windows(fmap, b, centres, 3)
    expect = centres[:, None, :] + window_offsets(3)[None]
    expect[1] += 100
    torch.testing.assert_close(win, expect, atol=1e-4, rtol=0)


def test_heat_at_reads_bilinear_values():
    heat = torch.zeros(1, 9)
    heat[0, 4] = 1.0  # centre of a 3×3 window
    assert abs(float(heat_at(heat, 3, torch.tensor([[0.0, 0.0]]))) - 1.0) < 1e-6
    assert abs(float(heat_at(heat, 3, torch.tensor([[0.5, 0.0]]))) - 0.5) < 1e-6


def test_consistency_rejects_disagreeing_heads():
    fm = FineMatcher(dim=8, size=7, bound=3.0, refine_size=3, refine_bound=1.5, refine_iters=1,
                     radius=1.0, min_prob=0.05)
    heat = torch.full((3, 49), 0.01)
    heat[:, 24 + 2] = 1 - 0.01 * 48  # peak at offset (+2, 0)
    offsets = torch.tensor([[2.2, 0.1], [-2.0, 0.0], [2.0, 1.5]])
    ok, peak = fm.consistency(offsets, heat)
    assert ok.tolist() == [True, False, False]
    assert torch.allclose(peak, heat.max(-1).values)


def test_windows_match_grid_sample_inside_and_across_the_border():
    g = torch.Generator().manual_seed(0)
    fmap = torch.randn(2, 5, 17, 23, generator=g)
    centres = torch.rand(300, 2, generator=g) * torch.tensor([29.0, 23.0]) - 3.0  # up to 3 px outside
    b = torch.randint(0, 2, (300,), generator=g)
    for size in (1, 3, 7):
        pts = centres[:, None, :] + window_offsets(size)[None]
        grid = torch.stack([2 * pts[..., 0] / 22 - 1, 2 * pts[..., 1] / 16 - 1], -1)
        expect = torch.stack([torch.nn.functional.grid_sample(fmap[bi:bi + 1], grid[i:i + 1, None], align_corners=True)
                              [0, :, 0].T for i, bi in enumerate(b.tolist())])
        torch.testing.assert_close(sample_windows(fmap, b, centres, size), expect, atol=1e-5, rtol=0)


def test_shared_reference_windows_give_the_same_result():
    torch.manual_seed(0)
    fm = FineMatcher(dim=8, size=7, bound=3.0, refine_size=3, refine_bound=1.5, refine_iters=1,
                     radius=1.0, min_prob=0.0)
    f0, f1 = torch.randn(2, 8, 20, 24), torch.randn(2, 8, 20, 24)
    parent = torch.tensor([0, 0, 0, 0, 1, 2, 2, 2, 2, 3])  # densified groups of 4 and single matches
    refs = torch.tensor([[5.5, 5.5], [9.5, 5.5], [13.5, 9.5], [17.5, 13.5]])[parent]
    b = torch.tensor([0, 0, 1, 1])[parent]
    query0 = torch.rand(10, 2) * 16 + 2
    with torch.no_grad():
        shared = fm(f0, f1, b, query0, refs, parent)
        single = fm(f0, f1, b, query0, refs)
    torch.testing.assert_close(shared.match1, single.match1)
    torch.testing.assert_close(shared.heat, single.heat)


def test_chunk_bounds_cover_everything_and_keep_groups_whole():
    group = torch.tensor([0, 0, 0, 0, 1, 2, 2, 2, 2, 3, 4, 4, 4, 4, 5])
    for chunk in (1, 3, 4, 5, 100, None):
        bounds = chunk_bounds(len(group), group, chunk)
        assert bounds[0][0] == 0 and bounds[-1][1] == len(group)
        assert all(hi == lo2 for (_, hi), (lo2, _) in zip(bounds[:-1], bounds[1:]))
        assert all(group[lo - 1] != group[lo] for lo, _ in bounds[1:])  # no group split across chunks
    assert len(chunk_bounds(len(group), group, 4)) > 1
    assert chunk_bounds(10, None, 4) == [(0, 4), (4, 8), (8, 10)]


def test_chunked_matching_equals_one_pass():
    torch.manual_seed(0)
    fm = FineMatcher(dim=8, size=7, bound=3.0, refine_size=3, refine_bound=1.5, refine_iters=2,
                     radius=1.0, min_prob=0.0)
    f0, f1 = torch.randn(2, 8, 20, 24), torch.randn(2, 8, 20, 24)
    parent = torch.tensor([0, 0, 0, 0, 1, 2, 2, 2, 2, 3, 4, 4, 4, 4])
    refs = (torch.rand(5, 2) * 16 + 2)[parent]
    b = torch.tensor([0, 0, 1, 1, 0])[parent]
    query0 = torch.rand(14, 2) * 16 + 2
    with torch.no_grad():
        whole = fm(f0, f1, b, query0, refs, parent)
        parts = fm(f0, f1, b, query0, refs, parent, chunk=3)
    for name in ("match1", "stage1", "offset1", "heat", "consistent", "peak_prob"):
        torch.testing.assert_close(getattr(parts, name), getattr(whole, name), atol=1e-6, rtol=0)
    for a, c in zip(parts.offsets2 + parts.refs2, whole.offsets2 + whole.refs2):
        torch.testing.assert_close(a, c, atol=1e-6, rtol=0)


def test_windows_from_a_shared_source_and_far_outside():
    g = torch.Generator().manual_seed(1)
    fmap = torch.randn(2, 4, 11, 13, generator=g)
    centres = torch.rand(50, 2, generator=g) * 20 - 4
    b = torch.randint(0, 2, (50,), generator=g)
    src = WindowSource.of(fmap.contiguous(memory_format=torch.channels_last))
    for size in (1, 3, 7):
        torch.testing.assert_close(sample_windows(src, b, centres, size), sample_windows(fmap, b, centres, size))
    far = torch.tensor([[-40.0, 5.0], [5.0, 1e9], [float("-inf"), 3.0]])
    assert (sample_windows(fmap, torch.zeros(3, dtype=torch.long), far, 7)[:2] == 0).all()


def test_refining_only_consistent_queries_keeps_their_matches():
    torch.manual_seed(1)
    fm = FineMatcher(dim=8, size=7, bound=3.0, refine_size=3, refine_bound=1.5, refine_iters=2,
                     radius=1.0, min_prob=0.0)
    f0, f1 = torch.randn(1, 8, 30, 30), torch.randn(1, 8, 30, 30)
    query0 = torch.rand(200, 2) * 26 + 2
    refs = query0 + torch.randn(200, 2)
    b = torch.zeros(200, dtype=torch.long)
    with torch.no_grad():
        full = fm(f0, f1, b, query0, refs)
        some = fm(f0, f1, b, query0, refs, refine_consistent_only=True)
    ok = full.consistent
    assert 0 < int(ok.sum()) < 200  # both kinds present, else the test says nothing
    torch.testing.assert_close(some.consistent, ok)
    torch.testing.assert_close(some.match1[ok], full.match1[ok])
    torch.testing.assert_close(some.match1[~ok], full.stage1[~ok])  # not refined
    assert all(float(o[~ok].abs().max()) == 0 for o in some.offsets2)


def _stage_on_windows(stage, q, f1, b, ref1):
    """The fine stage written on explicitly sampled windows (the definition the patch form must equal)."""
    w1 = sample_windows(f1, b, ref1, stage.size)                                   # N, S², C
    qk = stage.query(q) @ stage.key.weight / q.shape[1] ** 0.5
    logits = torch.einsum("nc,nsc->ns", qk, w1)
    heat = torch.softmax(logits, -1)
    attended = torch.einsum("ns,nsc->nc", heat, w1)
    centre = w1[:, stage.size * stage.size // 2]
    return stage.bound * torch.tanh(stage.regress(torch.cat([q, centre, attended, logits], -1))), heat


def test_stage_on_patches_equals_stage_on_windows_with_gradients():
    torch.manual_seed(2)
    fm = FineMatcher(dim=8, size=7, bound=3.0, refine_size=3, refine_bound=1.5, refine_iters=1,
                     radius=1.0, min_prob=0.0)
    parent = torch.tensor([0, 0, 0, 0, 1, 2, 2, 2, 2, 3])
    ref1 = (torch.rand(4, 2) * 30 - 4)[parent]  # some windows cross the border
    b = torch.tensor([0, 1, 1, 0])[parent]
    for stage in (fm.stage1, fm.stage2):
        f1 = torch.randn(2, 8, 20, 24, requires_grad=True)
        q = torch.randn(10, 8, requires_grad=True)
        off, heat = stage(q, f1, b, ref1, parent)
        off_w, heat_w = _stage_on_windows(stage, q, f1, b, ref1)
        torch.testing.assert_close(off, off_w, atol=1e-5, rtol=0)
        torch.testing.assert_close(heat, heat_w, atol=1e-6, rtol=0)
        w = torch.randn_like(off)
        g = torch.autograd.grad((off * w).sum() + heat.square().sum(), (f1, q))
        g_w = torch.autograd.grad((off_w * w).sum() + heat_w.square().sum(), (f1, q))
        for x, y in zip(g, g_w):
            assert x.abs().sum() > 0
            torch.testing.assert_close(x, y, atol=1e-5, rtol=1e-4)
