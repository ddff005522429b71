"""Coarse matching: dual-softmax, mutual nearest neighbours, threshold, padding masks."""

import pytest
import torch

from imamatch.coarse import dual_softmax, select_matches


def test_permuted_features_are_recovered():
    g = torch.Generator().manual_seed(0)
    f0 = torch.nn.functional.normalize(torch.randn(1, 30, 16, generator=g), dim=-1)
    perm = torch.randperm(30, generator=g)
    f1 = f0[:, perm]
    conf = dual_softmax(f0 * 4, f1 * 4, temperature=0.1)  # sharp: scale 16/(16*0.1) on cosines
    m = select_matches(conf, threshold=0.2)
    assert len(m.i0) == 30
    assert torch.equal(perm[m.i1], m.i0)


def test_training_and_inference_paths_agree():
    g = torch.Generator().manual_seed(1)
    f0, f1 = torch.randn(2, 12, 8, generator=g), torch.randn(2, 9, 8, generator=g)
    with torch.no_grad():
        fast = dual_softmax(f0, f1, 0.1)
    slow = dual_softmax(f0.requires_grad_(), f1, 0.1)
    torch.testing.assert_close(fast, slow.detach(), rtol=1e-4, atol=1e-7)


def test_padding_is_masked():
    f0 = torch.ones(1, 4, 8)
    f1 = torch.ones(1, 4, 8)
    m0 = torch.tensor([[True, True, False, False]])
    m1 = torch.tensor([[True, False, True, False]])
    conf = dual_softmax(f0, f1, 0.1, m0, m1)
    assert conf[0, 2:].abs().max() == 0 and conf[0, :, 1].abs().max() == 0 and conf[0, :, 3].abs().max() == 0
    assert torch.allclose(conf[0, :2][:, [0, 2]], torch.full((2, 2), 0.25))


def test_threshold_and_border():
    conf = torch.zeros(1, 16, 16)
    conf[0, torch.arange(16), torch.arange(16)] = torch.linspace(0.05, 0.9, 16)
    m = select_matches(conf, threshold=0.5)
    assert (m.confidence > 0.5).all() and len(m.i0) == int((torch.linspace(0.05, 0.9, 16) > 0.5).sum())
    mb = select_matches(conf, threshold=0.0, border=1, grid0=(4, 4), grid1=(4, 4))
    assert sorted(mb.i0.tolist()) == [5, 6, 9, 10]


def test_masked_inference_path_matches_training_path():
    g = torch.Generator().manual_seed(2)
    f0, f1 = torch.randn(2, 12, 8, generator=g), torch.randn(2, 10, 8, generator=g)
    m0, m1 = torch.rand(2, 12, generator=g) > 0.3, torch.rand(2, 10, generator=g) > 0.3
    with torch.no_grad():
        fast = dual_softmax(f0, f1, 0.1, m0, m1)
    slow = dual_softmax(f0.requires_grad_(), f1, 0.1, m0, m1)
    torch.testing.assert_close(fast, slow.detach(), rtol=1e-4, atol=1e-7)


def test_mutual_nearest_neighbours_match_brute_force():
    g = torch.Generator().manual_seed(3)
    conf = torch.rand(3, 40, 35, generator=g) ** 4
    m = select_matches(conf, threshold=0.05)
    expect = set()
    for b in range(3):
        for i in range(40):
            j = int(conf[b, i].argmax())
            if int(conf[b, :, j].argmax()) == i and conf[b, i, j] > 0.05:
                expect.add((b, i, j))
    assert set(zip(m.b.tolist(), m.i0.tolist(), m.i1.tolist())) == expect
    torch.testing.assert_close(m.confidence, conf[m.b, m.i0, m.i1])


@pytest.mark.parametrize("integer", [False, True])
def test_blocked_mutual_matches_equal_the_two_step_path(integer: bool):  # integer: the 16-bit products
    from imamatch.coarse import mutual_matches

    g = torch.Generator().manual_seed(4)
    f0 = torch.randn(2, 70, 16, generator=g)
    f1 = torch.cat([f0[:, torch.randperm(70, generator=g)[:50]], torch.randn(2, 10, 16, generator=g)], 1)
    f0 = f0 * torch.linspace(0.5, 2.0, 70)[None, :, None]  # later row blocks hold larger scores
    f1 = f1 + 0.2 * torch.randn(f1.shape, generator=g)
    m0, m1 = torch.rand(2, 70, generator=g) > 0.1, torch.rand(2, 60, generator=g) > 0.1
    for threshold in (0.05, 0.0):  # candidates of the one pass; two passes without a threshold
        with torch.no_grad():
            ref = select_matches(dual_softmax(f0, f1, 0.1, m0, m1), threshold)
            new = mutual_matches(f0, f1, 0.1, threshold, m0, m1, block=16, integer=integer, bits=16)
        key = lambda m: sorted(zip(m.b.tolist(), m.i0.tolist(), m.i1.tolist(), m.confidence.tolist()))  # noqa: E731
        a, b = key(ref), key(new)
        assert len(a) > 20 and [r[:3] for r in a] == [r[:3] for r in b]
        torch.testing.assert_close(torch.tensor([r[3] for r in b]), torch.tensor([r[3] for r in a]),
                                   rtol=2e-3 if integer else 1e-4, atol=1e-6)


def test_integer_similarity_is_within_its_stated_error_and_gives_the_same_matches():
    from imamatch.coarse import IntegerSimilarity, mutual_matches

    g = torch.Generator().manual_seed(7)
    a = torch.randn(133, 48, generator=g) * torch.linspace(0.1, 3.0, 133)[:, None]  # rows of very different norms
    b = torch.randn(91, 48, generator=g)
    sim = IntegerSimilarity(a, b, bits=16)
    got = torch.cat([sim.block(s, min(s + 40, 133)) for s in range(0, 133, 40)])
    exact = a.double() @ b.double().T
    bound = 3e-5 * a.norm(dim=1, keepdim=True).double() * b.norm(dim=1).double()[None] * 48 ** 0.5
    assert ((got.double() - exact).abs() <= bound).all()
    assert (got.double() - exact).abs().max() > 0  # it is an approximation, not a float product in disguise
    # matches on features with a known assignment: the same as the float32 path
    f0 = torch.randn(1, 120, 32, generator=g)
    perm = torch.randperm(120, generator=g)
    f1 = f0[:, perm] + 0.3 * torch.randn(1, 120, 32, generator=g)
    with torch.no_grad():
        ref = mutual_matches(f0, f1, 0.1, 0.2)
        new = mutual_matches(f0, f1, 0.1, 0.2, block=32, integer=True, bits=16)
    assert len(ref.b) > 60
    assert ref.i0.tolist() == new.i0.tolist() and ref.i1.tolist() == new.i1.tolist()
    assert (perm[new.i1] == new.i0).float().mean() > 0.95
    torch.testing.assert_close(new.confidence, ref.confidence, rtol=1e-3, atol=1e-5)


def test_int8_similarity_is_within_its_rounding_bound():
    from imamatch.coarse import IntegerSimilarity

    g = torch.Generator().manual_seed(8)
    a = torch.randn(133, 48, generator=g) * torch.linspace(0.1, 3.0, 133)[:, None]
    b = torch.randn(91, 48, generator=g)
    sim = IntegerSimilarity(a, b, bits=8)
    got = torch.cat([sim.block(s, min(s + 40, 133)) for s in range(0, 133, 40)]).double()
    a, b = a.double(), b.double()
    exact = a @ b.T
    # each value is off by at most half a step s = max|row| / 127:
    # |Δ(a·b)| ≤ s_a/2 Σ|b| + s_b/2 Σ|a| + C s_a s_b / 4
    sa, sb = a.abs().amax(1, keepdim=True) / 127, b.abs().amax(1, keepdim=True).T / 127
    bound = sa / 2 * b.abs().sum(1)[None] + sb / 2 * a.abs().sum(1, keepdim=True) + 48 * sa * sb / 4
    err = (got - exact).abs()
    assert (err <= bound * 1.0001 + 1e-9).all()
    assert err.max() > 1e-3 * exact.abs().max()  # one int8 product: much coarser than the 16-bit split


def test_int8_mutual_matches_agree_with_float32_and_survive_rows_far_under_the_bound(monkeypatch):
    """The int8 path's fixed exp2 reference: none while the Cauchy–Schwarz bound leaves the row sums within
    float32, the bound itself above that (features × 2.1: a bound of ~117 in log2 units), and a second pass
    with the running maximum when a row lies so far under the bound that its sum could underflow."""
    import imamatch.coarse as coarse

    g = torch.Generator().manual_seed(5)
    f0 = torch.randn(1, 300, 32, generator=g)
    perm = torch.randperm(300, generator=g)
    f1 = f0[:, perm] + 0.3 * torch.randn(1, 300, 32, generator=g)
    passes = []
    real = coarse._blocked_log_sum_exps
    monkeypatch.setattr(coarse, "_blocked_log_sum_exps", lambda *a: passes.append(a[-1]) or real(*a))
    f0[..., -1] = f1[..., -1] = 0
    for case in ("plain", "large", "far"):
        gain = 2.1 if case == "large" else 1.0
        if case == "far":  # a long row orthogonal to every column: the Cauchy–Schwarz bound lies far above its scores
            f0[0, 7] = 0
            f0[0, 7, -1] = 1000.0
        passes.clear()
        with torch.no_grad():
            ref = coarse.mutual_matches(gain * f0, gain * f1, 0.1, 0.2)
            new = coarse.mutual_matches(gain * f0, gain * f1, 0.1, 0.2, block=64, integer=True, bits=8)
        assert passes[0] is None  # float32: the running maximum
        assert (passes[1] == 0) == (case == "plain") and passes[1] is not None
        assert (len(passes) == 3) == (case == "far")  # a second, running-max pass only if needed
        assert len(ref.b) > 150
        same = set(zip(ref.i0.tolist(), ref.i1.tolist())) & set(zip(new.i0.tolist(), new.i1.tolist()))
        assert len(same) >= 0.97 * max(len(ref.b), len(new.b))
        assert (perm[new.i1] == new.i0).float().mean() > 0.95
        conf_ref = dict(zip(zip(ref.i0.tolist(), ref.i1.tolist()), ref.confidence.tolist()))
        diff = [abs(c - conf_ref[k]) for k, c in zip(zip(new.i0.tolist(), new.i1.tolist()), new.confidence.tolist())
                if k in same]
        assert max(diff) < 0.06


def test_coarse_bits_are_checked():
    from imamatch.coarse import mutual_matches

    f = torch.randn(1, 20, 8)
    with pytest.raises(ValueError, match="bits"):
        mutual_matches(f, f, 0.1, 0.2, integer=True, bits=4)


def test_integer_path_falls_back_to_float_where_int8_products_are_missing(monkeypatch):
    import imamatch.coarse as coarse

    g = torch.Generator().manual_seed(3)
    f0 = torch.randn(1, 50, 16, generator=g)
    f1 = f0[:, torch.randperm(50, generator=g)] + 0.2 * torch.randn(1, 50, 16, generator=g)
    with torch.no_grad():
        ref = coarse.mutual_matches(f0, f1, 0.1, 0.2)

    def missing(*args):
        raise RuntimeError("no int8 matmul here")

    coarse.integer_products_available.cache_clear()
    monkeypatch.setattr(torch, "_int_mm", missing)
    try:
        assert not coarse.integer_products_available()
        with torch.no_grad():
            got = coarse.mutual_matches(f0, f1, 0.1, 0.2, integer=True)
    finally:
        coarse.integer_products_available.cache_clear()
    assert len(ref.b) > 20 and got.i0.tolist() == ref.i0.tolist() and got.i1.tolist() == ref.i1.tolist()
    torch.testing.assert_close(got.confidence, ref.confidence)


def test_integer_similarity_does_not_overflow_at_its_channel_limit():
    from imamatch.coarse import IntegerSimilarity

    c = IntegerSimilarity.MAX_CHANNELS
    a = torch.ones(3, c)  # every product at its largest: h = 127 in every channel
    sim = IntegerSimilarity(a, a * 2)
    torch.testing.assert_close(sim.block(0, 3), torch.full((3, 3), 2.0 * c), rtol=1e-4, atol=0)
    assert not IntegerSimilarity.suits(torch.ones(2, c + 1), torch.ones(2, c + 1))
    assert not IntegerSimilarity.suits(torch.tensor([[float("nan"), 1.0]]), torch.ones(1, 2))
