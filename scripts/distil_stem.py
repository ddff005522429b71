"""Distil the backbone's full-resolution first block into the cheap space-to-depth stem (``stem="s2d"``),
:func:`imamatch.train.distil.distil_stem`:

    python scripts/distil_stem.py ../shared/data/photos --out runs/s2d/r32_6k.safetensors [--teacher FILE]
        [--steps 6000] [--batch 8] [--crop 192] [--lr 2e-3] [--seed 0]
"""

import argparse
from pathlib import Path

from imamatch.train.distil import distil_stem
from imamatch.weights import PACKAGE_WEIGHTS

ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
ap.add_argument("photos", type=Path)
ap.add_argument("--out", type=Path, required=True)
ap.add_argument("--teacher", type=Path, default=PACKAGE_WEIGHTS / "imamatch-fast.safetensors")
ap.add_argument("--steps", type=int, default=6000)
ap.add_argument("--batch", type=int, default=8)
ap.add_argument("--crop", type=int, default=192)
ap.add_argument("--lr", type=float, default=2e-3)
ap.add_argument("--seed", type=int, default=0)
a = ap.parse_args()
r = distil_stem(a.photos, a.teacher, a.out, a.steps, a.batch, a.crop, a.lr, a.seed)
print(f"held-out relative squared error (stem + block 2 on it): {r.error_before:.4f} -> {r.error_after:.4f}")
print(f"wrote {r.path}")
