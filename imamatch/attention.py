"""Multi-scale focused linear attention on the 1/8 feature maps (self and cross layers).

Focused linear attention (FLatten): ``φ(x) = ReLU(x) / softplus(s)``, raised elementwise to the power
``p`` and rescaled to its previous L2 norm; ``out = φ(q) (φ(k)ᵀ v) / (φ(q) · Σ φ(k))`` — linear in the
number of tokens. Each layer runs it at three scales (Q/K/V by convs with kernel = stride = 1, 2, 4) and
sums the upsampled branch outputs with learned softmax weights.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .layout import GELU


def focus_kernel(x: torch.Tensor, scale: torch.Tensor, power: float, keep_norm: bool = True) -> torch.Tensor:
    """Focused feature map. ``x``: ``(..., D)``; ``scale``: ``(D,)`` raw (softplus applied here).
    ``keep_norm`` False skips the rescaling to the previous norm (for queries, whose scale cancels in
    :func:`linear_attention`)."""
    inplace = _no_grad(x, scale)
    x = F.relu(x)
    x = x.add_(1e-6).div_(F.softplus(scale)) if inplace else (x + 1e-6) / F.softplus(scale)
    if power == 1:
        return x
    if float(power).is_integer():
        power = int(power)  # repeated products: ~3× faster than the float power on CPU
    if not keep_norm:
        return x ** power
    norm = x.norm(dim=-1, keepdim=True)
    xp = x ** power
    rescale = norm / xp.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return xp.mul_(rescale) if inplace else xp * rescale


def _no_grad(*xs: torch.Tensor) -> bool:
    """Whether no gradient flows through these tensors: their layer's intermediates may then be overwritten in
    place (the same values, fewer fresh buffers; the in-place steps that autograd allows are taken always)."""
    return not (torch.is_grad_enabled() and any(x.requires_grad for x in xs))


def linear_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                     key_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Kernelised attention. ``q``: ``(B, H, Lq, D)``; ``k``, ``v``: ``(B, H, Lk, D)``;
    ``key_mask``: ``(B, Lk)`` bool (True = valid). Returns ``(B, H, Lq, D)``."""
    if key_mask is not None:
        m = key_mask[:, None, :, None].to(k.dtype)
        k, v = k * m, v * m
    kv = torch.einsum("bhld,bhle->bhde", k, v)
    denom = torch.einsum("bhld,bhd->bhl", q, k.sum(dim=2)).unsqueeze(-1) + 1e-6
    out = torch.einsum("bhld,bhde->bhle", q, kv)
    return out.div_(denom) if _no_grad(q, k, v) else out / denom


class ChannelNorm(nn.Module):
    """LayerNorm over the channels of a ``(B, C, H, W)`` map."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class ScaleBranch(nn.Module):
    """Q/K/V at one scale (stride ``s``), focused linear attention, local depthwise term on V."""

    def __init__(self, dim: int, heads: int, stride: int, power: float, separable: bool) -> None:
        super().__init__()
        self.heads, self.stride, self.power = heads, stride, power
        if separable or stride == 1:
            # cheap: depthwise strided conv (identity at stride 1) after the shared 1×1 projection
            self.down = nn.Conv2d(3 * dim, 3 * dim, stride, stride, groups=3 * dim, bias=False) if stride > 1 else None
            self.full = None
        else:
            self.down = None
            self.full = nn.Conv2d(3 * dim, 3 * dim, stride, stride, groups=3, bias=False)
        self.scale = nn.Parameter(torch.zeros(dim // heads))
        self.local = nn.Conv2d(dim, dim, 5, padding=2, groups=dim)

    def _down(self, x: torch.Tensor, part: slice, groups: int) -> torch.Tensor:
        conv = self.down if self.down is not None else self.full
        if conv is None:
            return x
        return F.conv2d(x, conv.weight[part], stride=self.stride, groups=groups)

    def forward(self, q: torch.Tensor, kv: torch.Tensor, v_local: torch.Tensor,
                mask: torch.Tensor | None) -> torch.Tensor:
        """``q``: ``(B, C, Ht, Wt)`` from the target image; ``kv``: ``(B, 2C, Hs, Ws)`` from the source;
        ``v_local``: the target's own values ``(B, C, Ht, Wt)``; ``mask``: ``(B, Hs, Ws)`` bool of the source.
        Returns ``(B, C, Ht/s, Wt/s)``."""
        c = q.shape[1]
        full = self.down is None and self.full is not None
        q = self._down(q, slice(0, c), 1 if full else c)
        kv = self._down(kv, slice(c, 3 * c), 2 if full else 2 * c)
        if self.stride > 1:
            v_local = F.avg_pool2d(v_local, self.stride)
            if mask is not None:
                mask = F.max_pool2d(mask[:, None].float(), self.stride)[:, 0] > 0
        h, w = q.shape[-2:]
        q = to_tokens(q, self.heads)
        k, v = (to_tokens(x, self.heads) for x in kv.chunk(2, dim=1))
        # a query's own scale cancels between numerator and denominator: only the keys keep their norm
        q, k = focus_kernel(q, self.scale, self.power, keep_norm=False), focus_kernel(k, self.scale, self.power)
        out = linear_attention(q, k, v, None if mask is None else mask.flatten(1))
        return self.local(v_local).add_(from_tokens(out, h, w))


def to_tokens(x: torch.Tensor, heads: int) -> torch.Tensor:
    """``(B, C, H, W)`` → ``(B, heads, H·W, C/heads)``; a view (no copy) of a channels-last map."""
    b, c, h, w = x.shape
    return x.permute(0, 2, 3, 1).reshape(b, h * w, heads, c // heads).transpose(1, 2)


def from_tokens(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """``(B, heads, H·W, D)`` → channels-last ``(B, heads·D, H, W)`` (the inverse of :func:`to_tokens`)."""
    b, heads, _, d = x.shape
    return x.transpose(1, 2).reshape(b, h, w, heads * d).permute(0, 3, 1, 2)


class AttentionLayer(nn.Module):
    """One multi-scale focused linear attention layer (self when ``source is target``) + conv FFN
    (``ffn_ratio`` × ``dim`` hidden channels)."""

    def __init__(self, dim: int, heads: int, scales: tuple[int, ...], power: float, separable: bool,
                 ffn_ratio: int = 2) -> None:
        super().__init__()
        self.norm_t, self.norm_s = ChannelNorm(dim), ChannelNorm(dim)
        self.q = nn.Conv2d(dim, dim, 1, bias=False)
        self.kv = nn.Conv2d(dim, 2 * dim, 1, bias=False)
        self.branches = nn.ModuleList([ScaleBranch(dim, heads, s, power, separable) for s in scales])
        self.branch_logits = nn.Parameter(torch.ones(len(scales)))
        self.merge = nn.Conv2d(dim, dim, 1)
        hidden = ffn_ratio * dim
        self.ffn = nn.Sequential(ChannelNorm(dim), nn.Conv2d(dim, hidden, 1), GELU(),
                                 nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden), GELU(),
                                 nn.Conv2d(hidden, dim, 1))
        for last in (self.merge, self.ffn[-1]):  # the layer starts as the identity
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)

    def forward(self, target: torch.Tensor, source: torch.Tensor, source_mask: torch.Tensor | None) -> torch.Tensor:
        """``target``, ``source``: ``(B, C, H, W)``; ``source_mask``: ``(B, H, W)`` bool. Returns updated target."""
        t = self.norm_t(target)
        s = t if source is target else self.norm_s(source)
        kv = self.kv(s)
        c = target.shape[1]  # the local term uses the target's own values: in cross layers only V is projected
        v_local = kv[:, c:] if source is target else F.conv2d(t, self.kv.weight[c:])
        q = self.q(t)
        weights = torch.softmax(self.branch_logits, 0)
        out = None
        for wgt, branch in zip(weights, self.branches):
            y = branch(q, kv, v_local, source_mask)
            if y.shape[-2:] != target.shape[-2:]:
                y = F.interpolate(y, size=target.shape[-2:], mode="bilinear", align_corners=False)
            y = y.mul_(wgt) if _no_grad(y, wgt) else wgt * y
            out = y if out is None else out.add_(y)
        x = self.merge(out).add_(target)  # in place on the convolutions' outputs
        return self.ffn(x).add_(x)


class CoarseTransformer(nn.Module):
    """``n_blocks`` × (self, cross) on a pair of 1/8 maps. Cross layers share weights in both directions.

    ``compute_dtype`` bfloat16 (``MatcherConfig.attention_bf16``): the layers run in bfloat16, inputs and
    parameters cast on the way in (differentiably), outputs cast back to the inputs' dtype."""

    compute_dtype: torch.dtype = torch.float32

    def __init__(self, dim: int, heads: int, n_blocks: int, scales: tuple[int, ...], power: float,
                 separable: bool, ffn_ratio: int = 2) -> None:
        super().__init__()
        self.self_layers = nn.ModuleList(
            [AttentionLayer(dim, heads, scales, power, separable, ffn_ratio) for _ in range(n_blocks)])
        self.cross_layers = nn.ModuleList(
            [AttentionLayer(dim, heads, scales, power, separable, ffn_ratio) for _ in range(n_blocks)])

    def forward(self, f0: torch.Tensor, f1: torch.Tensor, m0: torch.Tensor | None = None,
                m1: torch.Tensor | None = None, self0: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``f0``, ``f1``: ``(B, C, H_i, W_i)`` (sizes may differ); masks ``(B, H_i, W_i)`` bool or None.
        ``self0``: :meth:`first_self` of ``f0`` and ``m0`` if already computed (it depends on image 0 alone)."""
        joint = self.training and f0.shape == f1.shape and self0 is None  # both images in one batch
        dtype = f0.dtype
        f0, f1 = f0.to(self.compute_dtype), f1.to(self.compute_dtype)
        for k, (self_layer, cross_layer) in enumerate(zip(self.self_layers, self.cross_layers)):
            if joint:
                m = None if m0 is None else torch.cat([m0, m1])
                f = torch.cat([f0, f1])
                f0, f1 = self._run(self_layer, f, f, m).chunk(2)
            else:  # inference: one image at a time
                f0 = self0.to(f0.dtype) if k == 0 and self0 is not None else self._run(self_layer, f0, f0, m0)
                f1 = self._run(self_layer, f1, f1, m1)
            f0, f1 = self._cross(cross_layer, f0, f1, m0, m1, joint)
        return f0.to(dtype), f1.to(dtype)

    def first_self(self, f0: torch.Tensor, m0: torch.Tensor | None = None) -> torch.Tensor:
        """The first self-attention layer on one image ``(B, C, H, W)`` (mask ``(B, H, W)``): what
        :meth:`forward` can reuse for an image matched again."""
        x = f0.to(self.compute_dtype)
        return self._run(self.self_layers[0], x, x, m0).to(f0.dtype)

    @staticmethod
    def _run(layer: AttentionLayer, target: torch.Tensor, source: torch.Tensor,
             mask: torch.Tensor | None) -> torch.Tensor:
        """``layer(target, source, mask)`` with its parameters in the inputs' dtype."""
        if target.dtype == layer.q.weight.dtype:
            return layer(target, source, mask)
        params = {n: p.to(target.dtype) for n, p in layer.named_parameters()}
        return torch.func.functional_call(layer, params, (target, source, mask))

    def _cross(self, layer: AttentionLayer, f0: torch.Tensor, f1: torch.Tensor, m0: torch.Tensor | None,
               m1: torch.Tensor | None, joint: bool) -> tuple[torch.Tensor, torch.Tensor]:
        if joint:
            m = None if m0 is None else torch.cat([m1, m0])
            out = self._run(layer, torch.cat([f0, f1]), torch.cat([f1, f0]), m)
            return out.chunk(2)
        return self._run(layer, f0, f1, m1), self._run(layer, f1, f0, m0)
