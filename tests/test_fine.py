"""Fine matching pieces: window sampling, heatmap lookup, consistency check, output geometry."""

import torch

from imamatch.fine import FineMatcher, heat_at, sample_windows, window_offsets


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
