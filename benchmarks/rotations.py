"""Matching a turned image 1, side by side: every shared-data benchmark pair as it is and with image 1 turned by a
quarter, a half and three quarters of a turn (one of the three per pair, in turn), for imamatch upright-only
(the default), imamatch with ``rotations=4``, SIFT (rotation-invariant) and, with ``--peers``, ALIKED+LightGlue.

    python benchmarks/rotations.py [--data ../shared/data] [--peers] [--trials 5]

The keypoints found in the turned image are mapped back into the upright one and scored as in
``bench_shared.py`` (fox pose AUC, Graffiti homography AUC, Middlebury precision, s/pair). Writes
``results/rotations.md`` and ``.json``.
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import count

import cv2
import numpy as np
import torch

from bench_shared import (COLUMNS, LONG_SIDE, data_arguments, evaluate, imamatch_method, require_data, sift_method,
                          table, write_results)
from imamatch import IMAMatch
from imamatch.api import unturn_points

Method = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


def turning(method: Method) -> Method:
    """``method`` on image 1 turned by 1, 2, 3, 1, … quarter turns (counter-clockwise), call by call, with the
    keypoints in image 1 mapped back into its upright pixels."""
    calls = count()

    def run(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        k = 1 + next(calls) % 3
        run.applied.append(k)
        k0, k1 = method(a, np.ascontiguousarray(np.rot90(b, k)))
        return k0, unturn_points(k1, k, b.shape)

    run.applied = []  # the quarter turns given, call by call
    return run


def main() -> None:
    ap = data_arguments(__doc__, "rotations.md")
    ap.add_argument("--peers", action="store_true", help="also ALIKED+LightGlue (see peers.py)")
    ap.add_argument("--trials", type=int, default=5, help="RANSAC runs per pair pooled into the AUCs")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    require_data(a.data)
    torch.set_num_threads(a.threads)
    cv2.setNumThreads(a.threads)
    turns: list[int] = []  # rotation1 of every turned match by imamatch (rotations=4)

    def recording(matcher: IMAMatch) -> Method:
        def run(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            r = matcher.match(x, y)
            turns.append(int(r["rotation1"]))
            return r["keypoints0"], r["keypoints1"]
        return run

    methods: dict[str, Callable[[], Method]] = {
        "imamatch (upright only: default)": lambda: imamatch_method(IMAMatch.from_pretrained()),
        "imamatch (rotations=4)": lambda: recording(IMAMatch.from_pretrained(rotations=4)),
        "SIFT + ratio + MNN": sift_method,
    }
    if a.peers:
        from peers import peer_factories

        methods["ALIKED + LightGlue"] = peer_factories(LONG_SIDE)["ALIKED + LightGlue"]
    results: dict[str, dict[str, float]] = {}
    found = None
    for name, make in methods.items():
        for turned in (False, True):
            method = make()
            turns.clear()
            row = f"{name}, image 1 {'turned' if turned else 'upright'}"
            run = turning(method) if turned else method
            results[row] = evaluate(row, run, a.data, a.trials)
            if name == "imamatch (rotations=4)" and turned:  # call 0 is evaluate's warm-up on random images
                pairs = list(zip(turns, run.applied))[1:]
                found = sum(t == 90 * (4 - k) for t, k in pairs), len(pairs)
    columns = [c for c in COLUMNS if not c[0].startswith(("fox_ba", "peak"))]
    md = (f"# Matching a turned image 1\n\n`python benchmarks/rotations.py{' --peers' if a.peers else ''}`: the "
          f"shared-data benchmark pairs ({LONG_SIDE} px, {a.threads} threads, {a.trials} RANSAC runs per pair) with "
          f"image 1 as it is, and turned by 90°, 180°, 270° counter-clockwise (one per pair, in turn); keypoints "
          f"mapped back into the upright image and scored as in `bench_shared.py`.\n\n"
          + table(results, columns) + "\n")
    if found is not None:
        md += (f"\nimamatch (rotations=4) matched the turned image 1 at the turn that undoes it on {found[0]} of "
               f"{found[1]} turned matchings.\n")
    write_results(a.out, md, {"results": results, "turns_found": found})


if __name__ == "__main__":
    main()
