"""Numerical precision of the attended coarse features, side by side on ../shared/data: the shipped float32
network against the attention or the fine path's top-down convolutions run in bfloat16 (this CPU has native
bfloat16 dot products: those convolutions take about half the time), and against float32 with random relative
noise on the attended 1/8 features (to tell rounding that is random from rounding that is systematic).

    python benchmarks/precision.py [--data ../shared/data] [--out benchmarks/results/precision.md]

Each row: the accuracy metrics of bench_shared (pose AUC on fox, Graffiti homography AUC, Middlebury precision),
s/pair, and the relative error of the attended coarse features against float32 (median over the first pass of
every fifth pair). Writes a markdown table and a JSON file beside it.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import torch

from bench_shared import COLUMNS, data_arguments, evaluate, imamatch_method, require_data, table
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
    def attention(net):  # what MatcherConfig.attention_bf16 does where the CPU has native bfloat16
        net.transformer.compute_dtype = BF16

    return {
        "float32 (shipped)": lambda net: None,
        "attention in bfloat16": attention,
        "top-down (fine path) in bfloat16": lambda net: in_bfloat16(net.top_down, "forward"),
        "float32, attended features × (1 + 1e-3·noise)": lambda net: with_noise(net, 1e-3),
        "float32, attended features × (1 + 4e-3·noise)": lambda net: with_noise(net, 4e-3),
    }


def coarse_features(make: Callable[[IMAMatchNet], None] | None, data: Path) -> list[torch.Tensor]:
    """Image 1's attended 1/8 features on every fifth pair (first pass only), with ``make`` applied to the net."""
    from imamatch.eval.suite import benchmark_pairs

    m = IMAMatch.from_pretrained(prealign_below=None, prealign_coarse_below=None)
    if make is not None:
        make(m.net)
    caught: list[torch.Tensor] = []
    inner = m.net.fine_maps

    def grab(att, *args, **kwargs):
        caught.append(att.coarse1.clone())
        return inner(att, *args, **kwargs)

    m.net.fine_maps = grab
    for _, a, b in benchmark_pairs(data)[::5]:
        m.match(a, b)
    return caught


def feature_error(ref: list[torch.Tensor], var: list[torch.Tensor]) -> float:
    """Median relative error ‖c − c₃₂‖ / ‖c₃₂‖ over the pairs."""
    return float(np.median([float((v - r).norm() / r.norm()) for r, v in zip(ref, var)]))


COLUMNS_HERE = [c for c in COLUMNS if c[0] not in ("fox_ba_auc5", "fox_ba_auc10", "fox_ba_auc20", "fox_ba_s",
                                                  "peak_mib")] + [("feature_err", "feature rel. error ×10³", 1000)]


def main() -> None:
    ap = data_arguments(__doc__, "precision.md")
    ap.add_argument("--trials", type=int, default=5)
    a = ap.parse_args()
    require_data(a.data)
    torch.set_num_threads(2)
    cv2.setNumThreads(2)
    results: dict[str, dict[str, float]] = {}
    ref = coarse_features(None, a.data)
    for name, make in variants().items():
        m = IMAMatch.from_pretrained()
        make(m.net)
        res = evaluate(name, imamatch_method(m), a.data, a.trials)
        res["feature_err"] = feature_error(ref, coarse_features(make, a.data))
        results[name] = res
    text = table(results, COLUMNS_HERE)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(text + "\n")
    a.out.with_suffix(".json").write_text(json.dumps(results, indent=2))
    print(text)

if __name__ == "__main__":
    main()
