"""The shared-data evaluation suite: Graffiti homographies, Middlebury stereo, the posed fox sequence.

A *method* is a callable ``(image0, image1) -> (kpts0, kpts1)`` on grayscale float images in [0, 1] (original
pixels in and out). Each ``eval_*`` returns a dict of metrics and the per-pair timings; ``PeakRSS`` measures
the peak resident memory while a method runs.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from ..data.posed import load_posed, relative_pose, select_pairs, undistorted_image
from ..errors import DataError
from ..io import read_image
from ..pose import estimate_homography, estimate_relative_pose
from .metrics import error_auc, homography_corner_error, pose_error_deg

Method = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]
WORKING_SIDE = 640  # long side the benchmark's matchers see (benchmarks/bench_shared.py)


def _status_kib(field: str) -> int:
    """A memory field of ``/proc/self/status`` (e.g. ``VmRSS``, ``VmHWM``) in KiB; 0 where there is none."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _rss_kib() -> int:
    return _status_kib("VmRSS")


def _reset_peak_rss() -> bool:
    """Reset the kernel's resident-size high-water mark (``VmHWM``) to the current size (Linux ≥ 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class PeakRSS:
    """Context manager for the peak resident set size above the start, ``peak_mib``: the kernel's exact
    high-water mark (reset on entry) where Linux provides it, else samples every 5 ms (which can miss short
    peaks)."""

    def __init__(self) -> None:
        self.peak_mib = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    _active: list["PeakRSS"] = []  # open contexts: a nested one's reset must not lose an outer one's peak

    def __enter__(self) -> "PeakRSS":
        hwm = _status_kib("VmHWM")
        for outer in PeakRSS._active:
            outer._peak = max(outer._peak, hwm)
        self._exact = _reset_peak_rss() and hwm > 0
        PeakRSS._active.append(self)
        self._base = _rss_kib()
        self._peak = self._base
        if not self._exact:
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self._peak = max(self._peak, _rss_kib())
            time.sleep(0.005)

    def __exit__(self, *exc: object) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
        self._peak = max(self._peak, _rss_kib(), _status_kib("VmHWM") if self._exact else 0)
        self.peak_mib = max(self.peak_mib, (self._peak - self._base) / 1024)
        PeakRSS._active.remove(self)
        for outer in PeakRSS._active:
            outer._peak = max(outer._peak, self._peak)


@dataclass
class Timer:
    """Runs a method, recording its wall time per pair and its peak extra resident memory."""

    times: list[float] = field(default_factory=list)
    peak_mib: float = 0.0

    def run(self, method: Method, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with PeakRSS() as mem:
            t = time.perf_counter()
            k0, k1 = method(a, b)
            self.times.append(time.perf_counter() - t)
        self.peak_mib = max(self.peak_mib, mem.peak_mib)
        return np.asarray(k0, np.float64).reshape(-1, 2), np.asarray(k1, np.float64).reshape(-1, 2)


def shuffled_trials(n: int, trials: int) -> list[np.ndarray]:
    """``trials`` orders of ``n`` matches: the given order first, then seeded permutations. Robust estimators
    draw their samples in input order, so each order is one independent, reproducible RANSAC run; averaging
    a metric over them measures the matches rather than one lucky or unlucky draw."""
    return [np.arange(n)] + [np.random.default_rng(seed).permutation(n) for seed in range(1, trials)]


def _require(path: Path) -> Path:
    if not path.exists():
        raise DataError(f"missing benchmark data: {path}")
    return path


def eval_graffiti(method: Method, root: Path, timer: Timer, trials: int = 1) -> dict[str, float]:
    """Graffiti 1→2 … 1→6: MAGSAC homography (3 px), mean corner error, AUC@3/5/10 px, and per pair errors
    (the median over ``trials`` RANSAC runs, :func:`shuffled_trials`; the AUC pools all runs)."""
    g = _require(root / "graf")
    img1 = read_image(g / "img1.png")
    errs, out = [], {}
    for k in range(2, 7):
        imk = read_image(g / f"img{k}.png")
        H_gt = np.loadtxt(g / f"H1to{k}p")
        k0, k1 = timer.run(method, img1, imk)
        pair = []
        for order in shuffled_trials(len(k0), trials):
            H, _ = estimate_homography(k0[order], k1[order], threshold_px=3.0)
            pair.append(homography_corner_error(H, H_gt, img1.shape[1], img1.shape[0]))
        errs.extend(pair)
        out[f"graf_1to{k}_err"] = float(np.median(pair))
        out[f"graf_1to{k}_n"] = float(len(k0))
    a3, a5, a10 = error_auc(errs, (3, 5, 10))
    out.update({"graf_auc3": a3, "graf_auc5": a5, "graf_auc10": a10})
    return out


def _stereo_pairs(root: Path) -> list[tuple[str, np.ndarray, np.ndarray, np.ndarray]]:
    from skimage import data

    left, right, disp = data.stereo_motorcycle()
    gray = [cv2.cvtColor(im, cv2.COLOR_RGB2GRAY).astype(np.float32) / 255 for im in (left, right)]
    pairs = [("motorcycle", gray[0], gray[1], disp)]
    s = root / "stereo"
    if (s / "aloeGT.png").exists():
        gt = cv2.imread(str(s / "aloeGT.png"), cv2.IMREAD_UNCHANGED).astype(np.float32)
        gt[gt == 0] = np.inf  # 0 = unknown; the 8-bit value is the disparity in pixels (checked in tests)
        pairs.append(("aloe", read_image(s / "aloeL.jpg"), read_image(s / "aloeR.jpg"), gt))
    return pairs


def stereo_errors(k0: np.ndarray, k1: np.ndarray, disp: np.ndarray) -> np.ndarray:
    """Distance of each right keypoint to the ground truth ``(x - d, y)``; NaN where d is unknown."""
    xi = np.clip(np.round(k0[:, 0]).astype(int), 0, disp.shape[1] - 1)
    yi = np.clip(np.round(k0[:, 1]).astype(int), 0, disp.shape[0] - 1)
    d = disp[yi, xi].astype(np.float64)
    err = np.hypot(k1[:, 0] - (k0[:, 0] - d), k1[:, 1] - k0[:, 1])
    err[~np.isfinite(d)] = np.nan
    return err


def eval_stereo(method: Method, root: Path, timer: Timer) -> dict[str, float]:
    """Middlebury pairs: share of matches within 1 px / 3 px of the ground truth, and match counts."""
    out = {}
    for name, left, right, disp in _stereo_pairs(root):
        k0, k1 = timer.run(method, left, right)
        e = stereo_errors(k0, k1, disp)
        e = e[np.isfinite(e)]
        out[f"{name}_prec1"] = float(np.mean(e < 1)) if len(e) else 0.0
        out[f"{name}_prec3"] = float(np.mean(e < 3)) if len(e) else 0.0
        out[f"{name}_n"] = float(len(k0))
    return out


def pose_threshold_px(shape: tuple[int, ...], working_side: int = WORKING_SIDE) -> float:
    """RANSAC threshold in an image's own pixels: 1 px at the resolution the matchers work at (a long side of
    ``working_side``), e.g. 3 px for the 1920-px phone frames matched at 640 px."""
    return max(shape[:2]) / working_side


def _gray_frames(frames: list) -> Callable[[int], np.ndarray]:
    """Frame index → its undistorted grayscale image in [0, 1] (float32), each decoded once."""
    cache: dict[int, np.ndarray] = {}

    def gray(i: int) -> np.ndarray:
        if i not in cache:
            cache[i] = cv2.cvtColor(undistorted_image(frames[i]), cv2.COLOR_BGR2GRAY).astype(np.float32) / 255
        return cache[i]

    return gray


def benchmark_pairs(data: Path) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Every image pair the shared-data evaluation matches, as it matches them: Graffiti 1→2 … 1→6, the
    Middlebury pairs and the fixed fox pairs (undistorted), named ``graf_1to2``, ``motorcycle``, ``fox_4_5`` …"""
    g = _require(data / "graf")
    img1 = read_image(g / "img1.png")
    pairs = [(f"graf_1to{k}", img1, read_image(g / f"img{k}.png")) for k in range(2, 7)]
    pairs += [(name, left, right) for name, left, right, _ in _stereo_pairs(data)]
    frames = load_posed(_require(data / "fox"))
    gray = _gray_frames(frames)
    pairs += [(f"fox_{i}_{j}", gray(i), gray(j)) for i, j in select_pairs(frames)]
    return pairs


def posed_errors(method: Method, folder: Path, timer: Timer, refine: tuple[bool, ...] = (False,),
                 trials: int = 1, working_side: int = WORKING_SIDE, per_bin: int = 8
                 ) -> tuple[list[tuple[int, int]], dict[bool, np.ndarray], float]:
    """Pose errors on a posed sequence (undistorted; pairs: :func:`select_pairs` with ``per_bin`` pairs per
    rotation bin): the pairs, each ``refine`` setting's errors ``(pairs, trials)`` in degrees (inf where no pose;
    ``trials`` RANSAC runs on shuffled orders of the matches, :func:`shuffled_trials`), by
    :func:`estimate_relative_pose` (PoseLib) at 1 px of ``working_side`` (:func:`pose_threshold_px`), and the
    seconds per pair the bundle adjustment took (0 without it)."""
    frames = load_posed(_require(folder))
    pairs = select_pairs(frames, per_bin=per_bin)
    gray = _gray_frames(frames)
    errs = {use_ba: np.full((len(pairs), trials), np.inf) for use_ba in refine}
    ba_time = 0.0
    for p, (i, j) in enumerate(pairs):
        k0, k1 = timer.run(method, gray(i), gray(j))
        R_gt, t_gt = relative_pose(frames[i], frames[j])
        for r, order in enumerate(shuffled_trials(len(k0), trials)):
            for use_ba in refine:
                t = time.perf_counter()
                est = estimate_relative_pose(k0[order], k1[order], frames[i].K, frames[j].K,
                                             threshold_px=pose_threshold_px(gray(i).shape, working_side),
                                             refine=use_ba)
                if use_ba:
                    ba_time += (time.perf_counter() - t) / trials
                if est.success:
                    errs[use_ba][p, r] = pose_error_deg(est.R, est.t, R_gt, t_gt)
    return pairs, errs, ba_time / max(1, len(pairs))


def eval_posed(method: Method, folder: Path, timer: Timer, refine: bool | None = None,
               prefix: str = "fox", trials: int = 1, working_side: int = WORKING_SIDE) -> dict[str, float]:
    """A posed sequence (``transforms.json`` or a COLMAP model), undistorted: relative pose AUC@5/10/20° on the
    fixed pair list of :func:`select_pairs` (:func:`posed_errors`). ``refine`` None: both without
    (``<prefix>_auc*``) and with bundle adjustment (``<prefix>_ba_auc*``, plus ``<prefix>_ba_s`` seconds per pair)
    from the same matches; True/False: one. ``trials`` > 1: the AUC pools that many RANSAC runs per pair."""
    variants = {False: "", True: "_ba"} if refine is None else {refine: ""}
    pairs, errors, ba_time = posed_errors(method, folder, timer, tuple(variants), trials, working_side)
    errs = {tag: errors[use_ba].ravel().tolist() for use_ba, tag in variants.items()}
    out = {f"{prefix}_pairs": float(len(pairs))}
    for tag, e in errs.items():
        a5, a10, a20 = error_auc(e, (5, 10, 20))
        out.update({f"{prefix}{tag}_auc5": a5, f"{prefix}{tag}_auc10": a10, f"{prefix}{tag}_auc20": a20})
    if refine is None:
        out[f"{prefix}_ba_s"] = ba_time
    return out
