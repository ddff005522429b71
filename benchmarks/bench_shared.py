"""Side-by-side benchmark on ../shared/data: imamatch (and ablations) vs OpenCV SIFT, in one process.

    python benchmarks/bench_shared.py [--data ../shared/data] [--out benchmarks/results/shared.md]

Every method sees the same images resized to a long side of 640 px; keypoints are compared in original
pixels. Writes a markdown table (and a JSON file beside it).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np
import torch

from imamatch import IMAMatch
from imamatch.eval.suite import PeakRSS, Timer, eval_graffiti, eval_posed, eval_stereo
from imamatch.io import read_image
from imamatch.runtime import release_freed_memory

LONG_SIDE = 640


def sift_method(long_side: int = LONG_SIDE, ratio: float = 0.8):
    """OpenCV SIFT (up to 4096 features), Lowe ratio test and mutual nearest neighbour."""
    sift = cv2.SIFT_create(nfeatures=4096)

    def detect(img: np.ndarray):
        s = long_side / max(img.shape)
        small = cv2.resize((img * 255).astype(np.uint8), None, fx=s, fy=s, interpolation=cv2.INTER_AREA)
        kp, desc = sift.detectAndCompute(small, None)
        pts = np.float64([k.pt for k in kp]).reshape(-1, 2)
        sy, sx = img.shape[0] / small.shape[0], img.shape[1] / small.shape[1]
        return (pts + 0.5) * [sx, sy] - 0.5, desc

    def run(a: np.ndarray, b: np.ndarray):
        p0, d0 = detect(a)
        p1, d1 = detect(b)
        if d0 is None or d1 is None or len(d0) < 2 or len(d1) < 2:
            return np.zeros((0, 2)), np.zeros((0, 2))
        bf = cv2.BFMatcher(cv2.NORM_L2)
        fwd = bf.knnMatch(d0, d1, k=2)
        bwd = {m.queryIdx: m.trainIdx for m in bf.match(d1, d0)}
        good = [m for m, n in fwd if m.distance < ratio * n.distance and bwd.get(m.trainIdx) == m.queryIdx]
        i0 = np.array([m.queryIdx for m in good], int)
        i1 = np.array([m.trainIdx for m in good], int)
        return p0[i0], p1[i1]

    return run


def imamatch_method(matcher: IMAMatch):
    def run(a: np.ndarray, b: np.ndarray):
        r = matcher.match(a, b)
        return r["keypoints0"], r["keypoints1"]

    return run


def evaluate(name: str, method, data: Path, trials: int) -> dict[str, float]:
    timer = Timer()
    res: dict[str, float] = {}
    method(np.random.default_rng(0).random((480, 640), dtype=np.float32),
           np.random.default_rng(1).random((480, 640), dtype=np.float32))  # warm-up
    # peak memory: on the largest pair (Graffiti 1→2), after handing back what earlier methods' allocators kept
    # (imamatch keeps freed memory for reuse, see imamatch.runtime), so each method is measured on its own
    graf = [read_image(data / "graf" / f"img{i}.png") for i in (1, 2)]
    release_freed_memory()
    with PeakRSS() as mem:
        method(*graf)
    res.update(eval_graffiti(method, data, timer, trials=trials))
    res.update(eval_stereo(method, data, timer))
    res.update(eval_posed(method, data / "fox", timer, trials=trials))
    res["s_per_pair"] = float(np.mean(timer.times))
    res["peak_mib"] = mem.peak_mib
    print(f"{name}: " + ", ".join(f"{k}={v:.3g}" for k, v in res.items() if not k.startswith("graf_1to")),
          file=sys.stderr)
    return res


COLUMNS = [
    ("fox_auc5", "pose AUC@5°", 100), ("fox_auc10", "@10°", 100), ("fox_auc20", "@20°", 100),
    ("fox_ba_auc5", "+BA @5°", 100), ("fox_ba_auc10", "@10°", 100), ("fox_ba_auc20", "@20°", 100),
    ("graf_auc3", "Graf H AUC@3px", 100), ("graf_auc5", "@5px", 100), ("graf_auc10", "@10px", 100),
    ("graf_1to3_err", "Graf 1→3 err px", 1),
    ("motorcycle_prec1", "Moto ≤1px %", 100), ("motorcycle_prec3", "≤3px %", 100), ("motorcycle_n", "matches", 1),
    ("aloe_prec1", "Aloe ≤1px %", 100), ("aloe_prec3", "≤3px %", 100), ("aloe_n", "matches", 1),
    ("s_per_pair", "s/pair", 1), ("fox_ba_s", "BA s/pair", 1), ("peak_mib", "peak MiB", 1),
]


def table(results: dict[str, dict[str, float]]) -> str:
    head = "| method | " + " | ".join(c[1] for c in COLUMNS) + " |"
    sep = "|---" * (len(COLUMNS) + 1) + "|"
    rows = []
    for name, r in results.items():
        cells = []
        for key, _, scale in COLUMNS:
            v = r.get(key)
            cells.append("–" if v is None else (f"{v * scale:.1f}" if scale != 1 or key.endswith(("err",)) else
                                                 (f"{v:.0f}" if key.endswith(("_n", "mib")) else f"{v:.2f}")))
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join([head, sep, *rows])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[1].parent / "shared" / "data"))
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "shared.md"))
    ap.add_argument("--weights", help="imamatch weights to evaluate (default: shipped)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--ablations", action="store_true",
                    help="also run imamatch without densification / consistency check / sub-pixel polish")
    ap.add_argument("--peers", action="store_true", help="also run ALIKED/DISK+LightGlue, XFeat, XFeat* (see peers.py)")
    ap.add_argument("--trials", type=int, default=5,
                    help="RANSAC runs per pair (shuffled match orders) pooled into the pose and homography AUCs")
    ap.add_argument("--only", help="semicolon-separated method names to run (default: all selected)")
    a = ap.parse_args()
    data = Path(a.data)
    if not (data / "graf").is_dir():
        sys.exit(f"benchmark data not found at {data}: pass --data pointing at shared/data")
    torch.set_num_threads(a.threads)
    cv2.setNumThreads(a.threads)

    def make(**over) -> IMAMatch:
        return IMAMatch(weights=a.weights, **over) if a.weights else IMAMatch.from_pretrained(**over)

    methods = {"imamatch (fast, densify all ×4)": imamatch_method(make()), "SIFT + ratio + MNN": sift_method()}
    if a.ablations:
        methods["imamatch, no densification"] = imamatch_method(make(densify="none"))
        methods["imamatch, densify band 0.2–0.6 ×4"] = imamatch_method(make(densify="band"))
        methods["imamatch, no consistency check"] = imamatch_method(make(consistency_check=False))
        methods["imamatch, no sub-pixel polish"] = imamatch_method(make(subpixel=False))
        methods["imamatch, polish without local affine"] = imamatch_method(make(subpixel_affine=False))
        methods["imamatch, no neighbourhood check"] = imamatch_method(make(neighbour_max_residual=None))
        methods["imamatch, keeps unpolished matches"] = imamatch_method(make(subpixel_keep_unmoved=True))
        methods["imamatch, neither (round-3 default)"] = imamatch_method(
            make(neighbour_max_residual=None, subpixel_keep_unmoved=True))
    if a.peers:
        from peers import peer_methods

        methods.update(peer_methods(LONG_SIDE))
    if a.only:
        keep = {n.strip() for n in a.only.split(";")}
        unknown = keep - set(methods)
        if unknown:
            sys.exit(f"unknown method(s) {sorted(unknown)}; available: {list(methods)}")
        methods = {k: v for k, v in methods.items() if k in keep}
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict[str, float]] = {}
    for name, m in methods.items():
        try:
            results[name] = evaluate(name, m, data, a.trials)
        except Exception as e:  # a peer that breaks must not lose the other rows
            print(f"{name} failed: {type(e).__name__}: {e}", file=sys.stderr)
            continue
        md = (f"Shared-data benchmark (long side {LONG_SIDE}, {a.threads} threads, {a.trials} RANSAC runs per pair, "
              f"torch {torch.__version__}, OpenCV {cv2.__version__}).\n\n{table(results)}\n")
        out.write_text(md)  # after every method, so a crash keeps the rows done
        out.with_suffix(".json").write_text(json.dumps(results, indent=2))
    print(md)
    print(f"written: {out}")


if __name__ == "__main__":
    main()
