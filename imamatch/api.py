"""The user-facing matcher: ``IMAMatch.from_pretrained().match(img0, img1)``."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .config import PRESETS, MatcherConfig
from .errors import WeightsError
from .io import ImageInput, prepare, to_gray, to_original
from .model import IMAMatchNet
from .pose import estimate_relative_pose
from .runtime import keep_freed_memory
from .weights import PACKAGE_WEIGHTS, load_into, read_weights

SHIPPED = {"fast": PACKAGE_WEIGHTS / "imamatch-fast.safetensors"}


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
        return cls(PRESETS[name], weights=path, device=device, **overrides)

    def match(self, image0: ImageInput, image1: ImageInput, K0: np.ndarray | None = None,
              K1: np.ndarray | None = None, refine_pose: bool = True) -> dict[str, Any]:
        """Match two images (paths, arrays, PIL images or tensors; sizes may differ).

        With intrinsics ``K0`` and ``K1`` (3×3, original pixels) the relative pose is estimated too
        (:func:`imamatch.pose.estimate_relative_pose`: PoseLib's LO-RANSAC with a threshold of 1 px at the
        matching resolution, then bundle adjustment if ``refine_pose``) and returned as ``R``, ``t`` (unit),
        ``pose_success`` and ``inliers``.

        Returns numpy arrays: ``keypoints0``/``keypoints1`` ``(N, 2)`` (x, y) in each original image's
        pixels, ``confidence`` ``(N,)`` (coarse dual-softmax), ``fine_prob`` ``(N,)`` (classification peak),
        ``densified`` ``(N,)`` bool (from the increased-matching-amount step), and the scalars
        ``num_coarse``, ``num_densified`` (coarse matches expanded), ``num_rejected`` (by the consistency check)
        ``num_polished`` (moved by the photometric sub-pixel polish) and ``num_disagreeing`` (dropped by the
        neighbourhood-agreement filter, :mod:`imamatch.neighbourhood`).
        """
        if (K0 is None) != (K1 is None):
            raise ValueError("give both K0 and K1 to estimate the relative pose")
        if K0 is not None:
            K0, K1 = _intrinsics(K0, "K0"), _intrinsics(K1, "K1")
        side = self.conf.resize
        p0 = prepare(to_gray(image0, "image0", side), side)
        p1 = prepare(to_gray(image1, "image1", side), side)
        with torch.inference_mode():
            out = self.net.match(p0.tensor.to(self.device), p1.tensor.to(self.device),
                                 p0.valid.to(self.device), p1.valid.to(self.device))
        out = {k: v.cpu().numpy() for k, v in out.items()}
        k0, k1 = out["keypoints0"], out["keypoints1"]
        inside = ((k0[:, 0] <= p0.size[1] - 0.5) & (k0[:, 1] <= p0.size[0] - 0.5)
                  & (k1[:, 0] >= -0.5) & (k1[:, 1] >= -0.5)
                  & (k1[:, 0] <= p1.size[1] - 0.5) & (k1[:, 1] <= p1.size[0] - 0.5))
        order = np.argsort(-out["confidence"][inside], kind="stable")
        if self.conf.max_matches is not None:
            order = order[: self.conf.max_matches]
        sel = np.flatnonzero(inside)[order]
        densified = out["densified"][sel]
        result = {
            "keypoints0": to_original(k0[sel], p0),
            "keypoints1": to_original(k1[sel], p1),
            "confidence": out["confidence"][sel].astype(np.float32),
            "fine_prob": out["fine_prob"][sel].astype(np.float32),
            "densified": densified,
            "num_coarse": np.int64(out["num_coarse"]),
            "num_densified": np.int64(out["num_densified"]),
            "num_rejected": np.int64(out["num_fine"] - out["num_consistent"]),
            "num_polished": np.int64(out["num_polished"]),
            "num_disagreeing": np.int64(out["num_disagreeing"]),
        }
        if K0 is not None:
            pose = estimate_relative_pose(result["keypoints0"], result["keypoints1"], K0, K1,
                                          confidence=result["confidence"], refine=refine_pose,
                                          threshold_px=max(*p0.scale, *p1.scale))  # 1 px where we matched
            result.update(R=pose.R, t=pose.t, pose_success=pose.success, inliers=pose.inliers)
        return result


def _intrinsics(K: Any, name: str) -> np.ndarray:
    K = np.asarray(K, np.float64)
    if K.shape != (3, 3) or not np.isfinite(K).all() or K[0, 0] <= 0 or K[1, 1] <= 0:
        raise ValueError(f"{name} must be a finite 3×3 intrinsics matrix with positive focal lengths")
    return K
