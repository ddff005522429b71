"""Time per pair, side by side: imamatch (shipped weights and any others given) against ALIKED+LightGlue and SIFT
on every pair of the shared-data benchmark, interleaved and repeated so that the machine's drift hits all alike.

    python benchmarks/speed.py [--data ../shared/data] [--weights A.safetensors B.safetensors]
        [--set "KEY=VALUE,..."] [--repeats 3]

For each pair, each method is run ``--repeats`` times, the methods taking turns in a rotating order; a method's
time for the pair is the median of its runs, its s/pair the mean of those over the pairs. The ratios are to
ALIKED+LightGlue's s/pair (issue 6: imamatch ≤ 1/5). Writes ``results/speed.md`` and ``.json``.
"""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm import tqdm

from bench_shared import (LONG_SIDE, data_arguments, imamatch_method, parse_settings, require_data, sift_method,
                          warm_up, write_results)
from imamatch import IMAMatch
from imamatch.eval.suite import benchmark_pairs

REFERENCE = "ALIKED + LightGlue"


def main() -> None:
    ap = data_arguments(__doc__, "speed.md")
    ap.add_argument("--weights", nargs="*", default=[], help="more imamatch weights files to time")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE,...",
                    help="also time imamatch (shipped weights) with these MatcherConfig settings (repeatable)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    require_data(a.data)
    torch.set_num_threads(a.threads)
    cv2.setNumThreads(a.threads)
    from peers import peer_factories

    methods = {"imamatch (shipped)": imamatch_method(IMAMatch.from_pretrained())}
    methods.update({f"imamatch ({Path(w).name})": imamatch_method(IMAMatch(weights=w)) for w in a.weights})
    methods.update({f"imamatch ({spec})": imamatch_method(IMAMatch.from_pretrained(**parse_settings(spec)))
                    for spec in a.set})
    methods[REFERENCE] = peer_factories(LONG_SIDE)[REFERENCE]()
    methods["SIFT + ratio + MNN"] = sift_method()
    for m in methods.values():
        warm_up(m)
    names = list(methods)
    per_pair: dict[str, dict[str, float]] = {n: {} for n in names}
    pairs = benchmark_pairs(a.data)
    for k, (pair, img0, img1) in enumerate(tqdm(pairs, desc="pairs")):
        runs: dict[str, list[float]] = {n: [] for n in names}
        for r in range(a.repeats):
            shift = (k * a.repeats + r) % len(names)
            for n in names[shift:] + names[:shift]:  # rotating order
                t = time.perf_counter()
                methods[n](img0, img1)
                runs[n].append(time.perf_counter() - t)
        for n in names:
            per_pair[n][pair] = float(np.median(runs[n]))
    mean = {n: float(np.mean(list(per_pair[n].values()))) for n in names}
    rows = [f"| {n} | {mean[n]:.3f} | {mean[n] / mean[REFERENCE]:.2f}× |" for n in names]
    md = (f"Time per pair on the {len(pairs)} shared-data benchmark pairs (long side {LONG_SIDE}, {a.threads} threads, "
          f"torch {torch.__version__}): median of {a.repeats} interleaved runs per pair and method, mean over "
          f"the pairs.\n\n| method | s/pair | vs {REFERENCE} |\n|---|---|---|\n" + "\n".join(rows) + "\n")
    write_results(a.out, md, {"mean_s": mean, "per_pair_s": per_pair})


if __name__ == "__main__":
    main()
