"""Distil parts of the backbone into cheaper stand-ins (:mod:`imamatch.train.distil`): ``--part stem`` (default)
the full-resolution first block into the space-to-depth stem (``stem="s2d"``), ``--part mid`` blocks 2 and 3
into a depthwise block 2 and a plain (not deformable) block 3 (``mid="lite"``):

    python scripts/distil_stem.py ../shared/data/photos --out runs/s2d/r32_6k.safetensors [--teacher FILE]
        [--part stem|mid] [--steps 6000] [--batch 8] [--crop 192] [--lr 2e-3] [--seed 0]
"""

import argparse
from pathlib import Path

from imamatch.train.distil import distil_mid, distil_stem
from imamatch.weights import PACKAGE_WEIGHTS

ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
ap.add_argument("photos", type=Path)
ap.add_argument("--out", type=Path, required=True)
ap.add_argument("--teacher", type=Path, default=PACKAGE_WEIGHTS / "imamatch-fast.safetensors")
ap.add_argument("--part", choices=("stem", "mid"), default="stem")
ap.add_argument("--steps", type=int, default=6000)
ap.add_argument("--batch", type=int, default=8)
ap.add_argument("--crop", type=int, default=192)
ap.add_argument("--lr", type=float, default=2e-3)
ap.add_argument("--seed", type=int, default=0)
a = ap.parse_args()
distil = distil_stem if a.part == "stem" else distil_mid
r = distil(a.photos, a.teacher, a.out, a.steps, a.batch, a.crop, a.lr, a.seed)
print(f"held-out relative squared error: {r.error_before:.4f} -> {r.error_after:.4f}")
print(f"wrote {r.path}")
