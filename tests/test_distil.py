"""Distilling block 1 into the space-to-depth stem: the student learns the teacher's block, the file keeps
every other tensor and matches with ``stem="s2d"``."""

import cv2
import numpy as np
import pytest
import torch

from imamatch import IMAMatch
from imamatch.config import MatcherConfig
from imamatch.model import IMAMatchNet
from imamatch.train.distil import distil_stem
from imamatch.weights import read_weights, save_weights

SMALL = dict(n_blocks=1, scales=(1,), fine_blocks=0, pixel_stem=False)


def _photos(folder):
    rng = np.random.default_rng(0)
    folder.mkdir()
    for i in range(3):
        img = cv2.GaussianBlur(rng.random((160, 200)).astype(np.float32), (0, 0), 2 + i)
        cv2.imwrite(str(folder / f"p{i}.png"), (255 * (img - img.min()) / np.ptp(img)).astype(np.uint8))
    return folder


def test_distilled_stem_learns_the_block_and_keeps_the_rest(tmp_path):
    torch.manual_seed(0)
    conf = MatcherConfig(**SMALL)
    teacher = IMAMatchNet(conf)
    save_weights(teacher, conf, tmp_path / "teacher.safetensors")
    r = distil_stem(_photos(tmp_path / "photos"), tmp_path / "teacher.safetensors", tmp_path / "s2d.safetensors",
                    steps=60, batch=4, crop=64, progress=False)
    assert r.error_after < 0.5 * r.error_before
    tensors, stored, meta = read_weights(r.path)
    assert stored.stem == "s2d" and "distilled" in meta["note"]
    own = teacher.state_dict()
    assert not any(k.startswith("backbone.block1.") for k in tensors)
    assert any(k.startswith("backbone.stem.") for k in tensors)
    for k, v in tensors.items():
        if not k.startswith("backbone.stem."):
            torch.testing.assert_close(v, own[k])
    m = IMAMatch(weights=r.path, resize=128)
    assert m.conf.stem == "s2d" and m.net.backbone.block1 is None
    out = m.match(np.random.default_rng(1).random((96, 128), dtype=np.float32),
                  np.random.default_rng(2).random((96, 128), dtype=np.float32))
    assert out["keypoints0"].shape[1] == 2


def test_teacher_must_have_the_full_resolution_block(tmp_path):
    conf = MatcherConfig(**SMALL, stem="s2d")
    save_weights(IMAMatchNet(conf), conf, tmp_path / "s2d.safetensors")
    with pytest.raises(ValueError, match="full-resolution block 1"):
        distil_stem(tmp_path, tmp_path / "s2d.safetensors", tmp_path / "out.safetensors", steps=1)
    with pytest.raises(ValueError, match="multiple of 8"):
        distil_stem(tmp_path, tmp_path / "s2d.safetensors", tmp_path / "out.safetensors", crop=60)
