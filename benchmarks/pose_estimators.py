"""Which robust estimator and threshold turn each matcher's fox matches into the best relative poses.

    python benchmarks/pose_estimators.py [--data ../shared/data] [--out benchmarks/results/pose_estimators.md]
                                         [--no-peers]

Every method matches the 40 fixed pairs of the posed phone sequence once (images resized to a long side of
640 px, keypoints in the original 1920-px frames); then each estimator of :func:`imamatch.pose.estimate_relative_pose`
(PoseLib's LO-RANSAC, OpenCV's USAC-MAGSAC) runs at each threshold (original pixels: 3 px is 1 px where the
matchers work) on 5 shuffled orders of the matches per pair, without bundle adjustment. Writes the pose
AUC@5/10/20° per method × estimator × threshold as a markdown table and JSON beside it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_shared import LONG_SIDE, fox_arguments, imamatch_method, sift_method  # noqa: E402

from imamatch import IMAMatch  # noqa: E402
from imamatch.data.posed import load_posed, relative_pose, select_pairs, undistorted_image  # noqa: E402
from imamatch.eval.metrics import error_auc, pose_error_deg  # noqa: E402
from imamatch.eval.suite import shuffled_trials  # noqa: E402
from imamatch.pose import estimate_relative_pose  # noqa: E402

THRESHOLDS_PX = (0.5, 1.0, 1.5, 2.0, 3.0, 4.0)
ESTIMATORS = ("poselib", "magsac")


def pose_aucs(matches: list[tuple[np.ndarray, np.ndarray]], frames, pairs, estimator: str, threshold_px: float,
              trials: int) -> list[float]:
    """AUC@5/10/20° (percent) of one estimator at one threshold over all pairs and trials."""
    errs = []
    for (k0, k1), (i, j) in zip(matches, pairs):
        R, t = relative_pose(frames[i], frames[j])
        for order in shuffled_trials(len(k0), trials):
            est = estimate_relative_pose(k0[order], k1[order], frames[i].K, frames[j].K, threshold_px=threshold_px,
                                         refine=False, method=estimator)
            errs.append(pose_error_deg(est.R, est.t, R, t) if est.success else float("inf"))
    return [100 * a for a in error_auc(errs, (5, 10, 20))]


def main() -> None:
    ap = fox_arguments(__doc__, "pose_estimators.md")
    ap.add_argument("--only", help="semicolon-separated method names (PoseLib at low thresholds on matches with many "
                                   "outliers runs its full 100 000 iterations: XFeat takes ~20 min)")
    a = ap.parse_args()
    torch.set_num_threads(2)
    cv2.setNumThreads(2)
    frames = load_posed(a.data / "fox")
    pairs = select_pairs(frames)
    factories = {"imamatch": lambda: imamatch_method(IMAMatch.from_pretrained()), "SIFT + ratio + MNN": sift_method}
    if not a.no_peers:
        from peers import peer_factories

        factories.update(peer_factories(LONG_SIDE))
    if a.only:
        keep = [n.strip() for n in a.only.split(";")]
        unknown = set(keep) - set(factories)
        if unknown:
            sys.exit(f"unknown method(s) {sorted(unknown)}; available: {list(factories)}")
        factories = {k: factories[k] for k in keep}
    gray = {i: cv2.cvtColor(undistorted_image(frames[i]), cv2.COLOR_BGR2GRAY).astype(np.float32) / 255
            for i in sorted({k for p in pairs for k in p})}
    results: dict[str, dict[str, list[float]]] = {}
    for name, make in factories.items():
        method = make()
        matches = [tuple(np.asarray(k, np.float64).reshape(-1, 2) for k in method(gray[i], gray[j])) for i, j in pairs]
        results[name] = {f"{est} {thr:g}": pose_aucs(matches, frames, pairs, est, thr, a.trials)
                         for est in ESTIMATORS for thr in THRESHOLDS_PX}
        best = max(results[name].items(), key=lambda kv: kv[1][1])
        print(f"{name}: best {best[0]} px {[round(x, 1) for x in best[1]]}", file=sys.stderr)
        write(results, a.out)  # after every method, so an interrupted run keeps the rows done
    print(a.out.read_text())


def write(results: dict[str, dict[str, list[float]]], out: Path) -> None:
    cols = [f"{est} {thr:g}" for est in ESTIMATORS for thr in THRESHOLDS_PX]
    lines = ["Fox pose AUC@5/10/20° (no BA) by estimator and threshold (original px; 3 px = 1 px at 640):", "",
             "| method | " + " | ".join(f"{c} px" for c in cols) + " |", "|---|" + "---|" * len(cols)]
    for name, row in results.items():
        lines.append(f"| {name} | " + " | ".join("/".join(f"{x:.1f}" for x in row[c]) for c in cols) + " |")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    out.with_suffix(".json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
