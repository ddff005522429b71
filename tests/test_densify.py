"""Increased matching amount: which matches are expanded and where the sub-points lie."""

import pytest
import torch

from imamatch.coarse import CoarseMatches
from imamatch.densify import cell_centres, densify_mask, make_queries, sub_offsets


def test_cell_centres_in_half_resolution():
    # cell (x=2, y=1) of a 5-wide grid covers half-pixels 8..11 × 4..7: centre (9.5, 5.5)
    torch.testing.assert_close(cell_centres(torch.tensor([7]), 5), torch.tensor([[9.5, 5.5]]))


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_sub_points_fill_the_cell_symmetrically(n):
    o = sub_offsets(n)
    assert o.shape == (n * n, 2)
    assert (o.abs() < 2).all()  # inside the 4×4 half-pixel cell
    torch.testing.assert_close(o.mean(0), torch.zeros(2), atol=1e-6, rtol=0)
    if n == 4:  # exactly the 16 half-pixels of the cell
        assert sorted(set(o[:, 0].tolist())) == [-1.5, -0.5, 0.5, 1.5]


def test_band_rule_and_counts():
    conf = torch.tensor([0.1, 0.3, 0.5, 0.7, 0.95])
    assert densify_mask(conf, "band", (0.2, 0.6)).tolist() == [False, True, True, False, False]
    assert densify_mask(conf, "none", (0.2, 0.6)).sum() == 0
    assert densify_mask(conf, "all", (0.2, 0.6)).all()
    m = CoarseMatches(torch.zeros(5, dtype=torch.long), torch.arange(5), torch.arange(5) + 10, conf)
    q = make_queries(m, 6, 6, densify_mask(conf, "band", (0.2, 0.6)), 9)
    assert len(q.b) == 3 + 2 * 9
    assert int(q.densified.sum()) == 18
    # densified sub-points share the reference cell of their parent
    c1 = cell_centres(m.i1, 6)
    torch.testing.assert_close(q.ref1, c1[q.parent])
    with pytest.raises(ValueError):
        make_queries(m, 6, 6, torch.ones(5, dtype=torch.bool), 5)
