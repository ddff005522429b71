"""Side-by-side benchmark on ../shared/data: imamatch (and ablations) vs OpenCV SIFT and the peers.

    python benchmarks/bench_shared.py [--data ../shared/data] [--out benchmarks/results/shared.md]

Every method sees the same images resized to a long side of 640 px; keypoints are compared in original
pixels. Accuracy and time are measured in one process, one method after the other; peak memory in a fresh
process per method. Writes a markdown table (and a JSON file beside it).
"""

from __future__ import annotations

import argparse
import ast
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import torch

from imamatch import IMAMatch
from imamatch.eval.suite import WORKING_SIDE, PeakRSS, Timer, eval_graffiti, eval_posed, eval_stereo
from imamatch.io import read_image
from imamatch.runtime import release_freed_memory

LONG_SIDE = WORKING_SIDE  # 640


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


def data_arguments(doc: str, out_name: str) -> argparse.ArgumentParser:
    """The command line every benchmark starts from: ``--data`` (default ../shared/data) and ``--out`` (default
    results/OUT_NAME); check the data with :func:`require_data`."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / out_name)
    return ap


def require_data(data: Path) -> None:
    """Exit with a clear message when ``data`` is not the shared data folder."""
    if not (Path(data) / "graf").is_dir():
        sys.exit(f"benchmark data not found at {data}: pass --data pointing at shared/data")


def write_results(out: Path, md: str, data: object) -> None:
    """Write a benchmark's markdown table to ``out`` and its numbers to the JSON file beside it, and say so."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(md)
    out.with_suffix(".json").write_text(json.dumps(data, indent=2))
    print(md)
    print(f"written: {out}")


def fox_arguments(doc: str, out_name: str) -> argparse.ArgumentParser:
    """The command line shared by the per-pair fox tools: :func:`data_arguments`, ``--no-peers``, ``--trials``."""
    ap = data_arguments(doc, out_name)
    ap.add_argument("--no-peers", action="store_true", help="only imamatch and SIFT")
    ap.add_argument("--trials", type=int, default=5, help="RANSAC runs per pair (shuffled orders of the matches)")
    return ap


def warm_up(method) -> None:
    method(np.random.default_rng(0).random((480, 640), dtype=np.float32),
           np.random.default_rng(1).random((480, 640), dtype=np.float32))


def peak_mib_here(method, data: Path) -> float:
    """Peak resident memory added by matching the largest pairs, Graffiti 1→2 and the hard 1→6 (where imamatch
    runs its second, pre-aligned pass), after a warm-up on another size and after handing back what the allocator
    keeps (imamatch keeps freed memory for reuse, see imamatch.runtime)."""
    warm_up(method)
    graf = {i: read_image(data / "graf" / f"img{i}.png") for i in (1, 2, 6)}
    release_freed_memory()
    with PeakRSS() as mem:
        method(graf[1], graf[2])
        method(graf[1], graf[6])
    return mem.peak_mib


def peak_mib_fresh(name: str, a: argparse.Namespace) -> float:
    """:func:`peak_mib_here` in fresh Python processes, the median of ``a.memory_runs``: a process that has run
    other methods keeps their allocator state (it read up to ~270 MiB higher for the same method), and single runs
    vary by ±30 MiB (page-level resident memory)."""
    cmd = [sys.executable, __file__, "--data", str(a.data), "--threads", str(a.threads), "--peak-of", name]
    if a.weights:
        cmd += ["--weights", a.weights]
    for spec in a.set:
        cmd += ["--set", spec]
    peaks = []
    for _ in range(a.memory_runs):
        run = subprocess.run(cmd, capture_output=True, text=True)
        if run.returncode != 0:
            raise RuntimeError(f"memory run of {name} failed: {run.stderr.strip()[-500:]}")
        peaks.append(float(run.stdout.strip().splitlines()[-1]))
    return float(np.median(peaks))


def evaluate(name: str, method, data: Path, trials: int) -> dict[str, float]:
    timer = Timer()
    res: dict[str, float] = {}
    warm_up(method)
    res.update(eval_graffiti(method, data, timer, trials=trials))
    res.update(eval_stereo(method, data, timer))
    res.update(eval_posed(method, data / "fox", timer, trials=trials))
    res["s_per_pair"] = float(np.mean(timer.times))
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


def table(results: dict[str, dict[str, float]], columns: list[tuple[str, str, float]] = COLUMNS) -> str:
    """Markdown table of ``results`` (row name → metrics) over ``columns`` (key, heading, scale)."""
    head = "| method | " + " | ".join(c[1] for c in columns) + " |"
    sep = "|---" * (len(columns) + 1) + "|"
    rows = []
    for name, r in results.items():
        cells = []
        for key, _, scale in columns:
            v = r.get(key)
            cells.append("–" if v is None else (f"{v * scale:.1f}" if scale != 1 or key.endswith(("err",)) else
                                                 (f"{v:.0f}" if key.endswith(("_n", "mib")) else f"{v:.2f}")))
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join([head, sep, *rows])


def parse_settings(spec: str) -> dict[str, object]:
    """``"refine_iters=1,subpixel=False"`` → ``{"refine_iters": 1, "subpixel": False}`` (values: Python literals)."""
    out = {}
    for item in filter(None, (t.strip() for t in spec.split(","))):
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set expects KEY=VALUE items, got {item!r}")
        out[key.strip()] = ast.literal_eval(value.strip())
    return out


DEFAULT_ROW = "imamatch (fast: densify all ×4, ≤ 4000 queries)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[1].parent / "shared" / "data"))
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "shared.md"))
    ap.add_argument("--weights", help="imamatch weights to evaluate (default: shipped)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--ablations", action="store_true",
                    help="also run imamatch without densification / consistency check / sub-pixel polish / ...")
    ap.add_argument("--peers", action="store_true", help="also run ALIKED/DISK+LightGlue, XFeat, XFeat* (see peers.py)")
    ap.add_argument("--trials", type=int, default=5,
                    help="RANSAC runs per pair (shuffled match orders) pooled into the pose and homography AUCs")
    ap.add_argument("--only", help="semicolon-separated method names to run (default: all selected)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE,...",
                    help="also an imamatch row with these MatcherConfig settings (Python literals; repeatable), "
                         "named 'imamatch (KEY=VALUE,...)'")
    ap.add_argument("--memory-only", action="store_true",
                    help="only re-measure the peak memory of the methods in the last run's table (fresh processes)")
    ap.add_argument("--memory-runs", type=int, default=3, help="fresh processes per method for the peak memory")
    ap.add_argument("--peak-of", help=argparse.SUPPRESS)
    a = ap.parse_args()
    data = Path(a.data)
    require_data(data)
    torch.set_num_threads(a.threads)
    cv2.setNumThreads(a.threads)

    def make(**over):
        return lambda: imamatch_method(IMAMatch(weights=a.weights, **over) if a.weights
                                       else IMAMatch.from_pretrained(**over))

    factories = {DEFAULT_ROW: make(), "SIFT + ratio + MNN": sift_method}
    if a.ablations or a.peak_of:
        factories.update({
            "imamatch, no query budget (every match densified)": make(densify_max_queries=None),
            "imamatch, no densification": make(densify="none"),
            "imamatch, densify band 0.2–0.6 ×4": make(densify="band"),
            "imamatch, no consistency check": make(consistency_check=False),
            "imamatch, no sub-pixel polish": make(subpixel=False),
            "imamatch, polish without local affine": make(subpixel_affine=False),
            "imamatch, no neighbourhood check": make(neighbour_max_residual=None),
            "imamatch, keeps unpolished matches": make(subpixel_keep_unmoved=True),
            "imamatch, neither (round-3 default)": make(neighbour_max_residual=None, subpixel_keep_unmoved=True),
            "imamatch, one pass (no pre-alignment)": make(prealign_below=None),
            "imamatch, at most one pre-aligned pass": make(prealign_passes=1),
            "imamatch, pre-align below 0.25 kept": make(prealign_below=0.25),
        })
    for spec in a.set:
        factories[f"imamatch ({spec})"] = make(**parse_settings(spec))
    if a.peers or a.peak_of:
        from peers import peer_factories

        factories.update(peer_factories(LONG_SIDE))
    if a.peak_of:  # internal: one method's peak memory, printed for peak_mib_fresh
        if a.peak_of not in factories:
            sys.exit(f"unknown method {a.peak_of!r}")
        print(peak_mib_here(factories[a.peak_of](), data))
        return
    if a.only:
        keep = {n.strip() for n in a.only.split(";")}
        unknown = keep - set(factories)
        if unknown:
            sys.exit(f"unknown method(s) {sorted(unknown)}; available: {list(factories)}")
        factories = {k: v for k, v in factories.items() if k in keep}
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict[str, float]] = {}
    if a.memory_only:  # refresh the peak memory column of the last run's table
        results = json.loads(out.with_suffix(".json").read_text())
    md = ""
    for name, make_method in factories.items():
        try:
            if not a.memory_only:
                results[name] = evaluate(name, make_method(), data, a.trials)
            if name in results:
                results[name]["peak_mib"] = peak_mib_fresh(name, a)
        except ImportError as e:
            print(f"skipping {name}: {e}", file=sys.stderr)
            continue
        except Exception as e:  # a method that breaks must not lose the other rows
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
