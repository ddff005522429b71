"""Export a training run's weights into the package (float16 safetensors with the config in the metadata).

    python scripts/export_weights.py runs/fast1/last.safetensors [--dst imamatch/weights/imamatch-fast.safetensors]
        [--note "trained 3000 steps, ..."] [--float32]
"""

import argparse
from pathlib import Path

from imamatch.weights import PACKAGE_WEIGHTS, export_weights

ap = argparse.ArgumentParser()
ap.add_argument("src")
ap.add_argument("--dst", default=str(PACKAGE_WEIGHTS / "imamatch-fast.safetensors"))
ap.add_argument("--note", default="")
ap.add_argument("--float32", action="store_true", help="keep float32 (default: float16, half the size)")
a = ap.parse_args()
out = export_weights(a.src, a.dst, half=not a.float32, note=a.note)
print(f"{out} ({Path(out).stat().st_size / 1e6:.1f} MB)")
