"""Distilling backbone parts into cheap stand-ins (block 1 into the space-to-depth stem, blocks 2 and 3 into the
lite blocks): the student learns the teacher's blocks, the file keeps every other tensor and matches."""

import cv2
import numpy as np
import pytest
import torch

from imamatch import IMAMatch
from imamatch.config import MatcherConfig
from imamatch.model import IMAMatchNet
from imamatch.train.distil import distil_mid, distil_stem
from imamatch.weights import read_weights, save_weights

SMALL = dict(n_blocks=1, scales=(1,), fine_blocks=0, pixel_stem=False)


def _photos(folder):
    rng = np.random.default_rng(0)
    folder.mkdir()
    for i in range(3):
        img = cv2.GaussianBlur(rng.random((160, 200)).astype(np.float32), (0, 0), 2 + i)
        cv2.imwrite(str(folder / f"p{i}.png"), (255 * (img - img.min()) / np.ptp(img)).astype(np.uint8))
    return folder


def _teacher(tmp_path, **conf):
    """A random small network written as a teacher file: (network, path)."""
    torch.manual_seed(0)
    c = MatcherConfig(**SMALL, **conf)
    net = IMAMatchNet(c)
    save_weights(net, c, tmp_path / "teacher.safetensors")
    return net, tmp_path / "teacher.safetensors"


def _rest_kept_and_matching(path, teacher, replaced):
    """The file at ``path`` holds the teacher's tensors but for those under the ``replaced`` prefixes, and
    matches; returns its matcher."""
    tensors, _, _ = read_weights(path)
    own = teacher.state_dict()
    for k, v in tensors.items():
        if not k.startswith(replaced):
            torch.testing.assert_close(v, own[k])
    m = IMAMatch(weights=path, resize=128)
    out = m.match(np.random.default_rng(1).random((96, 128), dtype=np.float32),
                  np.random.default_rng(2).random((96, 128), dtype=np.float32))
    assert out["keypoints0"].shape[1] == 2
    return m


def test_distilled_stem_learns_the_block_and_keeps_the_rest(tmp_path):
    teacher, path = _teacher(tmp_path)
    r = distil_stem(_photos(tmp_path / "photos"), path, tmp_path / "s2d.safetensors", steps=60, batch=4, crop=64,
                    progress=False)
    assert r.error_after < 0.5 * r.error_before
    tensors, stored, meta = read_weights(r.path)
    assert stored.stem == "s2d" and "distilled" in meta["note"]
    assert not any(k.startswith("backbone.block1.") for k in tensors)
    assert any(k.startswith("backbone.stem.") for k in tensors)
    m = _rest_kept_and_matching(r.path, teacher, ("backbone.stem.",))
    assert m.conf.stem == "s2d" and m.net.backbone.block1 is None


def test_teacher_must_have_the_full_resolution_block(tmp_path):
    conf = MatcherConfig(**SMALL, stem="s2d")
    save_weights(IMAMatchNet(conf), conf, tmp_path / "s2d.safetensors")
    with pytest.raises(ValueError, match="full-resolution block 1"):
        distil_stem(tmp_path, tmp_path / "s2d.safetensors", tmp_path / "out.safetensors", steps=1)
    with pytest.raises(ValueError, match="multiple of 8"):
        distil_stem(tmp_path, tmp_path / "s2d.safetensors", tmp_path / "out.safetensors", crop=60)


def test_distilled_mid_blocks_learn_the_teacher_and_keep_the_rest(tmp_path):
    teacher, path = _teacher(tmp_path, stem="s2d")
    r = distil_mid(_photos(tmp_path / "photos"), path, tmp_path / "lite.safetensors", steps=80, batch=4, crop=64,
                   progress=False)
    assert r.error_after < 0.5 * r.error_before
    tensors, stored, meta = read_weights(r.path)
    assert stored.mid == "lite" and stored.stem == "s2d" and "blocks 2 and 3" in meta["note"]
    assert "backbone.block2.dw1.weight" in tensors and "backbone.block3.a.weight" in tensors
    m = _rest_kept_and_matching(r.path, teacher, ("backbone.block2.", "backbone.block3."))
    assert m.conf.mid == "lite"
    with pytest.raises(ValueError, match="mid='aliked'"):
        distil_mid(tmp_path / "photos", r.path, tmp_path / "again.safetensors", steps=1, crop=64)
    with pytest.raises(ValueError, match="multiple of 32"):
        distil_mid(tmp_path / "photos", path, tmp_path / "x.safetensors", crop=48)
