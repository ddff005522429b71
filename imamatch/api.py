"""The user-facing matcher: ``IMAMatch.from_pretrained().match(img0, img1)``."""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from .backbone import BackboneOutput
from .config import PRESETS, MatcherConfig, quarter_turns
from .errors import WeightsError
from .io import ImageInput, Prepared, mask_cells, prepare, read_mask, to_gray_sized, to_original
from .model import IMAMatchNet
from .pose import estimate_homography, estimate_relative_pose
from .runtime import keep_freed_memory
from .weights import PACKAGE_WEIGHTS, load_into, read_weights

SHIPPED = {"fast": PACKAGE_WEIGHTS / "imamatch-fast.safetensors",          # round 15: 64-channel attention
           "accurate": PACKAGE_WEIGHTS / "imamatch-accurate.safetensors"}  # round 11: 128 channels, ~1.2× the time


class IMAMatch:
    """Semi-dense matcher. Build with :meth:`from_pretrained` (shipped weights) or from a config.

    Args:
        conf: a :class:`MatcherConfig` or a preset name ("fast", "reference").
        weights: a ``.safetensors`` file to load (its stored architecture wins over ``conf``'s; thresholds,
            densification and the other matching settings come from ``conf`` and ``overrides``).
        device: torch device.
        **overrides: config fields to change (e.g. ``coarse_threshold=0.3``, ``resize=1024``).
    """

    def __init__(self, conf: MatcherConfig | str = "fast", weights: str | Path | None = None,
                 device: str | torch.device = "cpu", **overrides: Any) -> None:
        if isinstance(conf, str):
            if conf not in PRESETS:
                raise ValueError(f"unknown preset {conf!r}; choose from {sorted(PRESETS)}")
            conf = PRESETS[conf]
        tensors = None
        if weights is not None:
            tensors, stored, self.weights_info = read_weights(weights)
            if stored is not None:  # the file fixes the architecture; matching settings stay the caller's
                conf = conf.with_architecture_of(stored)
        else:
            self.weights_info = {}
            warnings.warn("IMAMatch built without weights: the network is untrained", stacklevel=2)
        self.conf = conf.replace(**overrides)
        self.device = torch.device(device)
        # channels-last convolutions: 15 % faster on CPU, same results
        self.net = IMAMatchNet(self.conf).eval().to(self.device, memory_format=torch.channels_last)
        if tensors is not None:
            load_into(self.net, tensors, weights)
        keep_freed_memory()
        for p in self.net.parameters():
            p.requires_grad_(False)

    @classmethod
    def from_pretrained(cls, name: str = "fast", device: str | torch.device = "cpu", **overrides: Any) -> "IMAMatch":
        """Load weights shipped inside the package (offline). ``name``: one of ``SHIPPED``."""
        path = SHIPPED.get(name)
        if path is None:
            raise WeightsError(f"no shipped weights named {name!r}; available: {sorted(SHIPPED)} "
                               f"(the 'reference' preset has no trained weights: build IMAMatch('reference'))")
        return cls(PRESETS["fast"], weights=path, device=device, **overrides)  # architecture: the file's

    def match(self, image0: ImageInput, image1: ImageInput, K0: np.ndarray | None = None,
              K1: np.ndarray | None = None, refine_pose: bool = True, mask0: ImageInput | None = None,
              mask1: ImageInput | None = None) -> dict[str, Any]:
        """Match two images (paths, arrays, PIL images or tensors; sizes may differ).

        With intrinsics ``K0`` and ``K1`` (3×3, original pixels of the images as read: EXIF orientation applied)
        the relative pose is estimated too (:func:`imamatch.pose.estimate_relative_pose`: PoseLib's LO-RANSAC
        with a threshold of 1 px at the matching resolution, then bundle adjustment if ``refine_pose``) and
        returned as ``R``, ``t`` (unit), ``pose_success``, ``inliers`` and ``pose_planar`` (the inliers lie on
        one plane, or the baseline is near zero: the pose may be ambiguous, :class:`imamatch.pose.RelativePose`).

        Returns numpy arrays: ``keypoints0``/``keypoints1`` ``(N, 2)`` (x, y) in each original image's
        pixels, ``confidence`` ``(N,)`` (coarse dual-softmax), ``fine_prob`` ``(N,)`` (classification peak),
        ``densified`` ``(N,)`` bool (from the increased-matching-amount step), and the scalars
        ``num_coarse``, ``num_densified`` (coarse matches expanded), ``num_rejected`` (by the consistency check)
        ``num_polished`` (moved by the photometric sub-pixel polish) and ``num_disagreeing`` (dropped by the
        neighbourhood-agreement filter, :mod:`imamatch.neighbourhood`), ``num_queries`` (fine queries), and
        ``prealigned``: True when the matches come from a pre-aligned pass for hard pairs (wide baseline,
        strong perspective): when fewer than ``prealign_below`` of a pass's fine queries survive the checks,
        image 1 is warped onto image 0 by the homography its matches support (:func:`prealign_homography`),
        matched again, and the keypoints mapped back; up to ``prealign_passes`` times, while the matches grow;
        the pass with the most matches is returned (``num_passes``: how many ran). (Too few fine matches for a
        homography: the coarse matches' cell centres give it, at a one-cell tolerance.) ``rotation1``: the
        degrees (counter-clockwise, 0 unless ``rotations`` > 1 found a better turn) by which image 1 was turned
        before matching; the keypoints are in its own pixels either way.

        ``mask0``, ``mask1``: where matches may lie, COLMAP's convention (nonzero pixels may be matched; a file,
        array, PIL image or tensor of the image's full size, EXIF orientation applied like the image's): cells
        mostly outside are left out of attention and matching, and matches on masked pixels are dropped.
        """
        if (K0 is None) != (K1 is None):
            raise ValueError("give both K0 and K1 to estimate the relative pose")
        return next(self.match_many(image0, [image1], K0, None if K1 is None else [K1], refine_pose,
                                    mask0=mask0, masks1=None if mask1 is None else [mask1]))

    def match_many(self, image0: ImageInput, images1: Iterable[ImageInput], K0: np.ndarray | None = None,
                   K1s: Iterable[np.ndarray] | None = None, refine_pose: bool = True,
                   mask0: ImageInput | None = None,
                   masks1: Iterable[ImageInput | None] | None = None) -> Iterator[dict[str, Any]]:
        """:meth:`match` of ``image0`` with each of ``images1`` in turn, lazily (a generator): the same results
        as :meth:`match` pair by pair, in less time, since image 0 is read and prepared, and its backbone
        features and first self-attention computed, once (e.g. exhaustive or sequential matching for SfM).
        ``K1s``: one intrinsics matrix per image of ``images1``, given with ``K0``, or None; ``mask0`` and
        ``masks1`` (one per image of ``images1``, each may be None), as in :meth:`match`."""
        if (K0 is None) != (K1s is None):
            raise ValueError("give both K0 and K1s to estimate the relative poses")
        K0 = None if K0 is None else _intrinsics(K0, "K0")
        g0, full0 = to_gray_sized(image0, "image0", self._decode_side())
        m0 = None if mask0 is None else read_mask(mask0, full0, g0.shape, "mask0")
        given = [images1] + [column for column in (K1s, masks1) if column is not None]
        first0 = None
        for row in zip(*given, strict=True):  # one K and mask per image, where given
            it = iter(row)
            image1, K1, mask1 = next(it), None if K1s is None else next(it), None if masks1 is None else next(it)
            K1 = None if K1 is None else _intrinsics(K1, "K1")
            result, first0 = self._match_decoded(g0, full0, image1, K0, K1, refine_pose, first0, m0, mask1)
            yield result

    def _decode_side(self) -> int | None:
        """Files are decoded at (at least) the largest size a pass needs."""
        c = self.conf
        return c.resize if c.resize is None or c.prealign_resize is None else max(c.resize, c.prealign_resize)

    def _match_decoded(self, g0: np.ndarray, full0: tuple[int, int], image1: ImageInput, K0: np.ndarray | None,
                       K1: np.ndarray | None, refine_pose: bool, first0: "_Pass | None",
                       mask0: np.ndarray | None = None, mask1: ImageInput | None = None
                       ) -> tuple[dict[str, Any], "_Pass"]:
        """:meth:`match` with image 0 read already (``g0`` at its ``full0`` size; ``mask0``: its mask, bool at
        ``g0``'s size, or None); ``first0``: an earlier first pass with this image 0 and mask, whose preparation,
        backbone features and first self-attention are reused. Also returns this pair's first pass (for the next
        pair)."""
        c = self.conf
        g1, full1 = to_gray_sized(image1, "image1", self._decode_side())
        m1 = None if mask1 is None else read_mask(mask1, full1, g1.shape, "mask1")
        masks = {"mask0": mask0, "mask1": m1}
        shortcut = c.prealign_coarse_below if c.prealign_below is not None and c.prealign_passes > 0 else None
        reuse = {} if first0 is None else {"features0": first0.features0, "self0": first0.self0,
                                          "prepared0": first0.prepared0}
        first = self._match_gray(g0, g1, coarse_only_below=shortcut, **reuse, **masks)
        upright, upright_mask1, turns, passes = g1, m1, 0, 1
        if c.rotations > 1 and (first.coarse_only or self._hard(first.result, c.prealign_below or TURN_BELOW)):
            turns, scouts = self._best_turns(g0, g1, first, **masks)
            passes += scouts
            if turns:
                g1 = np.ascontiguousarray(np.rot90(g1, turns))
                masks["mask1"] = None if m1 is None else np.rot90(m1, turns)
                first = self._match_gray(g0, g1, coarse_only_below=shortcut, features0=first.features0,
                                         self0=first.self0, prepared0=first.prepared0, **masks)
                passes += 1
        first.result["prealigned"] = False
        best, prealigned = first, 0
        while prealigned < c.prealign_passes and (best.coarse_only or self._hard(best.result)):
            again = self._prealigned(g0, g1, best, **masks)
            if again is None:  # no homography to pre-align with
                break
            passes, prealigned = passes + 1, prealigned + 1
            if len(again.result["keypoints0"]) <= len(best.result["keypoints0"]):
                break
            best = again
        if best.coarse_only:  # the pre-aligned passes found nothing: the first pass in full after all
            best = self._match_gray(g0, g1, features0=first.features0, self0=first.self0, prepared0=first.prepared0,
                                    **masks)
            best.result["prealigned"] = False
            passes += 1
        result = best.result
        result["num_passes"] = passes  # passes run (the returned one has the most matches)
        if turns:
            result["keypoints1"] = unturn_points(result["keypoints1"], turns, upright.shape)
            g1 = upright
        result["rotation1"] = 90 * turns
        if mask0 is not None or upright_mask1 is not None:  # the cells were masked; now the pixels
            keep = on_mask(result["keypoints0"], mask0) & on_mask(result["keypoints1"], upright_mask1)
            result = {k: v[keep] if _per_match(v) else v for k, v in result.items()}
        if self.conf.max_matches is not None:
            result = {k: v[: self.conf.max_matches] if _per_match(v) else v for k, v in result.items()}
        result["keypoints0"] = _rescale(result["keypoints0"], g0.shape, full0)
        result["keypoints1"] = _rescale(result["keypoints1"], g1.shape, full1)
        if K0 is not None:
            px_full = best.px * max(full0[0] / g0.shape[0], full1[0] / g1.shape[0])
            pose = estimate_relative_pose(result["keypoints0"], result["keypoints1"], K0, K1,
                                          confidence=result["confidence"], refine=refine_pose,
                                          threshold_px=px_full)  # 1 px where we matched
            result.update(R=pose.R, t=pose.t, pose_success=pose.success, inliers=pose.inliers,
                          pose_planar=pose.planar)
        return result, first

    def _match_gray(self, g0: np.ndarray, g1: np.ndarray, cover1: Callable[[Prepared], torch.Tensor] | None = None,
                    features0: BackboneOutput | None = None, coarse_only_below: float | None = None,
                    self0: torch.Tensor | None = None, side: int | None = None,
                    prepared0: Prepared | None = None, mask0: np.ndarray | None = None,
                    mask1: np.ndarray | None = None) -> "_Pass":
        """One pass of the network on grayscale arrays; keypoints in their pixels, sorted by confidence.
        ``cover1``: maps prepared image 1 to its ``(1, Hp/8, Wp/8)`` cells that show content (the others
        are masked out); ``features0``, ``self0``: image 0's backbone and first self-attention outputs from
        an earlier pass (same ``g0`` and ``side``), and ``prepared0``, its prepared image;
        ``coarse_only_below``: see :meth:`IMAMatchNet.match` (the pass then has coarse matches only);
        ``side``: the long side the network sees (None: ``resize``); ``mask0``, ``mask1``: bool arrays of the
        arrays' sizes, where matches may lie (cells mostly outside are masked out)."""
        side = side or self.conf.resize
        p0 = prepared0 or prepare(g0, side, self.net.size_multiple)
        p1 = prepare(g1, side, self.net.size_multiple)
        valid0 = p0.valid if mask0 is None else p0.valid & mask_cells(mask0, p0)
        valid1 = p1.valid if cover1 is None else p1.valid & cover1(p1)
        if mask1 is not None:
            valid1 &= mask_cells(mask1, p1)
        with torch.inference_mode():
            image0 = p0.tensor.to(self.device)
            if features0 is None:
                features0 = self.net.backbone(image0)
            out = self.net.match(image0, p1.tensor.to(self.device), valid0.to(self.device),
                                 valid1.to(self.device), features0=features0,
                                 coarse_only_below=coarse_only_below, self0=self0)
        self0 = out.pop("self0")
        out = {k: v.cpu().numpy() for k, v in out.items()}
        k0, k1 = out["keypoints0"], out["keypoints1"]
        inside = ((k0[:, 0] <= p0.size[1] - 0.5) & (k0[:, 1] <= p0.size[0] - 0.5)
                  & (k1[:, 0] >= -0.5) & (k1[:, 1] >= -0.5)
                  & (k1[:, 0] <= p1.size[1] - 0.5) & (k1[:, 1] <= p1.size[0] - 0.5))
        sel = np.flatnonzero(inside)[np.argsort(-out["confidence"][inside], kind="stable")]
        result = {
            "keypoints0": to_original(k0[sel], p0),
            "keypoints1": to_original(k1[sel], p1),
            "confidence": out["confidence"][sel].astype(np.float32),
            "fine_prob": out["fine_prob"][sel].astype(np.float32),
            "densified": out["densified"][sel],
            "num_coarse": np.int64(out["num_coarse"]),
            "num_queries": np.int64(out["num_fine"]),
            "num_densified": np.int64(out["num_densified"]),
            "num_rejected": np.int64(out["num_fine"] - out["num_consistent"]),
            "num_polished": np.int64(out["num_polished"]),
            "num_disagreeing": np.int64(out["num_disagreeing"]),
        }
        coarse = (to_original(out["coarse0"], p0), to_original(out["coarse1"], p1))
        return _Pass(result, max(*p0.scale, *p1.scale), coarse, features0, self0, bool(out["coarse_only"]), side, p0)

    def _best_turns(self, g0: np.ndarray, g1: np.ndarray, first: "_Pass", mask0: np.ndarray | None = None,
                    mask1: np.ndarray | None = None) -> tuple[int, int]:
        """The quarter turns (``np.rot90``'s ``k``: counter-clockwise) of image 1 to match it at, and how many
        scout passes that took. A turn's support: how many of its coarse matches one homography explains at one
        cell (:func:`coarse_support`; on the benchmark's hard upright pairs 19-340, at wrong turns 8-19). The
        upright ``first`` pass keeps image 1 as it is when its support is at least :data:`UPRIGHT_SUPPORT`;
        otherwise one coarse-only scout per turn that ``rotations`` allows (image 0's features reused; the
        scouting stops at a turn with that much support), and a turn wins only with :data:`TURN_MARGIN` times the
        upright support and at least :data:`MIN_TURN_SUPPORT`."""
        upright = coarse_support(first)
        if upright >= UPRIGHT_SUPPORT:
            return 0, 0
        support = {}
        for k in quarter_turns(self.conf.rotations)[1:]:
            scout = self._match_gray(g0, np.ascontiguousarray(np.rot90(g1, k)), coarse_only_below=EVERY_PASS,
                                     features0=first.features0, self0=first.self0, prepared0=first.prepared0,
                                     mask0=mask0, mask1=None if mask1 is None else np.rot90(mask1, k))
            support[k] = coarse_support(scout)
            if support[k] >= max(UPRIGHT_SUPPORT, TURN_MARGIN * upright):  # as sure as an upright pass kept unscouted
                break
        best = max(support, key=support.__getitem__)
        won = support[best] >= max(TURN_MARGIN * upright, MIN_TURN_SUPPORT)
        return (best if won else 0), len(support)

    def _hard(self, result: dict[str, Any], below: float | None = None) -> bool:
        """Fewer than ``below`` (default ``prealign_below``; None: never) of the pass's fine queries survived the
        checks."""
        below = self.conf.prealign_below if below is None else below
        return below is not None and len(result["keypoints0"]) < below * max(1, result["num_queries"])

    def _prealigned(self, g0: np.ndarray, g1: np.ndarray, prev: "_Pass", mask0: np.ndarray | None = None,
                    mask1: np.ndarray | None = None) -> "_Pass | None":
        """Another pass for hard pairs: image 1 warped onto image 0 by the homography that the previous pass's
        matches support (its coarse matches', one cell tolerance, when too few fine ones survived), matched
        again at ``prealign_resize`` (image 0's backbone features reused when that is the previous pass's size);
        keypoints and coarse cell centres mapped back into image 1 (``mask1`` warped with it). None when no
        homography is found."""
        px = prev.px
        H = prealign_homography(prev.result["keypoints0"], prev.result["keypoints1"], g0.shape,
                                threshold_px=3 * px)
        if H is None:
            H = prealign_homography(*prev.coarse, g0.shape, threshold_px=8 * px)
        if H is None:
            return None
        h0, w0 = g0.shape
        flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP  # H maps image 0's pixels to image 1's
        warped = cv2.warpPerspective(g1, H, (w0, h0), flags=flags, borderMode=cv2.BORDER_CONSTANT)
        front = front_mask(H, (h0, w0))
        if front is not None:  # what lies behind the horizon maps onto image 1 mirrored: blank and masked
            warped[~front] = 0
        if mask1 is not None:
            mask1 = cv2.warpPerspective(mask1.astype(np.uint8), H, (w0, h0),
                                        flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP) > 0
        side = self.conf.prealign_resize or self.conf.resize
        same = side == prev.side  # image 0's features can be reused at the same size only
        cover = functools.partial(covered_cells, H, g1.shape)
        again = self._match_gray(g0, warped, cover, prev.features0 if same else None,
                                 self0=prev.self0 if same else None, side=side,
                                 prepared0=prev.prepared0 if same else None, mask0=mask0, mask1=mask1)
        k1 = _transform(again.result["keypoints1"], H)
        inside = ((k1 >= -0.5) & (k1 <= np.array([g1.shape[1], g1.shape[0]]) - 0.5)).all(1)
        result = {k: v[inside] if _per_match(v) else v for k, v in again.result.items()}
        result["keypoints1"] = k1[inside]
        result["prealigned"] = True
        px = px if same else again.px  # one matching pixel, in the arrays' pixels
        return _Pass(result, px, (again.coarse[0], _transform(again.coarse[1], H)), again.features0,
                     again.self0, again.coarse_only, side, again.prepared0)


EVERY_PASS = 2.0  # as ``coarse_only_below``: more than every cell, so that the pass stops after coarse matching
# choosing image 1's turn (``MatcherConfig.rotations``) by coarse_support: upright is kept without scouting at this
# support or more; a turn must reach this many times the upright support, and this much at least
UPRIGHT_SUPPORT, TURN_MARGIN, MIN_TURN_SUPPORT = 40, 2.0, 12
TURN_BELOW = 0.15  # with pre-alignment off, the turns are searched when fewer fine queries than this share survive


def coarse_support(p: "_Pass") -> int:
    """How many of a pass's coarse matches one homography explains within a 1/8 cell (8 matching pixels):
    a turn of image 1 that does not match image 0 finds scattered coarse matches that few of them fit."""
    c0, c1 = p.coarse
    if len(c0) < 4:
        return 0
    H, inliers = estimate_homography(c0, c1, threshold_px=8 * p.px)
    return 0 if H is None else int(inliers.sum())


@dataclass
class _Pass:
    """One pass of :meth:`IMAMatch._match_gray`: the result (keypoints in the arrays' pixels, sorted by
    confidence), the size of one matching-resolution pixel in the arrays' pixels, the coarse matches' cell
    centres ``(M, 2)`` in each array's pixels, image 0's backbone and first self-attention outputs (for another
    pass), whether it stopped after coarse matching (a hard pair: no fine matches), the long side the network
    saw, and image 0 as prepared for it."""

    result: dict[str, Any]
    px: float
    coarse: tuple[np.ndarray, np.ndarray]
    features0: BackboneOutput
    self0: torch.Tensor | None = None
    coarse_only: bool = False
    side: int | None = None
    prepared0: Prepared | None = None


def prealign_homography(kpts0: np.ndarray, kpts1: np.ndarray, shape0: tuple[int, int], threshold_px: float,
                        min_inliers: int = 8, min_front: float = 0.75) -> np.ndarray | None:
    """The homography ``x1 ∝ H x0`` (3×3, scaled so that its inliers lie in front of the horizon) that
    pre-aligns image 1 to image 0 for a second matching pass, or None when the matches ``(N, 2)`` support none
    that maps image 0 (``shape0`` = (H, W)) sensibly: fewer than ``min_inliers`` inliers, or less than
    ``min_front`` of image 0 in front of the horizon (the rest is masked out of the pass, :func:`front_mask`)."""
    if len(kpts0) < min_inliers:
        return None
    H, inliers = estimate_homography(kpts0, kpts1, threshold_px=threshold_px)
    if H is None or inliers.sum() < min_inliers:
        return None
    if np.median(np.c_[kpts0[inliers], np.ones(int(inliers.sum()))] @ H[2]) < 0:
        H = -H
    h, w = shape0
    ys, xs = np.mgrid[0.5 * h / 32:h:h / 32, 0.5 * w / 32:w:w / 32]  # a 32 × 32 sample of image 0
    if np.mean(_in_front(H, xs, ys)) < min_front:
        return None
    return H


def _in_front(H: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Whether image-0 pixels ``x``, ``y`` (broadcasting arrays) lie in front of the horizon of ``H`` (their
    depth ``H[2] · (x, y, 1)`` clearly positive)."""
    return x * H[2, 0] + y * H[2, 1] + H[2, 2] > 1e-3 * abs(H[2, 2])


def front_mask(H: np.ndarray, shape0: tuple[int, int]) -> np.ndarray | None:
    """``(H, W)`` bool: the pixels of image 0 in front of the horizon of ``H`` (those behind map onto image 1
    mirrored, and must not be matched), or None when all of them are."""
    h, w = shape0
    corners = np.array([[-0.5, -0.5, 1], [w - 0.5, -0.5, 1], [w - 0.5, h - 0.5, 1], [-0.5, h - 0.5, 1]])
    if (corners @ H[2] > 0).all():
        return None
    return _in_front(H, np.arange(w, dtype=np.float32)[None], np.arange(h, dtype=np.float32)[:, None])


# per side of a 1/8 cell: the share of a cell that lies on image 1 is judged from 5 × 5 points (odd: a straight edge
# through a cell never splits them evenly; with 4 × 4, edges near the middle tied at 0.5 and all went uncovered)
COVER_SAMPLES = 5


def covered_cells(H: np.ndarray, shape1: tuple[int, int], prep: Prepared) -> torch.Tensor:
    """``(1, Hp/8, Wp/8)`` bool: the 1/8 cells of ``prep``, image 1 warped onto image 0 by ``H`` (``x1 ∝ H x0``,
    array pixels), that mostly show image 1 (``shape1`` = (H1, W1)): more than half of a
    :data:`COVER_SAMPLES`² grid of points in each cell maps inside image 1 and lies in front of the horizon, and
    inside the unpadded size."""
    h, w = prep.size
    hp, wp = prep.tensor.shape[-2:]
    sx, sy = prep.scale
    k = COVER_SAMPLES
    offsets = (np.arange(k) + 0.5) * (8 / k)  # sample positions inside a cell, prepared pixels from its corner
    u = (np.arange(0, wp, 8)[:, None] + offsets).ravel()  # (Wp/8 · k,) prepared x
    v = (np.arange(0, hp, 8)[:, None] + offsets).ravel()
    x, y = (u * sx - 0.5)[None], (v * sy - 0.5)[:, None]  # prepared → array pixels (sample points are centres)
    depth = x * H[2, 0] + y * H[2, 1] + H[2, 2]
    front = _in_front(H, x, y)
    with np.errstate(divide="ignore", invalid="ignore"):
        x1 = (x * H[0, 0] + y * H[0, 1] + H[0, 2]) / depth
        y1 = (x * H[1, 0] + y * H[1, 1] + H[1, 2]) / depth
    h1, w1 = shape1
    inside = (front & (x1 >= -0.5) & (x1 <= w1 - 0.5) & (y1 >= -0.5) & (y1 <= h1 - 0.5)
              & (u < w)[None] & (v < h)[:, None])
    share = inside.reshape(hp // 8, k, wp // 8, k).mean((1, 3))
    return torch.from_numpy(share > 0.5)[None]


def unturn_points(points: np.ndarray, turns: int, shape: tuple[int, int]) -> np.ndarray:
    """Points ``(N, 2)`` (x, y; pixel centres at integers) of ``np.rot90(a, turns)`` → the same points in ``a``,
    an array of ``shape`` (H, W). Float32."""
    h, w = shape[:2]
    p = np.asarray(points, np.float32).reshape(-1, 2)
    for t in range(turns % 4, 0, -1):  # undo the last quarter turn first
        width = w if t % 2 == 1 else h  # the width of np.rot90(a, t - 1)
        p = np.stack([width - 1 - p[:, 1], p[:, 0]], 1)
    return p


def on_mask(points: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """``(N,)`` bool: points ``(N, 2)`` (x, y; pixel centres at integers) on a true pixel of ``mask`` (all of
    them when ``mask`` is None)."""
    if mask is None:
        return np.ones(len(points), bool)
    h, w = mask.shape
    x = np.clip(np.rint(points[:, 0]), 0, w - 1).astype(np.intp)
    y = np.clip(np.rint(points[:, 1]), 0, h - 1).astype(np.intp)
    return mask[y, x]


def _transform(points: np.ndarray, H: np.ndarray) -> np.ndarray:
    """``(N, 2)`` points through the homography ``H`` (float32 out)."""
    if len(points) == 0:  # (OpenCV returns None for no points)
        return np.zeros((0, 2), np.float32)
    out = cv2.perspectiveTransform(points.reshape(-1, 1, 2).astype(np.float64), H)
    return out.reshape(-1, 2).astype(np.float32)


def _per_match(v: Any) -> bool:
    return isinstance(v, np.ndarray) and v.ndim >= 1


def _rescale(kpts: np.ndarray, shape: tuple[int, ...], full: tuple[int, int]) -> np.ndarray:
    """Keypoints in the pixels of an array of ``shape`` → the pixels of the ``full``-size source."""
    if tuple(shape) == tuple(full):
        return kpts
    s = np.array([full[1] / shape[1], full[0] / shape[0]], np.float32)
    return ((kpts + 0.5) * s - 0.5).astype(np.float32)


def _intrinsics(K: Any, name: str) -> np.ndarray:
    K = np.asarray(K, np.float64)
    if K.shape != (3, 3) or not np.isfinite(K).all() or K[0, 0] <= 0 or K[1, 1] <= 0:
        raise ValueError(f"{name} must be a finite 3×3 intrinsics matrix with positive focal lengths")
    return K
