"""Distil parts of the network into cheaper stand-ins, on random crops (or synthetic pairs) of photos with
photometric augmentation (squared errors relative to the targets' variance, or divergences of the coarse
assignment); every other tensor is the teacher's, and the result can match
as it is or start ``imamatch train --init FILE``.

* :func:`distil_stem`: the full-resolution first block into the space-to-depth stem (``stem="s2d"``,
  :class:`imamatch.backbone.SpaceToDepthStem`): block 1 average-pooled to 1/2, and what block 2 makes of it.
* :func:`distil_mid`: blocks 2 and 3 (the latter deformable) into :class:`imamatch.backbone.LiteBlock2` and
  :class:`imamatch.backbone.PlainBlock3` (``mid="lite"``): their outputs and the projections made of them.
* :func:`distil_attention`: the attention into a narrower one (``dim``, ``heads``), on synthetic homography pairs:
  the coarse assignment and the fine path's view of the attended map.
* :func:`distil_fine`: the fine path into a narrower one (``fine_dim``), on synthetic homography pairs: the
  top-down maps learn the teacher's projected on their leading eigenvectors, the heads are rewritten to read them.
* :func:`match_projection`: a lower-dimensional projection for coarse matching (``match_dim``), no training.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from ..backbone import DEEP_DILATION, LiteBlock2, LocalFeatureBackbone, PlainBlock3, SpaceToDepthStem
from ..config import MatcherConfig
from ..data.scenes import SceneConfig, make_scene_pair
from ..data.synthetic import WarpConfig, make_pair
from ..data.synthetic import load_photos as load_gray_photos
from ..errors import DataError
from ..io import read_image
from ..model import IMAMatchNet
from ..weights import read_weights, save_weights

IMAGE_TYPES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}


@dataclass
class DistilResult:
    """The held-out error before and after (relative squared error, stem + block 2) and the file written."""

    error_before: float
    error_after: float
    path: Path


def load_photos(folder: str | Path, long_side: int = 960) -> list[np.ndarray]:
    """Grayscale float32 photos directly in ``folder``, reduced to at most ``long_side`` pixels."""
    photos = []
    for path in sorted(Path(folder).iterdir()):
        if path.suffix.lower() in IMAGE_TYPES:
            img = read_image(path)
            s = long_side / max(img.shape)
            if s < 1:
                img = F.interpolate(torch.from_numpy(img)[None, None], scale_factor=s, mode="area")[0, 0].numpy()
            photos.append(img)
    if not photos:
        raise DataError(f"no images in {folder}")
    return photos


def random_crops(photos: list[np.ndarray], n: int, size: int, rng: np.random.Generator) -> torch.Tensor:
    """``(n, 1, size, size)`` random crops at random scales (0.5–1×, smaller photos: what fits), with random
    gain, offset and gamma."""
    out = np.empty((n, 1, size, size), np.float32)
    for k in range(n):
        img = photos[rng.integers(len(photos))]
        side = min(int(size / rng.uniform(0.5, 1.0)), *img.shape)
        y, x = rng.integers(0, img.shape[0] - side + 1), rng.integers(0, img.shape[1] - side + 1)
        patch = torch.from_numpy(np.ascontiguousarray(img[y:y + side, x:x + side]))[None, None]
        patch = F.interpolate(patch, size=(size, size), mode="bilinear", align_corners=False)[0, 0].numpy()
        out[k, 0] = np.clip(patch * rng.uniform(0.6, 1.4) + rng.uniform(-0.2, 0.2), 0, 1) ** rng.uniform(0.7, 1.4)
    return torch.from_numpy(out)


def _relative(a: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error of ``a`` relative to the variance of ``target``."""
    return ((a - target) ** 2).mean() / target.var()


def stem_loss(teacher: LocalFeatureBackbone, student: SpaceToDepthStem, x: torch.Tensor) -> torch.Tensor:
    """Relative squared error of the student against the teacher's pooled block 1, plus that of block 2's output
    on the student's against block 2's on the teacher's. ``x``: ``(B, 1, H, W)``, H and W multiples of 8."""
    with torch.no_grad():
        t1 = F.avg_pool2d(teacher.block1(x.expand(-1, 3, -1, -1)), 2)
        t2 = teacher.block2(t1)
    s1 = student(x)
    return _relative(s1, t1) + _relative(teacher.block2(s1), t2)


def mid_loss(teacher: LocalFeatureBackbone, block2: nn.Module, block3: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Relative squared errors of the student blocks 2 and 3 (block 3 on the student's block 2) against the
    teacher's, and of the projections the coarse and fine features are made of (the teacher's projections and
    block 4 on either). ``x``: ``(B, 1, H, W)``, H and W multiples of 32."""
    proj = teacher.proj

    def heads(x2: torch.Tensor, x3: torch.Tensor) -> list[torch.Tensor]:
        return [x2, x3, F.selu(proj[1](x2)), F.selu(proj[2](x3)),
                F.selu(proj[3](teacher.block4(F.avg_pool2d(x3, 4, ceil_mode=True))))]

    with torch.no_grad():
        x1 = teacher.first_block(x, 0, x.shape[-2] // 2)
        t2 = teacher.block2(x1)
        targets = heads(t2, teacher.block3(F.avg_pool2d(t2, 4)))
    s2 = block2(x1)
    outputs = heads(s2, block3(F.avg_pool2d(s2, 4)))
    return sum(_relative(o, t) for o, t in zip(outputs, targets))


def deep_loss(teacher: LocalFeatureBackbone, block4: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Relative squared errors of the student block 4 against the teacher's, on the teacher's block 3, and of the
    projection the coarse features take from it. ``x``: ``(B, 1, H, W)``, H and W multiples of 32."""
    with torch.no_grad():
        _, x3_in = teacher.half_res(x)
        x4_in = F.avg_pool2d(teacher.block3(x3_in), 4, ceil_mode=True)
        t4 = teacher.block4(x4_in)
        targets = [t4, F.selu(teacher.proj[3](t4))]
    s4 = block4(x4_in)
    outputs = [s4, F.selu(teacher.proj[3](s4))]
    return sum(_relative(o, t) for o, t in zip(outputs, targets))


def distil_stem(photos: str | Path, teacher_path: str | Path, out: str | Path, steps: int = 6000, batch: int = 8,
                crop: int = 192, lr: float = 2e-3, seed: int = 0, progress: bool = True) -> DistilResult:
    """Train a :class:`SpaceToDepthStem` on the photos of the folder ``photos`` to stand in for block 1 of the
    network in ``teacher_path`` and write the network with it (``stem="s2d"``) to ``out``."""
    _check_crop(crop, 8)
    tensors, conf, teacher = _teacher(teacher_path)
    if conf.stem != "aliked":
        raise ValueError(f"{teacher_path}: the teacher must be an 'aliked' backbone with its full-resolution block 1")
    torch.manual_seed(seed)
    student = SpaceToDepthStem(teacher.widths[0])
    loss = lambda x: stem_loss(teacher, student, x)  # noqa: E731
    before, after = _train(student, loss, photos, steps, batch, crop, lr, seed, progress, "distil stem")
    note = f"stem distilled from {Path(teacher_path).name}: {steps} steps"
    return _write(tensors, conf.replace(stem="s2d"), {"backbone.stem": student}, out, note, before, after)


def distil_mid(photos: str | Path, teacher_path: str | Path, out: str | Path, steps: int = 6000, batch: int = 8,
               crop: int = 192, lr: float = 2e-3, seed: int = 0, progress: bool = True) -> DistilResult:
    """Train :class:`LiteBlock2` and :class:`PlainBlock3` on the photos of the folder ``photos`` to stand in for
    blocks 2 and 3 of the network in ``teacher_path`` and write the network with them (``mid="lite"``) to
    ``out``."""
    _check_crop(crop, 32)  # (the 1/32 block)
    tensors, conf, teacher = _teacher(teacher_path)
    if conf.mid != "aliked":
        raise ValueError(f"{teacher_path}: the teacher must have ALIKED's blocks 2 and 3 (mid='aliked')")
    torch.manual_seed(seed)
    c1, c2, c3, _ = teacher.widths
    student = nn.ModuleDict({"block2": LiteBlock2(c1, c2), "block3": PlainBlock3(c2, c3)})
    loss = lambda x: mid_loss(teacher, student["block2"], student["block3"], x)  # noqa: E731
    before, after = _train(student, loss, photos, steps, batch, crop, lr, seed, progress, "distil blocks 2, 3")
    note = f"blocks 2 and 3 distilled from {Path(teacher_path).name}: {steps} steps"
    return _write(tensors, conf.replace(mid="lite"),
                  {"backbone.block2": student["block2"], "backbone.block3": student["block3"]}, out, note,
                  before, after)


def distil_deep(photos: str | Path, teacher_path: str | Path, out: str | Path, steps: int = 3000, batch: int = 4,
                crop: int = 448, lr: float = 2e-3, seed: int = 0, progress: bool = True,
                kind: str = "plain") -> DistilResult:
    """Train a plain residual block (:class:`PlainBlock3`; ``kind`` "plain" or "dilated", see
    :data:`~imamatch.backbone.DEEP_DILATION`) on the photos of the folder ``photos`` to stand in for the
    deformable block 4 (1/32) of the network in ``teacher_path`` and write the network with it (``deep=kind``) to
    ``out``. Large crops: the deformable offsets' bound grows with the map."""
    _check_crop(crop, 32)
    if kind not in DEEP_DILATION:
        raise ValueError(f"kind must be one of {sorted(DEEP_DILATION)}, got {kind!r}")
    tensors, conf, teacher = _teacher(teacher_path)
    if conf.deep != "aliked":
        raise ValueError(f"{teacher_path}: the teacher must have ALIKED's deformable block 4 (deep='aliked')")
    torch.manual_seed(seed)
    _, _, c3, c4 = teacher.widths
    student = PlainBlock3(c3, c4, DEEP_DILATION[kind])
    loss = lambda x: deep_loss(teacher, student, x)  # noqa: E731
    before, after = _train(student, loss, photos, steps, batch, crop, lr, seed, progress, "distil block 4")
    note = f"block 4 distilled ({kind}) from {Path(teacher_path).name}: {steps} steps"
    return _write(tensors, conf.replace(deep=kind), {"backbone.block4": student}, out, note, before, after)


def _check_crop(crop: int, multiple: int) -> None:
    if crop % multiple or crop <= 0:
        raise ValueError(f"crop must be a positive multiple of {multiple}, got {crop}")


def _teacher(path: str | Path) -> tuple[dict[str, torch.Tensor], MatcherConfig, LocalFeatureBackbone]:
    """The tensors and configuration of a weights file, and its backbone in inference mode, frozen."""
    tensors, conf, _ = read_weights(path)
    if conf is None or conf.backbone != "aliked":
        raise ValueError(f"{path}: the teacher must be an imamatch network with the 'aliked' backbone")
    return tensors, conf, _frozen(tensors, conf).backbone


def _frozen(tensors: dict[str, torch.Tensor], conf: MatcherConfig) -> IMAMatchNet:
    """The network of ``conf`` with ``tensors``, in inference mode, without gradients."""
    net = IMAMatchNet(conf).eval()
    net.load_state_dict({k: v.float() for k, v in tensors.items()})
    return net.requires_grad_(False)


def _train(student: nn.Module, loss_fn, photos: str | Path, steps: int, batch: int, crop: int, lr: float,
           seed: int, progress: bool, desc: str) -> tuple[float, float]:
    """Adam with a cosine schedule on ``loss_fn(crops)``; the held-out loss before and after."""
    rng = np.random.default_rng(seed)
    images = load_photos(photos)
    held_out = random_crops(images, 32, crop, np.random.default_rng(seed + 1))
    with torch.no_grad():
        before = float(loss_fn(held_out))
    _optimise(student.parameters(), lambda: loss_fn(random_crops(images, batch, crop, rng)), steps, lr, 0, desc,
              progress)
    with torch.no_grad():
        after = float(loss_fn(held_out))
    return before, after


def _optimise(params, step_loss, steps: int, lr: float, warmup: int, desc: str, progress: bool) -> None:
    """Adam on ``step_loss()`` (a fresh batch each call) for ``steps`` steps: linear warm-up over ``warmup``
    steps, then a cosine schedule."""
    opt = torch.optim.Adam(params, lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda i: min(1.0, (i + 1) / max(1, warmup)) * 0.5 * (1 + math.cos(math.pi * i / steps)))
    bar = tqdm(range(steps), desc=desc, disable=not progress)
    for step in bar:
        loss = step_loss()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 50 == 0 or step == steps - 1:
            bar.set_postfix(loss=f"{loss.item():.4f}")


def _write(tensors: dict[str, torch.Tensor], conf: MatcherConfig, parts: dict[str, nn.Module], out: str | Path,
           note: str, before: float, after: float) -> DistilResult:
    """The network of ``conf`` with the teacher's tensors where it has them and the students' ``parts`` (by
    prefix), written to ``out`` with ``note`` and the held-out errors in its metadata."""
    result = IMAMatchNet(conf)
    own = result.state_dict()
    state = {k: v.float() for k, v in tensors.items() if k in own}
    for prefix, module in parts.items():
        state.update({f"{prefix}.{k}": v for k, v in module.state_dict().items()})
    result.load_state_dict(state)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_weights(result, conf, out, note=f"{note}, held-out relative error {before:.4f} -> {after:.4f}")
    return DistilResult(before, after, out)


def match_projection(photos: str | Path, teacher_path: str | Path, out: str | Path, dim: int = 64,
                     pairs: int = 48, size: int = 480, seed: int = 0, progress: bool = True) -> DistilResult:
    """Give the coarse matching of a network its own ``dim``-channel projection (``match_dim``), initialised so
    that the projected similarity best reproduces the full one: the leading eigenvectors of the attended
    features' second moment, gathered on ``pairs`` synthetic homography pairs of ``photos`` (``size`` px),
    scaled by √(dim / C) (the similarity is divided by the width). The errors reported are the relative
    squared error of the similarity on held-out pairs, keeping the first ``dim`` channels vs the projection."""
    tensors, conf, _ = _teacher(teacher_path)
    if conf.match_dim is not None:
        raise ValueError(f"{teacher_path} already has a matching projection (match_dim={conf.match_dim})")
    if not 0 < dim < conf.dim:
        raise ValueError(f"dim must be in 1..{conf.dim - 1}, got {dim}")
    net = _frozen(tensors, conf)
    images = load_gray_photos([photos])
    rng = np.random.default_rng(seed)
    cfg = WarpConfig(size=size)

    def tokens(n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        got = []
        for _ in tqdm(range(n), desc="attended features", disable=not progress):
            img0, img1, _ = make_pair(rng, images[rng.integers(len(images))], cfg)
            with torch.inference_mode():
                att = net.attend(torch.from_numpy(img0)[None, None], torch.from_numpy(img1)[None, None], None, None)
            got.append(tuple(x.flatten(2)[0].T.clone() for x in (att.coarse0, att.coarse1)))
        return got

    fit, held = tokens(pairs), tokens(max(4, pairs // 8))
    moment = sum(a.T @ a + b.T @ b for a, b in fit)
    vecs = torch.linalg.eigh(moment.double()).eigenvectors.flip(1)[:, :dim].float()  # leading first
    proj = vecs.T * math.sqrt(dim / conf.dim)                                        # dim × C

    def error(p: torch.Tensor) -> float:
        num = den = 0.0
        for a, b in held:
            s = a @ b.T / conf.dim
            num += float(((a @ p.T) @ (b @ p.T).T / dim - s).square().sum())
            den += float(s.square().sum())
        return num / den

    first = torch.eye(conf.dim)[:dim] * math.sqrt(dim / conf.dim)
    before, after = error(first), error(proj)
    new_conf = conf.replace(match_dim=dim)
    return _write({**tensors, "match_proj.weight": proj}, new_conf, {}, out,
                  f"coarse matching projection to {dim} channels (second-moment eigenvectors, {pairs} pairs)",
                  before, after)


PAIR_KINDS = ("homography", "scenes", "mixed")


def _pair_source(images: list[np.ndarray], cfg: WarpConfig, kind: str = "homography"):
    """``pairs(n, gen)`` → ``n`` synthetic pairs of ``images``, two ``(n, 1, S, S)`` tensors: homographies
    (``cfg``), piecewise-planar scenes seen from two cameras (:func:`~imamatch.data.scenes.make_scene_pair`, wide
    baselines and parallax, ``S`` = ``cfg.size``), or each pair either at random (``mixed``)."""
    if kind not in PAIR_KINDS:
        raise ValueError(f"pairs must be one of {PAIR_KINDS}, got {kind!r}")
    scene_cfg = SceneConfig(size=cfg.size)

    def one(gen: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        if kind == "scenes" or (kind == "mixed" and gen.random() < 0.5):
            p = make_scene_pair(gen, images, scene_cfg)
            return p["image0"], p["image1"]
        return make_pair(gen, images[gen.integers(len(images))], cfg)[:2]

    def pairs(n: int, gen: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        got = [one(gen) for _ in range(n)]
        return tuple(torch.from_numpy(np.stack([g[i] for g in got]))[:, None] for i in (0, 1))
    return pairs


def _attended(net: IMAMatchNet, o0, o1) -> tuple[torch.Tensor, torch.Tensor]:
    """``net``'s attended 1/8 maps ``(B, C, h, w)`` from backbone outputs ``o0``, ``o1`` (no masks)."""
    c0, c1 = (net.coarse_in(F.normalize(o.coarse, dim=1)) for o in (o0, o1))
    return net.transformer(c0, c1)


def attention_loss(teacher: IMAMatchNet, student: IMAMatchNet, img0: torch.Tensor,
                   img1: torch.Tensor) -> torch.Tensor:
    """What the student's attention must reproduce of the teacher's, on pairs ``img0/1`` ``(B, 1, S, S)``: the
    coarse assignment (KL divergence of the row and the column softmaxes of the similarity, mean per token) and
    the fine path's view of the attended map (``top_down.top``, relative squared error). The student attends to
    its own backbone's features where it has another backbone (frozen: no gradient reaches it)."""
    with torch.no_grad():
        o0, o1 = teacher.backbone(img0), teacher.backbone(img1)
        t0, t1 = _attended(teacher, o0, o1)
        top_t = [teacher.top_down.top(t) for t in (t0, t1)]
        lt = torch.einsum("bcl,bcs->bls", t0.flatten(2), t1.flatten(2)) / (t0.shape[1] * teacher.conf.temperature)
        if student.backbone is not teacher.backbone:
            o0, o1 = student.backbone(img0), student.backbone(img1)
    s0, s1 = _attended(student, o0, o1)
    ls = torch.einsum("bcl,bcs->bls", s0.flatten(2), s1.flatten(2)) / (s0.shape[1] * student.conf.temperature)
    kl = 0.0
    for dim in (1, 2):
        p = torch.log_softmax(lt, dim)
        kl = kl + (p.exp() * (p - torch.log_softmax(ls, dim))).sum(dim).mean()
    fine = sum(_relative(student.top_down.top(s), t) for s, t in zip((s0, s1), top_t))
    return kl + fine


def _prune_ffn(student: nn.Module, teacher: nn.Module) -> None:
    """Start the student's attention layers (same width, narrower FFN) as the teacher's with the FFN's hidden
    channels cut to the student's count: those with the largest product of their input, depthwise and output
    weight norms are kept."""
    own = student.state_dict()
    student.load_state_dict({k: v for k, v in teacher.state_dict().items() if own[k].shape == v.shape},
                            strict=False)
    for layers in ("self_layers", "cross_layers"):
        for s, t in zip(getattr(student, layers), getattr(teacher, layers)):
            (_, t_in, _, t_dw, _, t_out), (_, s_in, _, s_dw, _, s_out) = t.ffn, s.ffn
            score = t_in.weight.flatten(1).norm(dim=1) * t_dw.weight.flatten(1).norm(dim=1) * \
                t_out.weight.flatten(1).norm(dim=0)
            keep = score.argsort(descending=True)[:s_in.out_channels].sort().values
            s_in.weight.copy_(t_in.weight[keep])
            s_in.bias.copy_(t_in.bias[keep])
            s_dw.weight.copy_(t_dw.weight[keep])
            s_dw.bias.copy_(t_dw.bias[keep])
            s_out.weight.copy_(t_out.weight[:, keep])
            s_out.bias.copy_(t_out.bias)


def _coarse_parts(net: IMAMatchNet) -> dict[str, nn.Module]:
    """What the attention distillations train, by state-dict prefix: ``coarse_in``, the attention, ``top_down.top``."""
    return {"coarse_in": net.coarse_in, "transformer": net.transformer, "top_down.top": net.top_down.top}


def _fit_attention(teacher: IMAMatchNet, student: IMAMatchNet, pairs, rng: np.random.Generator, seed: int,
                   steps: int, batch: int, lr: float, warmup: int, desc: str, progress: bool) -> tuple[float, float]:
    """Train the student's :func:`_coarse_parts` on :func:`attention_loss` over ``pairs(batch, rng)``; returns the
    mean loss on 16 held-out pairs (drawn with ``seed + 1``) before and after."""
    held = pairs(16, np.random.default_rng(seed + 1))
    loss_fn = lambda a, b: attention_loss(teacher, student, a, b)  # noqa: E731

    def held_out() -> float:
        with torch.no_grad():
            return sum(float(loss_fn(held[0][k:k + 4], held[1][k:k + 4])) for k in range(0, 16, 4)) / 4

    before = held_out()
    params = [p for m in _coarse_parts(student).values() for p in m.parameters()]
    _optimise(params, lambda: loss_fn(*pairs(batch, rng)), steps, lr, warmup, desc, progress)
    return before, held_out()


def realign_attention(photos: str | Path, teacher_path: str | Path, student_path: str | Path, out: str | Path,
                      steps: int = 600, batch: int = 4, size: int = 320, lr: float = 2e-4, seed: int = 0,
                      progress: bool = True, pairs: str = "mixed") -> DistilResult:
    """Fine-tune the coarse path (``coarse_in``, attention, ``top_down.top``) of the network in ``student_path``,
    whose backbone was distilled from the one in ``teacher_path`` (e.g. :func:`distil_deep`), so that on its own
    backbone's features it reproduces the teacher's coarse assignment and attended map (:func:`attention_loss`) on
    synthetic pairs of ``photos`` (``pairs``, :func:`_pair_source`); its backbone, fine path and heads stay as
    they are. Writes the network to ``out``."""
    t_tensors, t_conf, _ = _teacher(teacher_path)
    tensors, conf, _ = _teacher(student_path)
    if (conf.dim, conf.heads, conf.ffn_ratio) != (t_conf.dim, t_conf.heads, t_conf.ffn_ratio):
        raise ValueError(f"{student_path}: needs the teacher's attention (dim, heads, ffn_ratio "
                         f"{(t_conf.dim, t_conf.heads, t_conf.ffn_ratio)})")
    teacher = _frozen(t_tensors, t_conf)
    student = _frozen(tensors, conf)
    parts = _coarse_parts(student)
    for module in parts.values():
        module.requires_grad_(True)
    torch.manual_seed(seed)
    kind, pairs = pairs, _pair_source(load_gray_photos([photos]), WarpConfig(size=size), pairs)
    before, after = _fit_attention(teacher, student, pairs, np.random.default_rng(seed), seed, steps, batch, lr, 50,
                                   "realign attention", progress)
    note = (f"{Path(student_path).name}: coarse path realigned to {Path(teacher_path).name}: {steps} steps of "
            f"{kind} pairs")
    return _write(tensors, conf, parts, out, note, before, after)


def distil_attention(photos: str | Path, teacher_path: str | Path, out: str | Path, dim: int = 64, heads: int = 2,
                     steps: int = 1800, batch: int = 4, size: int = 320, lr: float = 1e-3, seed: int = 0,
                     init_pairs: int = 32, progress: bool = True, ffn_ratio: int | None = None,
                     pairs: str = "homography") -> DistilResult:
    """A cheaper attention (``dim`` channels, ``heads`` heads, FFN hidden ``ffn_ratio`` × ``dim``; default the
    teacher's) distilled from the network in ``teacher_path`` on synthetic homography pairs of ``photos``
    (:func:`attention_loss`; ``pairs``: their kind, :func:`_pair_source`); backbone, fine path and fine matching
    stay the teacher's. A narrower one starts with
    ``coarse_in`` and ``top_down.top`` from the leading eigenvectors of the teacher's attended features (so the
    student starts as their projection) and the attention layers as the identity; one of the teacher's width with
    a narrower FFN starts as the teacher with the FFN pruned (:func:`_prune_ffn`). Writes the network to ``out``."""
    tensors, conf, _ = _teacher(teacher_path)
    ffn_ratio = conf.ffn_ratio if ffn_ratio is None else ffn_ratio
    if not 0 < dim <= conf.dim or dim % heads or not 0 < ffn_ratio <= conf.ffn_ratio:
        raise ValueError(f"dim must be in 1..{conf.dim} and divisible by heads, ffn_ratio in 1..{conf.ffn_ratio}; "
                         f"got dim={dim}, heads={heads}, ffn_ratio={ffn_ratio}")
    same_width = dim == conf.dim
    if same_width and (heads != conf.heads or ffn_ratio == conf.ffn_ratio):
        raise ValueError(f"at the teacher's width ({dim}) only a narrower FFN can be distilled (same heads, "
                         f"ffn_ratio < {conf.ffn_ratio})")
    teacher = _frozen(tensors, conf)
    torch.manual_seed(seed)
    new_conf = conf.replace(dim=dim, heads=heads, ffn_ratio=ffn_ratio)
    student = IMAMatchNet(new_conf)
    images = load_gray_photos([photos])
    rng = np.random.default_rng(seed)
    kind, pairs = pairs, _pair_source(images, WarpConfig(size=size), pairs)

    with torch.no_grad():
        if same_width:  # the teacher with its FFN pruned
            student.coarse_in.load_state_dict(teacher.coarse_in.state_dict())
            student.top_down.top.load_state_dict(teacher.top_down.top.state_dict())
            _prune_ffn(student.transformer, teacher.transformer)
        else:  # eigenvectors of the attended features: the student's start is their projection
            x0, x1 = pairs(init_pairs, np.random.default_rng(seed + 2))
            moment = 0
            for k in range(0, init_pairs, 4):
                t0, t1 = _attended(teacher, teacher.backbone(x0[k:k + 4]), teacher.backbone(x1[k:k + 4]))
                f = torch.cat([t0, t1]).flatten(2).transpose(1, 2).reshape(-1, conf.dim).double()
                moment = moment + f.T @ f
            vecs = torch.linalg.eigh(moment).eigenvectors.flip(1)[:, :dim].float()       # C × dim, leading first
            s = math.sqrt(dim / conf.dim)  # keeps the similarity's scale (it is divided by the width)
            student.coarse_in.weight.copy_(s * (vecs.T @ teacher.coarse_in.weight[:, :, 0, 0])[:, :, None, None])
            student.coarse_in.bias.copy_(s * vecs.T @ teacher.coarse_in.bias)
            student.top_down.top.weight.copy_((teacher.top_down.top.weight[:, :, 0, 0] @ vecs / s)[:, :, None, None])
            student.top_down.top.bias.copy_(teacher.top_down.top.bias)
    student.backbone = teacher.backbone  # shared, frozen
    parts = _coarse_parts(student)
    before, after = _fit_attention(teacher, student, pairs, rng, seed, steps, batch, lr, 100, "distil attention",
                                   progress)
    note = (f"attention {conf.dim} -> {dim} channels, {heads} heads, FFN {conf.ffn_ratio}x -> {ffn_ratio}x, distilled "
            f"from {Path(teacher_path).name}: {steps} steps of {kind} pairs")
    return _write(tensors, new_conf, parts, out, note, before, after)


def _fine_maps(net: IMAMatchNet, teacher: IMAMatchNet, img0: torch.Tensor, img1: torch.Tensor,
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """``net``'s fine maps of both images of pairs ``img0/1`` ``(B, 1, S, S)``, batched ``(2B, Cf, S/2, S/2)``, on the
    teacher's backbone and attention (shared by both networks here), and the teacher's own (no gradient)."""
    with torch.no_grad():
        o0, o1 = teacher.backbone(img0), teacher.backbone(img1)
        c = torch.cat(_attended(teacher, o0, o1))
        skips = {k: torch.cat([o0.skips[k], o1.skips[k]]).float() for k in o0.skips}
        images = torch.cat([img0, img1])
        target = teacher.top_down(c, skips, images)
    return net.top_down(c, skips, images), target


def _project_heads(student: nn.Module, teacher: nn.Module, proj: torch.Tensor) -> None:
    """Set the student's fine heads (features ``f' = P f``, ``proj`` = P ``(d, C)`` with orthonormal rows) to
    compute what the teacher's do on ``f = Pᵀ f'``: the layers that read features take ``W Pᵀ`` (the key
    rescaled for the narrower ``1/√d``); the rest is copied. Exact for features in the span of P."""
    d, c = proj.shape
    for name in ("stage1", "stage2"):
        s, t = getattr(student, name), getattr(teacher, name)
        s.load_state_dict({k: v for k, v in t.state_dict().items()
                           if not (k.startswith("key") or k in ("query.0.weight", "regress.0.weight"))}, strict=False)
        s.query[0].weight.copy_(t.query[0].weight @ proj.T)
        s.key.weight.copy_(t.key.weight @ proj.T * math.sqrt(d / c))
        w = t.regress[0].weight
        parts = [w[:, k * c:(k + 1) * c] @ proj.T for k in range(3)]  # query, centre, attended
        s.regress[0].weight.copy_(torch.cat(parts + [w[:, 3 * c:]], 1))


def distil_fine(photos: str | Path, teacher_path: str | Path, out: str | Path, dim: int = 32, steps: int = 1500,
                batch: int = 4, size: int = 320, lr: float = 1e-3, seed: int = 0, init_pairs: int = 16,
                progress: bool = True, pairs: str = "homography") -> DistilResult:
    """A narrower fine path (``fine_dim`` = ``dim``; the fine heads keep the teacher's width, ``fine_hidden``)
    distilled from the network in ``teacher_path`` on synthetic pairs of ``photos`` (``pairs``: their kind, see
    :func:`_pair_source`): the student's top-down path learns the teacher's fine maps projected on the ``dim``
    leading eigenvectors of their second moment, ``P f`` (relative squared error), starting from the projection of
    the teacher's layers; the fine heads are the teacher's, rewritten to read the projected features
    (:func:`_project_heads`); backbone and attention stay the teacher's. Writes the network to ``out``."""
    tensors, conf, _ = _teacher(teacher_path)
    if conf.pixel_stem or conf.fine_blocks or not 0 < dim < conf.fine_dim:
        raise ValueError(f"{teacher_path}: needs a fine path without pixel stem and blocks, and dim in "
                         f"1..{conf.fine_dim - 1} (got dim={dim})")
    teacher = _frozen(tensors, conf)
    torch.manual_seed(seed)
    new_conf = conf.replace(fine_dim=dim, fine_hidden=conf.fine_hidden or conf.fine_dim)
    student = IMAMatchNet(new_conf)
    for mod in (teacher.backbone, teacher.top_down, student.top_down):
        mod.store_dtype = torch.float32
    kind = pairs
    pairs = _pair_source(load_gray_photos([photos]), WarpConfig(size=size), kind)
    with torch.no_grad():  # leading eigenvectors of the teacher's fine maps' second moment
        x0, x1 = pairs(init_pairs, np.random.default_rng(seed + 2))
        feats = torch.cat([_fine_maps(teacher, teacher, x0[k:k + 4], x1[k:k + 4])[1]
                           for k in range(0, init_pairs, 4)])
        f = feats.permute(0, 2, 3, 1).reshape(-1, conf.fine_dim).double()
        proj = torch.linalg.eigh(f.T @ f).eigenvectors.flip(1)[:, :dim].T.float()     # dim × C
        td_s, td_t = student.top_down, teacher.top_down
        td_s.top.weight.copy_((proj @ td_t.top.weight[:, :, 0, 0])[:, :, None, None])
        td_s.top.bias.copy_(proj @ td_t.top.bias)
        for k, lat in td_t.lateral.items():
            td_s.lateral[k].weight.copy_((proj @ lat.weight[:, :, 0, 0])[:, :, None, None])
            td_s.lateral[k].bias.copy_(proj @ lat.bias)
        for block in td_s.smooth.values():  # starts as the identity (the residual)
            nn.init.zeros_(block.body[-1].weight)
            nn.init.zeros_(block.body[-1].bias)
        _project_heads(student.fine, teacher.fine, proj)
    held = pairs(8, np.random.default_rng(seed + 1))

    def loss_fn(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        out, target = _fine_maps(student, teacher, a, b)
        return _relative(out, torch.einsum("dc,bchw->bdhw", proj, target))

    def held_out() -> float:
        with torch.no_grad():
            return sum(float(loss_fn(held[0][k:k + 4], held[1][k:k + 4])) for k in range(0, 8, 4)) / 2

    before = held_out()
    rng = np.random.default_rng(seed)
    _optimise(student.top_down.parameters(), lambda: loss_fn(*pairs(batch, rng)), steps, lr, 100, "distil fine path",
              progress)
    after = held_out()
    note = (f"fine path {conf.fine_dim} -> {dim} channels (heads {new_conf.fine_hidden} wide), distilled from "
            f"{Path(teacher_path).name}: {steps} steps of {kind} pairs")
    return _write(tensors, new_conf, {"top_down": student.top_down, "fine": student.fine}, out, note, before, after)
