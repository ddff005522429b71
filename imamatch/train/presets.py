"""Named training configurations: per-dataset reference settings as overrides of :class:`TrainConfig`'s defaults.

All use AdamW with weight decay 1e-2 and gradient clipping at norm 10 (the defaults). ``synthetic`` is the
defaults themselves (warm-up, cosine decay; how the shipped weights were trained). ``megadepth`` and ``scannet``
are the release's recipes (IMAmatch's ``train_megadepth.py`` / ``train_scannet.py``: 2 GPUs, learning rate
6e-3/64 per pair of the global batch, linear warm-up, learning rate halved at epoch milestones), converted from
epochs to steps: a MegaDepth epoch is 368 scenes × 100 pairs / (2 GPUs × 2 pairs) = 9 200 steps, a ScanNet epoch
1 513 scenes × 200 pairs / (2 GPUs × 4 pairs) ≈ 37 800 steps. With another number of GPUs, scale ``lr`` by the
global batch and the step counts inversely. ``posed`` fine-tunes existing weights on one posed collection.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .trainer import TrainConfig

DATASETS = ("synthetic", "scenes", "mixed", "megadepth", "scannet", "posed")
PHOTO_DATASETS = ("synthetic", "scenes", "mixed")  # made from folders of photos
SCHEDULES = ("cosine", "step")

TRAIN_CONFIGS: dict[str, dict[str, Any]] = {
    "synthetic": {"dataset": "synthetic"},
    # 3D scenes (depth + pose supervision) and homography pairs in turn, from the same photos
    "mixed": {"dataset": "mixed"},
    # 832 px padded square; 30 epochs; warm-up 3 epochs; halved every 4 epochs after it (release: epochs 8, 12, …)
    "megadepth": {"dataset": "megadepth", "size": 832, "batch": 2, "lr": 6e-3 / 64 * 4, "steps": 276_000,
                  "warmup": 27_600, "schedule": "step", "decay_every": 36_800, "decay": 0.5},
    # 640×480; 30 epochs; halved every 3 epochs (release: 3, 6, 9, 12, 17, …; no warm-up there, 1 000 steps here)
    "scannet": {"dataset": "scannet", "size": 640, "batch": 4, "lr": 6e-3 / 64 * 8, "steps": 1_134_000,
                "warmup": 1_000, "schedule": "step", "decay_every": 113_400, "decay": 0.5},
    # fine-tuning on one posed collection (epipolar supervision): short, gentle, halved every 2 500 steps
    "posed": {"dataset": "posed", "size": 640, "batch": 2, "lr": 1e-4, "steps": 10_000, "warmup": 500,
              "schedule": "step", "decay_every": 2_500, "decay": 0.5},
}


def train_config(name: str, folders: list[str] | None = None, out: str = "", **overrides: Any) -> TrainConfig:
    """The :class:`TrainConfig` of the named configuration, with ``overrides`` (TrainConfig fields) on top."""
    from dataclasses import fields

    from .trainer import TrainConfig

    if name not in TRAIN_CONFIGS:
        raise ValueError(f"unknown training config {name!r}; choose from {', '.join(TRAIN_CONFIGS)}")
    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"not TrainConfig fields: {', '.join(unknown)}")
    return TrainConfig(folders=list(folders or []), out=out, **{**TRAIN_CONFIGS[name], **overrides})
