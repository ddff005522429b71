"""Weights files: safetensors only, clear errors, no pickle ever executed."""

import pickle

import pytest
import torch

from imamatch import IMAMatch
from imamatch.config import PRESETS
from imamatch.errors import WeightsError
from imamatch.model import IMAMatchNet
from imamatch.weights import PACKAGE_WEIGHTS, read_weights, save_weights

SHIPPED = PACKAGE_WEIGHTS / "imamatch-fast.safetensors"


def test_shipped_weights_load_and_record_their_config():
    tensors, conf, meta = read_weights(SHIPPED)
    assert conf is not None and conf.backbone == "aliked"
    assert SHIPPED.stat().st_size < 30e6


def test_both_shipped_weights_match_the_same_stereo_pair():
    """'fast' (64-channel attention) and 'accurate' (128) load by name with their own widths and both find
    thousands of matches on Middlebury Motorcycle, most within 3 px of the ground-truth disparity."""
    import numpy as np
    from skimage import data

    left, right, disp = data.stereo_motorcycle()
    widths = {}
    for name in ("fast", "accurate"):
        m = IMAMatch.from_pretrained(name)
        widths[name] = m.conf.dim
        out = m.match(left, right)
        k0, k1 = out["keypoints0"], out["keypoints1"]
        d = disp[np.round(k0[:, 1]).astype(int), np.round(k0[:, 0]).astype(int)]
        ok = np.isfinite(d)
        err = np.hypot(k1[ok, 0] - (k0[ok, 0] - d[ok]), k1[ok, 1] - k0[ok, 1])
        assert len(k0) > 1000 and np.mean(err < 3) > 0.93, (name, len(k0), np.mean(err < 3))
    assert widths == {"fast": 64, "accurate": 128}
    with pytest.raises(WeightsError, match="accurate"):
        IMAMatch.from_pretrained("tiny")


@pytest.mark.parametrize("kind", ["truncated", "garbage", "missing"])
def test_broken_files(tmp_path, kind):
    p = tmp_path / "w.safetensors"
    if kind == "truncated":
        p.write_bytes(SHIPPED.read_bytes()[:100000])
    elif kind == "garbage":
        p.write_bytes(b"\x00" * 64 + b"junk" * 100)
    with pytest.raises(WeightsError, match="w.safetensors"):
        IMAMatch(weights=p)


class _Boom:
    def __reduce__(self):
        return (open, ("/tmp/imamatch_pickle_executed", "w"))


def test_pickle_is_never_executed(tmp_path):
    import os

    marker = "/tmp/imamatch_pickle_executed"
    if os.path.exists(marker):
        os.remove(marker)
    p = tmp_path / "evil.safetensors"
    p.write_bytes(pickle.dumps({"x": _Boom()}))
    with pytest.raises(WeightsError):
        IMAMatch(weights=p)
    assert not os.path.exists(marker)


def test_wrong_shapes_and_nan(tmp_path):
    net = IMAMatchNet(PRESETS["fast"].replace(dim=64, heads=2))
    save_weights(net, PRESETS["fast"], tmp_path / "bad.safetensors")  # config says dim 128
    with pytest.raises(WeightsError, match="does not fit"):
        IMAMatch(weights=tmp_path / "bad.safetensors")
    net = IMAMatchNet(PRESETS["fast"])
    with torch.no_grad():
        next(net.parameters()).fill_(float("nan"))
    save_weights(net, PRESETS["fast"], tmp_path / "nan.safetensors")
    with pytest.raises(WeightsError, match="NaN"):
        IMAMatch(weights=tmp_path / "nan.safetensors")


def test_save_load_round_trip_gives_identical_output(tmp_path):
    a = IMAMatch.from_pretrained()
    save_weights(a.net, a.conf, tmp_path / "copy.safetensors")
    b = IMAMatch(weights=tmp_path / "copy.safetensors")
    for (k, v), (k2, v2) in zip(a.net.state_dict().items(), b.net.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)


def test_reference_preset_builds_and_runs():
    with pytest.warns(UserWarning, match="untrained"):
        m = IMAMatch("reference", resize=128)
    n_params = sum(p.numel() for p in m.net.parameters())
    assert n_params > 20e6
    out = m.match(torch.rand(96, 128), torch.rand(96, 128))
    assert out["keypoints0"].shape[1] == 2


def test_tampered_tensor_bytes_are_detected(tmp_path):
    raw = bytearray(SHIPPED.read_bytes())
    raw[-1000] ^= 0xFF  # flip bits inside the tensor data, header untouched
    p = tmp_path / "tampered.safetensors"
    p.write_bytes(bytes(raw))
    with pytest.raises(WeightsError, match="checksum"):
        IMAMatch(weights=p)
