"""Distil the backbone's full-resolution first block into the cheap space-to-depth stem (``stem="s2d"``).

The student (:class:`imamatch.backbone.SpaceToDepthStem`) learns to reproduce block 1 of a trained network,
average-pooled to 1/2 resolution, and what block 2 makes of it, on random crops of photos with photometric
augmentation (squared errors relative to the targets' variance). Every other tensor is the teacher's; the
result can match as it is or start ``imamatch train --init FILE --arch stem=s2d``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..backbone import LocalFeatureBackbone, SpaceToDepthStem
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


def stem_loss(teacher: LocalFeatureBackbone, student: SpaceToDepthStem, x: torch.Tensor) -> torch.Tensor:
    """Relative squared error of the student against the teacher's pooled block 1, plus that of block 2's output
    on the student's against block 2's on the teacher's. ``x``: ``(B, 1, H, W)``, H and W multiples of 8."""
    with torch.no_grad():
        t1 = F.avg_pool2d(teacher.block1(x.expand(-1, 3, -1, -1)), 2)
        t2 = teacher.block2(t1)
    s1 = student(x)
    return ((s1 - t1) ** 2).mean() / t1.var() + ((teacher.block2(s1) - t2) ** 2).mean() / t2.var()


def distil_stem(photos: str | Path, teacher_path: str | Path, out: str | Path, steps: int = 6000, batch: int = 8,
                crop: int = 192, lr: float = 2e-3, seed: int = 0, progress: bool = True) -> DistilResult:
    """Train a :class:`SpaceToDepthStem` on the photos of the folder ``photos`` to stand in for block 1 of the
    network in ``teacher_path`` and write the network with it (``stem="s2d"``) to ``out``."""
    if crop % 8 or crop <= 0:
        raise ValueError(f"crop must be a positive multiple of 8, got {crop}")
    tensors, conf, _ = read_weights(teacher_path)
    if conf is None or conf.backbone != "aliked" or conf.stem != "aliked":
        raise ValueError(f"{teacher_path}: the teacher must be an 'aliked' backbone with its full-resolution block 1")
    net = IMAMatchNet(conf)
    net.load_state_dict({k: v.float() for k, v in tensors.items()})
    teacher = net.backbone.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    student = SpaceToDepthStem(teacher.widths[0])
    opt = torch.optim.Adam(student.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 0.5 * (1 + math.cos(math.pi * i / steps)))
    images = load_photos(photos)
    held_out = random_crops(images, 32, crop, np.random.default_rng(seed + 1))
    with torch.no_grad():
        before = float(stem_loss(teacher, student, held_out))
    bar = tqdm(range(steps), desc="distil stem", disable=not progress)
    for step in bar:
        loss = stem_loss(teacher, student, random_crops(images, batch, crop, rng))
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 100 == 0 or step == steps - 1:
            bar.set_postfix(loss=f"{loss.item():.4f}")
    with torch.no_grad():
        after = float(stem_loss(teacher, student, held_out))

    conf_s = conf.replace(stem="s2d")
    result = IMAMatchNet(conf_s)
    own = result.state_dict()
    state = {k: v.float() for k, v in tensors.items() if k in own}
    state.update({f"backbone.stem.{k}": v for k, v in student.state_dict().items()})
    result.load_state_dict(state)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_weights(result, conf_s, out, note=f"stem distilled from {Path(teacher_path).name}: {steps} steps, "
                                            f"held-out relative error {before:.4f} -> {after:.4f}")
    return DistilResult(before, after, out)
