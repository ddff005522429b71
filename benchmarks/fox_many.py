"""Fox relative pose on many more pairs than the shared benchmark's 40, with a paired bootstrap against
ALIKED+LightGlue: how far apart the methods really are when one pair is not 2.5 AUC points.

    python benchmarks/fox_many.py [--data ../shared/data] [--per-bin 40] [--trials 5] [--no-peers]
        [--set KEY=VALUE,...]   # also imamatch (shipped weights) with these settings (repeatable)
        [--out benchmarks/results/fox_many.md]

Pairs: :func:`imamatch.data.posed.select_pairs` with ``--per-bin`` pairs per rotation bin (3-10, 10-20, 20-30,
30-45, 45-60°; the benchmark uses 8 per bin; 40 gives 200 pairs, each 0.5 AUC points). The protocol is the shared
benchmark's (`bench_shared.py`): undistorted frames, long side 640, PoseLib essential matrix at 1 px of the
matching resolution, AUC pooling ``--trials`` RANSAC runs per pair. The interval is a paired bootstrap over the
pairs (2 000 resamplings) of each method's AUC minus ALIKED+LightGlue's.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_shared import (LONG_SIDE, fox_arguments, imamatch_method, parse_settings, sift_method,  # noqa: E402
                          warm_up, write_results)

from imamatch import IMAMatch  # noqa: E402
from imamatch.api import SHIPPED  # noqa: E402
from imamatch.data.posed import load_posed, relative_pose  # noqa: E402
from imamatch.eval.metrics import error_auc, rotation_error_deg  # noqa: E402
from imamatch.eval.suite import Timer, posed_errors  # noqa: E402

THRESHOLDS = (5, 10, 20)
BINS = (3, 10, 20, 30, 45, 60)  # the rotation bins of select_pairs
BOOTSTRAP = 2000
PEER = "ALIKED + LightGlue"
FAILED_DEG = 10.0  # a pair whose median error over the trials is above this counts as failed


def aucs(errors: np.ndarray) -> np.ndarray:
    """``(pairs, trials)`` errors → AUC@5/10/20 in percent."""
    return 100 * np.array(error_auc(errors.ravel(), THRESHOLDS))


def paired_interval(a: np.ndarray, b: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """95 % bootstrap interval of AUC(a) − AUC(b) over resamplings of the pairs (rows) of both error arrays."""
    rng = np.random.default_rng(seed)
    diffs = np.empty((BOOTSTRAP, len(THRESHOLDS)))
    for k in range(BOOTSTRAP):
        rows = rng.integers(0, len(a), len(a))
        diffs[k] = aucs(a[rows]) - aucs(b[rows])
    return np.percentile(diffs, 2.5, axis=0), np.percentile(diffs, 97.5, axis=0)


def main() -> None:
    ap = fox_arguments(__doc__, "fox_many.md")
    ap.add_argument("--per-bin", type=int, default=40, help="pairs per rotation bin (the benchmark: 8)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE,...",
                    help="also imamatch (shipped weights) with these MatcherConfig settings (repeatable)")
    ap.add_argument("--weights", action="append", default=[], metavar="NAME_OR_FILE",
                    help="also imamatch with these weights: shipped by name ('accurate') or a file (repeatable)")
    a = ap.parse_args()
    torch.set_num_threads(2)
    methods = {"imamatch": imamatch_method(IMAMatch.from_pretrained())}
    methods.update({f"imamatch ({spec})": imamatch_method(IMAMatch.from_pretrained(**parse_settings(spec)))
                    for spec in a.set})
    methods.update({f"imamatch ({w})": imamatch_method(IMAMatch.from_pretrained(w) if w in SHIPPED else
                                                          IMAMatch(weights=w)) for w in a.weights})
    methods["SIFT + ratio + MNN"] = sift_method(LONG_SIDE)
    if not a.no_peers:
        from peers import peer_factories
        methods[PEER] = peer_factories(LONG_SIDE)[PEER]()
    errors, seconds, pairs = {}, {}, []
    frames = load_posed(a.data / "fox")
    for name, method in methods.items():
        warm_up(method)
        timer = Timer()
        pairs, errs, _ = posed_errors(method, a.data / "fox", timer, trials=a.trials, per_bin=a.per_bin)
        errors[name], seconds[name] = errs[False], float(np.mean(timer.times))
        print(f"{name}: AUC {' / '.join(f'{v:.1f}' for v in aucs(errors[name]))}", file=sys.stderr)
    rotations = np.array([rotation_error_deg(relative_pose(frames[i], frames[j])[0], np.eye(3)) for i, j in pairs])
    lines = ["| method | AUC@5° | @10° | @20° | pairs off by > 10° | s/pair |"
             + (f" AUC − {PEER}, 95 % interval @5 / @10 / @20 |" if PEER in errors else ""),
             "|---|---|---|---|---|---|" + ("---|" if PEER in errors else "")]
    table = {}
    for name, e in errors.items():
        v = aucs(e)
        failed = int((np.median(e, axis=1) > FAILED_DEG).sum())
        row = f"| {name} | {v[0]:.1f} | {v[1]:.1f} | {v[2]:.1f} | {failed} | {seconds[name]:.2f} |"
        table[name] = {"auc": v.tolist(), "failed": failed, "s_per_pair": seconds[name],
                       "median_error_per_pair": np.median(e, axis=1).tolist()}
        if PEER in errors:
            if name == PEER:
                row += " |"
            else:
                lo, hi = paired_interval(e, errors[PEER])
                row += " " + " / ".join(f"{x:+.1f} … {y:+.1f}" for x, y in zip(lo, hi)) + " |"
                table[name]["vs_peer_interval"] = [lo.tolist(), hi.tolist()]
        lines.append(row)
    lines += ["", "AUC@20° by relative-rotation bin (pairs in the bin):", "",
              "| method | " + " | ".join(f"{lo}–{hi}° ({n})" for (lo, hi), n in bin_sizes(rotations)) + " |",
              "|---|" + "---|" * len(BINS[:-1])]
    for name, e in errors.items():
        cells = [f"{aucs(e[(rotations >= lo) & (rotations < hi)])[2]:.1f}" for lo, hi in zip(BINS[:-1], BINS[1:])]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    md = (f"Fox relative pose on {len(pairs)} pairs ({a.per_bin} per rotation bin, 3–60°; the shared benchmark "
          f"uses 8 per bin), 640 px, {a.trials} RANSAC runs per pair pooled (`benchmarks/fox_many.py`):\n\n"
          + "\n".join(lines) + "\n")
    write_results(a.out, md, {"pairs": [list(p) for p in pairs], "rotation_deg": rotations.tolist(),
                              "methods": table})


def bin_sizes(rotations: np.ndarray) -> list[tuple[tuple[float, float], int]]:
    """The rotation bins and how many of the pairs fall in each."""
    return [((lo, hi), int(((rotations >= lo) & (rotations < hi)).sum())) for lo, hi in zip(BINS[:-1], BINS[1:])]


if __name__ == "__main__":
    main()
