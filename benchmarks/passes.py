"""Where the time per pair goes, pass by pass: every pair of the shared-data benchmark matched with the shipped
weights (or ``--weights``), each pass of the network timed (the first pass; for hard pairs the pre-aligned
passes after it), summed by kind of pass.

    python benchmarks/passes.py [--data ../shared/data] [--weights W.safetensors] [--repeats 3]

Kinds: "full unaligned pass" (the pair's only pass, a full first pass that a pre-aligned one follows, or the
first pass rerun in full when the pre-aligned ones found nothing), "coarse-only first pass" (a hard pair, found
by its coarse coverage: it stops after coarse matching and only its homography is used), "pre-aligned pass"
(image 1 warped onto image 0; image 0's backbone reused). Each pair is matched ``--repeats`` times; its pass
times are the medians over the repeats. Writes ``results/passes.md`` and ``.json``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from bench_shared import LONG_SIDE, data_arguments, require_data
from imamatch import IMAMatch
from imamatch.eval.suite import benchmark_pairs
from imamatch.io import to_gray_sized

KINDS = ("full unaligned pass", "coarse-only first pass", "pre-aligned pass")


class TimedPasses(IMAMatch):
    """:class:`IMAMatch` that records ``(seconds, kind)`` for each pass of the network in ``self.passes``."""

    passes: list[tuple[float, str]]

    def _match_gray(self, g0, g1, cover1=None, *args, **kw):
        t = time.perf_counter()
        out = super()._match_gray(g0, g1, cover1, *args, **kw)
        kind = KINDS[2] if cover1 is not None else KINDS[1] if out.coarse_only else KINDS[0]
        self.passes.append((time.perf_counter() - t, kind))
        return out


def time_pair(m: TimedPasses, a: np.ndarray, b: np.ndarray, repeats: int) -> tuple[float, list[tuple[float, str]]]:
    """Median total time of matching ``a``, ``b`` and the median time of each of its passes (s), with their kinds."""
    totals, runs = [], []
    for _ in range(repeats):
        m.passes = []
        t = time.perf_counter()
        m.match(a, b)
        totals.append(time.perf_counter() - t)
        runs.append(m.passes)
    kinds = [k for _, k in runs[0]]
    if any([k for _, k in r] != kinds for r in runs):
        raise RuntimeError("the passes differ between repeats of one pair")
    return float(np.median(totals)), [(float(np.median([r[i][0] for r in runs])), k) for i, k in enumerate(kinds)]


def main() -> None:
    ap = data_arguments(__doc__, "passes.md")
    ap.add_argument("--weights", help="imamatch weights (default: shipped)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    require_data(a.data)
    torch.set_num_threads(a.threads)
    m = TimedPasses(weights=a.weights) if a.weights else TimedPasses.from_pretrained()
    pairs = [(n, to_gray_sized(x, "image0", LONG_SIDE)[0], to_gray_sized(y, "image1", LONG_SIDE)[0])
             for n, x, y in benchmark_pairs(a.data)]
    time_pair(m, pairs[0][1], pairs[0][2], 1)  # warm-up
    rows = {}
    for name, x, y in tqdm(pairs, desc="pairs"):
        total, passes = time_pair(m, x, y, a.repeats)
        rows[name] = {"total_s": total, "passes": passes}
    grand = sum(r["total_s"] for r in rows.values())
    lines = [f"Time by pass (long side {LONG_SIDE}, {a.threads} threads, torch {torch.__version__}, "
             f"{Path(a.weights).name if a.weights else 'shipped weights'}; medians of {a.repeats} runs per pair): "
             f"{len(rows)} pairs, {grand:.2f} s in all, {1000 * grand / len(rows):.0f} ms/pair.", "",
             "| pass | passes | s | share | ms/pass |", "|---|---|---|---|---|"]
    for kind in KINDS:
        t = [s for r in rows.values() for s, k in r["passes"] if k == kind]
        if t:
            lines.append(f"| {kind} | {len(t)} | {sum(t):.2f} | {100 * sum(t) / grand:.0f} % | "
                         f"{1000 * np.mean(t):.0f} |")
    outside = grand - sum(s for r in rows.values() for s, _ in r["passes"])
    lines += [f"| outside the passes (resizing, warps, homographies) | | {outside:.2f} | "
              f"{100 * outside / grand:.0f} % | |", "", "| pair | ms | passes (ms, kind) |", "|---|---|---|"]
    lines += [f"| {n} | {1000 * r['total_s']:.0f} | " + ", ".join(f"{1000 * s:.0f} {k}" for s, k in r["passes"]) + " |"
              for n, r in rows.items()]
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text("\n".join(lines) + "\n")
    a.out.with_suffix(".json").write_text(json.dumps(rows, indent=2))
    print("\n".join(lines[:9]))
    print(f"written: {a.out}")


if __name__ == "__main__":
    main()
