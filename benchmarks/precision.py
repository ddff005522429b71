"""Numerical precision of the attended coarse features, side by side on ../shared/data: the shipped float32
network against the attention or the fine path's top-down convolutions run in bfloat16 (this CPU has native
bfloat16 dot products: those convolutions take about half the time), and against float32 with random relative
noise on the attended 1/8 features (to tell rounding that is random from rounding that is systematic).

    python benchmarks/precision.py [--data ../shared/data] [--out benchmarks/results/precision.md]

Each row: the accuracy metrics of bench_shared (pose AUC on fox, Graffiti homography AUC, Middlebury precision),
the relative error of the attended coarse features against float32 (median over the first pass of every pair)
and s/pair. Writes a markdown table and a JSON file beside it.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import torch

from bench_shared import COLUMNS, evaluate, imamatch_method
from imamatch import IMAMatch
from imamatch.model import Attended, IMAMatchNet

BF16 = torch.bfloat16


def in_bfloat16(module: torch.nn.Module, method: str) -> None:
    """Run ``module.method`` on a bfloat16 copy of ``module`` (floating-point inputs cast to bfloat16, outputs
    back to float32)."""
    low = copy.deepcopy(module).to(BF16)
    inner = getattr(low, method)

    def cast(x, dtype):
        if isinstance(x, torch.Tensor) and x.is_floating_point():
            return x.to(dtype)
        if isinstance(x, dict):
            return {k: cast(v, dtype) for k, v in x.items()}
        if isinstance(x, tuple):
            return tuple(cast(v, dtype) for v in x)
        return x

    def run(*args, **kwargs):
        return cast(inner(*cast(args, BF16), **{k: cast(v, BF16) for k, v in kwargs.items()}), torch.float32)

    setattr(module, method, run)


def with_noise(net: IMAMatchNet, eps: float, seed: int = 0) -> None:
    """Multiply the attended 1/8 features by ``1 + eps·N(0, 1)``, independently per entry, before coarse matching
    and the fine path."""
    gen = torch.Generator().manual_seed(seed)
    inner = net.coarse_encoding

    def run(att: Attended, *args, **kwargs):
        for name in ("coarse0", "coarse1"):
            x = getattr(att, name)
            setattr(att, name, x * (1 + eps * torch.randn(x.shape, generator=gen)))
        return inner(att, *args, **kwargs)

    net.coarse_encoding = run


def variants() -> dict[str, Callable[[IMAMatchNet], None]]:
    def attention(net):
        in_bfloat16(net.transformer, "forward")
        in_bfloat16(net.transformer, "first_self")

    return {
        "float32 (shipped)": lambda net: None,
        "attention in bfloat16": attention,
        "top-down (fine path) in bfloat16": lambda net: in_bfloat16(net.top_down, "forward"),
        "float32, attended features × (1 + 1e-3·noise)": lambda net: with_noise(net, 1e-3),
        "float32, attended features × (1 + 4e-3·noise)": lambda net: with_noise(net, 4e-3),
    }


def feature_error(make: Callable[[IMAMatchNet], None], data: Path) -> float:
    """Median relative error ‖c − c₃₂‖ / ‖c₃₂‖ of image 1's attended features over every fifth pair (first pass
    only)."""
    from imamatch.eval.suite import benchmark_pairs

    pairs = benchmark_pairs(data)[::5]
    caught: dict[str, list[torch.Tensor]] = {"ref": [], "var": []}
    for key, patch in (("ref", None), ("var", make)):
        m = IMAMatch.from_pretrained(prealign_below=None, prealign_coarse_below=None)
        if patch is not None:
            patch(m.net)
        inner = m.net.fine_maps

        def grab(att, *a, _inner=inner, _key=key, **k):
            caught[_key].append(att.coarse1.clone())
            return _inner(att, *a, **k)

        m.net.fine_maps = grab
        for _, a, b in pairs:
            m.match(a, b)
    errs = [float((v - r).norm() / r.norm()) for r, v in zip(caught["ref"], caught["var"])]
    return float(np.median(errs))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "precision.md")
    ap.add_argument("--trials", type=int, default=5)
    a = ap.parse_args()
    if not (a.data / "graf").is_dir():
        sys.exit(f"benchmark data not found at {a.data}: pass --data pointing at shared/data")
    torch.set_num_threads(2)
    cv2.setNumThreads(2)
    results: dict[str, dict[str, float]] = {}
    for name, make in variants().items():
        m = IMAMatch.from_pretrained()
        make(m.net)
        res = evaluate(name, imamatch_method(m), a.data, a.trials)
        res["feature_err"] = feature_error(make, a.data)
        results[name] = res
    keys = [c for c in COLUMNS if c[0] not in ("fox_ba_auc5", "fox_ba_auc10", "fox_ba_auc20", "fox_ba_s", "peak_mib")]
    head = "| variant | " + " | ".join(c[1] for c in keys) + " | feature rel. error |"
    rows = [head, "|---" * (len(keys) + 2) + "|"]
    for name, r in results.items():
        cells = [f"{r[k] * s:.1f}" if s != 1 or k.endswith("err") else
                 (f"{r[k]:.0f}" if k.endswith("_n") else f"{r[k]:.2f}") for k, _, s in keys]
        rows.append(f"| {name} | " + " | ".join(cells) + f" | {r['feature_err']:.1e} |")
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text("\n".join(rows) + "\n")
    a.out.with_suffix(".json").write_text(json.dumps(results, indent=2))
    print("\n".join(rows))


if __name__ == "__main__":
    main()
