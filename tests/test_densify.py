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


def test_query_budget_expands_an_even_subset():
    conf = torch.full((100,), 0.5)
    full = densify_mask(conf, "all", (0.2, 0.6), 4, max_queries=None)
    assert full.all()
    assert densify_mask(conf, "all", (0.2, 0.6), 4, max_queries=400).all()  # 100 · 4 fits exactly
    dense = densify_mask(conf, "all", (0.2, 0.6), 4, max_queries=250)
    assert int(dense.sum()) == 50  # 100 + 3 · 50 = 250 queries
    assert 100 + 3 * int(dense.sum()) <= 250
    gaps = torch.diff(dense.nonzero()[:, 0])
    assert gaps.max() <= 3  # spread over all of them, not the first half
    # stable: one match more changes at most one other's choice (the rest keep theirs)
    cells = torch.arange(100) * 3
    before = set(cells[densify_mask(conf, "all", (0.2, 0.6), 4, 250, cells)].tolist())
    more = torch.cat([cells, torch.tensor([301])])
    after = set(more[densify_mask(torch.full((101,), 0.5), "all", (0.2, 0.6), 4, 251, more)].tolist())
    assert len(before - after) <= 1
    assert not densify_mask(conf, "all", (0.2, 0.6), 4, max_queries=80).any()  # coarse matches alone exceed it
    # band mode: the subset comes from the band only
    conf = torch.tensor([0.1, 0.3, 0.5, 0.7, 0.3, 0.4])
    dense = densify_mask(conf, "band", (0.2, 0.6), 4, max_queries=6 + 3 * 2)
    assert int(dense.sum()) == 2 and not dense[[0, 3]].any()
