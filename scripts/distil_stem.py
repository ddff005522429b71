"""Distil parts of the network into cheaper stand-ins (:mod:`imamatch.train.distil`):

- ``--part stem`` (default): the backbone's full-resolution first block into the space-to-depth stem
  (``stem="s2d"``);
- ``--part mid``: blocks 2 and 3 into a depthwise block 2 and a plain (not deformable) block 3 (``mid="lite"``);
- ``--part deep``: the deformable block 4 into a plain one (``deep="plain"``; ``--dilated``: its second conv
  dilated by 3, ``deep="dilated"``);
- ``--part attention``: the attention into a narrower one (``--dim``, ``--heads``, ``--ffn-ratio``; ``--crop`` is
  then the side of the synthetic pairs);
- ``--part fine``: the fine path (top-down maps and the heads reading them) into a narrower one (``--dim``);
- ``--part realign``: fine-tunes the coarse path of ``--student`` (e.g. a ``--part deep`` output) to reproduce the
  teacher's coarse assignment on its own backbone.

    python scripts/distil_stem.py ../shared/data/photos --out runs/s2d/r32_6k.safetensors [--teacher FILE]
        [--part stem|mid|deep|attention|fine|realign] [--steps N] [--batch N] [--crop PX] [--lr LR] [--seed 0]
        [--dim 64|32] [--heads 2] [--ffn-ratio 1] [--pairs homography|scenes|mixed] [--dilated] [--student FILE]

Defaults: stem and mid 6 000 steps of 8 crops of 192 px at lr 2e-3; deep 3 000 steps of 4 crops of 448 px at
lr 2e-3; attention 1 800 steps of 4 pairs of 320 px at lr 1e-3; fine 1 500 steps of 4 pairs of 320 px at lr 1e-3;
realign 600 steps of 4 mixed pairs of 320 px at lr 2e-4.
"""

import argparse
from pathlib import Path

from imamatch.train.distil import (distil_attention, distil_deep, distil_fine, distil_mid, distil_stem,
                                   realign_attention)
from imamatch.weights import PACKAGE_WEIGHTS

ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
ap.add_argument("photos", type=Path)
ap.add_argument("--out", type=Path, required=True)
ap.add_argument("--teacher", type=Path, default=PACKAGE_WEIGHTS / "imamatch-fast.safetensors")
ap.add_argument("--part", choices=("stem", "mid", "deep", "attention", "fine", "realign"), default="stem")
ap.add_argument("--steps", type=int)
ap.add_argument("--batch", type=int)
ap.add_argument("--crop", type=int)
ap.add_argument("--lr", type=float)
ap.add_argument("--seed", type=int, default=0)
ap.add_argument("--dim", type=int, help="attention width (--part attention, default 64) or fine-path width "
                "(--part fine, default 32)")
ap.add_argument("--student", type=Path, help="--part realign: the network whose coarse path is fine-tuned")
ap.add_argument("--dilated", action="store_true", help="--part deep: the second conv dilated by 3")
ap.add_argument("--heads", type=int, default=2, help="attention heads (--part attention)")
ap.add_argument("--ffn-ratio", type=int, help="attention FFN hidden channels / width (--part attention; default "
                "the teacher's; at the teacher's width the student starts as the teacher with its FFN pruned)")
ap.add_argument("--pairs", choices=("homography", "scenes", "mixed"),
                help="synthetic pairs (--part attention, fine, realign): homographies, piecewise-planar scenes, "
                "or both (default: homography; realign: mixed)")
a = ap.parse_args()
if a.part == "attention":
    r = distil_attention(a.photos, a.teacher, a.out, dim=a.dim or 64, heads=a.heads, steps=a.steps or 1800,
                         batch=a.batch or 4, size=a.crop or 320, lr=a.lr or 1e-3, seed=a.seed,
                         ffn_ratio=a.ffn_ratio, pairs=a.pairs or "homography")
elif a.part == "fine":
    r = distil_fine(a.photos, a.teacher, a.out, dim=a.dim or 32, steps=a.steps or 1500, batch=a.batch or 4,
                    size=a.crop or 320, lr=a.lr or 1e-3, seed=a.seed, pairs=a.pairs or "homography")
elif a.part == "realign":
    if a.student is None:
        ap.error("--part realign needs --student FILE")
    r = realign_attention(a.photos, a.teacher, a.student, a.out, steps=a.steps or 600, batch=a.batch or 4,
                          size=a.crop or 320, lr=a.lr or 2e-4, seed=a.seed, pairs=a.pairs or "mixed")
elif a.part == "deep":
    r = distil_deep(a.photos, a.teacher, a.out, a.steps or 3000, a.batch or 4, a.crop or 448, a.lr or 2e-3, a.seed,
                    kind="dilated" if a.dilated else "plain")
else:
    distil = distil_stem if a.part == "stem" else distil_mid
    r = distil(a.photos, a.teacher, a.out, a.steps or 6000, a.batch or 8, a.crop or 192, a.lr or 2e-3, a.seed)
print(f"held-out error: {r.error_before:.4f} -> {r.error_after:.4f}")
print(f"wrote {r.path}")
