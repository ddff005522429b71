"""Focused linear attention: the formula, masking, norm preservation, gradients."""

import torch

from imamatch.attention import AttentionLayer, CoarseTransformer, focus_kernel, linear_attention


def test_linear_attention_matches_explicit_formula():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.rand(1, 2, n, 4, generator=g, dtype=torch.float64) for n in (5, 7, 7))
    out = linear_attention(q, k, v)
    weights = q @ k.transpose(-1, -2)  # (B, H, Lq, Lk), non-negative kernel values
    expected = (weights @ v) / (weights.sum(-1, keepdim=True) + 1e-6)
    torch.testing.assert_close(out, expected)


def test_key_mask_equals_dropping_keys():
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.rand(2, 2, 6, 4, generator=g, dtype=torch.float64) for _ in range(3))
    mask = torch.tensor([[1, 1, 0, 1, 0, 1], [1, 1, 1, 1, 1, 1]], dtype=torch.bool)
    out = linear_attention(q, k, v, mask)
    keep = mask[0]
    ref0 = linear_attention(q[:1], k[:1, :, keep], v[:1, :, keep])
    torch.testing.assert_close(out[:1], ref0)


def test_focus_kernel_keeps_norm_and_sharpens():
    x = torch.tensor([[0.1, 0.2, 0.9, -1.0]], dtype=torch.float64)
    scale = torch.zeros(4, dtype=torch.float64)
    base = (torch.relu(x) + 1e-6) / torch.nn.functional.softplus(scale)
    y = focus_kernel(x, scale, 3.0)
    torch.testing.assert_close(y.norm(dim=-1), base.norm(dim=-1))
    # power 3 concentrates the mass on the largest entry
    assert (y[0, 2] / y.sum()) > (base[0, 2] / base.sum())


def test_query_norm_cancels_in_the_attention():
    g = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(2, 2, n, 4, generator=g, dtype=torch.float64) for n in (6, 9, 9))
    q[..., 0] = q[..., 0].abs() + 0.1  # (a query with no positive entry is ~0 after the ReLU: ε decides both)
    s = torch.randn(4, generator=g, dtype=torch.float64)
    kk = focus_kernel(k, s, 3.0)
    kept = linear_attention(focus_kernel(q, s, 3.0), kk, v)
    skipped = linear_attention(focus_kernel(q, s, 3.0, keep_norm=False), kk, v)
    assert not torch.allclose(focus_kernel(q, s, 3.0), focus_kernel(q, s, 3.0, keep_norm=False))
    torch.testing.assert_close(skipped, kept, rtol=1e-5, atol=1e-8)


def test_focused_attention_gradcheck():
    g = torch.Generator().manual_seed(2)
    q, k, v = (torch.randn(1, 1, 4, 3, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(3))
    scale = torch.zeros(3, dtype=torch.float64, requires_grad=True)

    def f(q, k, v, s):
        return linear_attention(focus_kernel(q, s, 3.0), focus_kernel(k, s, 3.0), v)

    assert torch.autograd.gradcheck(f, (q, k, v, scale))


def test_transformer_starts_as_identity_and_handles_different_sizes():
    t = CoarseTransformer(dim=16, heads=2, n_blocks=2, scales=(1, 2, 4), power=3.0, separable=True).eval()
    f0, f1 = torch.randn(1, 16, 8, 12), torch.randn(1, 16, 4, 8)
    o0, o1 = t(f0, f1)
    torch.testing.assert_close(o0, f0)  # residual branches are zero-initialised
    torch.testing.assert_close(o1, f1)
    layer = AttentionLayer(16, 2, (1, 2, 4), 3.0, separable=False)
    torch.nn.init.normal_(layer.merge.weight)
    out = layer(f0, f1, torch.ones(1, 4, 8, dtype=torch.bool))
    assert out.shape == f0.shape and torch.isfinite(out).all()


def test_inference_runs_each_image_alone_with_the_joint_result():
    torch.manual_seed(0)
    t = CoarseTransformer(dim=16, heads=2, n_blocks=2, scales=(1, 2, 4), power=3.0, separable=True)
    for p in t.parameters():  # leave the identity start
        torch.nn.init.normal_(p, std=0.2)
    f0, f1 = torch.randn(1, 16, 8, 12), torch.randn(1, 16, 8, 12)
    m0, m1 = torch.rand(1, 8, 12) > 0.2, torch.ones(1, 8, 12, dtype=torch.bool)
    with torch.no_grad():
        joint = t.train()(f0, f1, m0, m1)   # training: both images in one batch
        alone = t.eval()(f0, f1, m0, m1)    # inference: one image at a time
    assert not torch.allclose(joint[0], f0)
    for a, b in zip(joint, alone):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_ffn_ratio_sets_the_hidden_width():
    torch.manual_seed(0)
    for ratio in (1, 2):
        layer = AttentionLayer(16, 2, (1,), 3.0, True, ffn_ratio=ratio)
        assert layer.ffn[1].out_channels == ratio * 16 and layer.ffn[3].groups == ratio * 16
        assert layer.ffn[5].in_channels == ratio * 16
        x = torch.randn(1, 16, 6, 7)
        torch.testing.assert_close(layer(x, x, None), x)  # still the identity at initialisation
    t = CoarseTransformer(16, 2, 1, (1,), 3.0, True, ffn_ratio=1)
    assert all(layer.ffn[1].out_channels == 16 for layer in [*t.self_layers, *t.cross_layers])


def test_bfloat16_layers_stay_close_to_float32_and_train_float32_weights():
    """``compute_dtype`` bfloat16 (MatcherConfig.attention_bf16): same result up to bfloat16 rounding, float32
    out, self-attention output reusable across passes, gradients reach the float32 parameters."""
    torch.manual_seed(0)
    t = CoarseTransformer(dim=32, heads=4, n_blocks=1, scales=(1,), power=3.0, separable=True).eval()
    for p in t.parameters():
        torch.nn.init.normal_(p, std=0.2)
    f0, f1 = torch.randn(1, 32, 8, 12), torch.randn(1, 32, 6, 10)
    with torch.no_grad():
        ref = t(f0, f1)
        t.compute_dtype = torch.bfloat16
        low = t(f0, f1)
        again = t(f0, f1, self0=t.first_self(f0))
    for r, x, y in zip(ref, low, again):
        assert x.dtype == torch.float32
        err = float((x - r).norm() / r.norm())
        assert 0 < err < 3e-2
        torch.testing.assert_close(y, x)
    assert all(p.dtype == torch.float32 for p in t.parameters())
    t.train()
    out = t(f0, f1)
    sum(o.square().sum() for o in out).backward()
    grad = t.cross_layers[0].q.weight.grad
    assert grad is not None and grad.dtype == torch.float32 and grad.abs().sum() > 0


def test_matcher_runs_attention_in_bfloat16_only_where_asked_and_native(monkeypatch):
    from imamatch.config import PRESETS
    from imamatch.model import IMAMatchNet
    from imamatch.runtime import native_bf16

    assert IMAMatchNet(PRESETS["fast"]).transformer.compute_dtype == torch.float32  # the default
    asked = PRESETS["fast"].replace(attention_bf16=True)
    assert IMAMatchNet(asked).transformer.compute_dtype == (torch.bfloat16 if native_bf16() else torch.float32)
    monkeypatch.setenv("IMAMATCH_BF16", "0")
    assert not native_bf16() and IMAMatchNet(asked).transformer.compute_dtype == torch.float32


def test_inference_steps_in_place_give_the_values_of_the_autograd_path():
    """Without gradients the layers overwrite their intermediates in place: the same output as with autograd on
    (the out-of-place path), and with autograd on the backward pass still runs."""
    torch.manual_seed(1)
    layer = AttentionLayer(16, 2, (1, 2), 3.0, separable=True)
    for p in layer.parameters():  # leave the identity start
        torch.nn.init.normal_(p, std=0.2)
    f0, f1 = torch.randn(1, 16, 8, 12), torch.randn(1, 16, 8, 12)
    mask = torch.rand(1, 8, 12) > 0.2
    with torch.no_grad():
        fast = layer(f0, f1, mask)
    graded = layer(f0, f1, mask)
    torch.testing.assert_close(fast, graded.detach(), rtol=0, atol=0)
    graded.square().sum().backward()
    assert layer.branch_logits.grad is not None and layer.q.weight.grad.abs().sum() > 0
