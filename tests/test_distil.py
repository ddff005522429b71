"""Distilling backbone parts into cheap stand-ins (block 1 into the space-to-depth stem, blocks 2 and 3 into the
lite blocks, block 4 into a plain one): the student learns the teacher's blocks, the file keeps every other
tensor and matches."""

import cv2
import numpy as np
import pytest
import torch

from imamatch import IMAMatch
from imamatch.config import MatcherConfig
from imamatch.model import IMAMatchNet
from imamatch.train.distil import distil_deep, distil_mid, distil_stem
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


@pytest.mark.parametrize("kind, dilation", [("plain", 1), ("dilated", 3)])
def test_distilled_block4_is_plain_learns_the_teacher_and_keeps_the_rest(tmp_path, kind, dilation):
    teacher, path = _teacher(tmp_path, stem="s2d", mid="lite")
    r = distil_deep(_photos(tmp_path / "photos"), path, tmp_path / "deep.safetensors", steps=80, batch=4, crop=128,
                    progress=False, kind=kind)
    assert r.error_after < 0.5 * r.error_before
    tensors, stored, meta = read_weights(r.path)
    assert stored.deep == kind and stored.mid == "lite" and "block 4" in meta["note"]
    assert "backbone.block4.a.weight" in tensors and not any("offset_conv" in k for k in tensors)
    m = _rest_kept_and_matching(r.path, teacher, ("backbone.block4.",))
    assert m.net.backbone.block4.b.dilation == (dilation, dilation)
    with pytest.raises(ValueError, match="deep='aliked'"):
        distil_deep(tmp_path / "photos", r.path, tmp_path / "again.safetensors", steps=1, crop=128)
    with pytest.raises(ValueError, match="kind must be"):
        distil_deep(tmp_path / "photos", path, tmp_path / "x.safetensors", steps=1, crop=128, kind="wide")


def test_realigned_attention_learns_the_teachers_assignment_on_the_students_backbone(tmp_path):
    from imamatch.train.distil import realign_attention

    teacher, path = _teacher(tmp_path, stem="s2d", mid="lite")
    with torch.no_grad():  # attention layers that do something (they start as the identity)
        for p in teacher.transformer.parameters():
            p.add_(0.05 * torch.randn_like(p))
    save_weights(teacher, teacher.conf, path)
    photos = _photos(tmp_path / "photos")
    student = distil_deep(photos, path, tmp_path / "deep.safetensors", steps=10, batch=2, crop=128, progress=False)
    r = realign_attention(photos, path, student.path, tmp_path / "realigned.safetensors", steps=40, batch=2,
                          size=64, lr=1e-3, progress=False)
    assert r.error_after < 0.7 * r.error_before, r
    tensors, stored, meta = read_weights(r.path)
    assert stored.deep == "plain" and "realigned" in meta["note"]
    before, _, _ = read_weights(student.path)
    for k, v in tensors.items():  # only the coarse path changed
        if k.startswith(("coarse_in.", "transformer.", "top_down.top.")):
            continue
        torch.testing.assert_close(v, before[k])
    assert not torch.equal(tensors["coarse_in.weight"], before["coarse_in.weight"])
    wide = MatcherConfig(**SMALL, stem="s2d", mid="lite", dim=64, heads=2)
    save_weights(IMAMatchNet(wide), wide, tmp_path / "wide.safetensors")
    with pytest.raises(ValueError, match="the teacher's attention"):
        realign_attention(photos, path, tmp_path / "wide.safetensors", tmp_path / "x.safetensors", steps=1)


def test_matching_projection_keeps_the_similarity_and_the_matches(tmp_path):
    """The shipped network's attended features are nearly low-rank: a 32-channel projection of them (leading
    second-moment eigenvectors) keeps the coarse similarity and the stereo matches of Middlebury Motorcycle."""
    from skimage import data

    from imamatch.data.synthetic import bundled_photo_folder
    from imamatch.train.distil import match_projection
    from imamatch.weights import PACKAGE_WEIGHTS

    shipped = PACKAGE_WEIGHTS / "imamatch-fast.safetensors"
    r = match_projection(bundled_photo_folder(), shipped, tmp_path / "mp.safetensors", dim=32, pairs=6, size=256,
                         progress=False)
    assert r.error_after < 0.02 and r.error_after < 0.25 * r.error_before, r
    tensors, stored, _ = read_weights(r.path)
    assert stored.match_dim == 32 and tensors["match_proj.weight"].shape == (32, stored.dim)
    with pytest.raises(ValueError, match="already"):
        match_projection(bundled_photo_folder(), r.path, tmp_path / "again.safetensors", dim=16, pairs=2)
    left, right, disp = data.stereo_motorcycle()
    for path in (shipped, r.path):
        out = IMAMatch(weights=path, densify_max_queries=None).match(left, right)
        k0, k1 = out["keypoints0"], out["keypoints1"]
        d = disp[np.round(k0[:, 1]).astype(int), np.round(k0[:, 0]).astype(int)]
        ok = np.isfinite(d)
        err = np.hypot(k1[ok, 0] - (k0[ok, 0] - d[ok]), k1[ok, 1] - k0[ok, 1])
        assert len(k0) > 4000 and np.mean(err < 3) > 0.93, (path, len(k0), np.mean(err < 3))


def test_attention_loss_is_zero_for_the_teacher_itself_and_positive_for_another(tmp_path):
    from imamatch.train.distil import attention_loss

    teacher, _ = _teacher(tmp_path)
    teacher.eval()
    rng = np.random.default_rng(3)
    a, b = (torch.from_numpy(rng.random((2, 1, 64, 64), dtype=np.float32)) for _ in range(2))
    torch.manual_seed(5)
    other = IMAMatchNet(teacher.conf.replace(dim=32, heads=2))
    with torch.no_grad():
        assert float(attention_loss(teacher, teacher, a, b)) == pytest.approx(0.0, abs=1e-5)
        assert float(attention_loss(teacher, other, a, b)) > 0.1


def test_distilled_attention_is_narrower_learns_the_teacher_and_keeps_the_rest(tmp_path):
    from imamatch.train.distil import distil_attention

    torch.manual_seed(1)
    c = MatcherConfig(**SMALL)
    teacher = IMAMatchNet(c)
    with torch.no_grad():  # attention layers that do something (they start as the identity)
        for p in teacher.transformer.parameters():
            p.add_(0.05 * torch.randn_like(p))
    path = tmp_path / "teacher.safetensors"
    save_weights(teacher, c, path)
    r = distil_attention(_photos(tmp_path / "photos"), path, tmp_path / "att32.safetensors", dim=32, heads=2,
                         steps=40, batch=2, size=64, init_pairs=4, progress=False)
    assert r.error_after < 0.7 * r.error_before, r
    tensors, stored, meta = read_weights(r.path)
    assert (stored.dim, stored.heads) == (32, 2) and "attention 128 -> 32" in meta["note"]
    assert tensors["coarse_in.weight"].shape[0] == 32 and tensors["top_down.top.weight"].shape[1] == 32
    m = _rest_kept_and_matching(r.path, teacher, ("coarse_in.", "transformer.", "top_down.top."))
    assert m.conf.dim == 32
    with pytest.raises(ValueError, match="divisible by heads"):
        distil_attention(tmp_path / "photos", path, tmp_path / "x.safetensors", dim=30, heads=4, steps=1)


def test_narrower_attention_ffn_starts_as_the_pruned_teacher_and_learns_it(tmp_path):
    """At the teacher's width only the FFN narrows: the student starts as the teacher with the FFN's most
    important hidden channels kept (exactly the teacher where the dropped ones carry nothing) and learns the rest."""
    from imamatch.train.distil import _prune_ffn, distil_attention

    torch.manual_seed(2)
    c = MatcherConfig(**SMALL, dim=32, heads=2, ffn_ratio=2)
    teacher = IMAMatchNet(c).eval()
    with torch.no_grad():
        for p in teacher.transformer.parameters():
            p.add_(0.05 * torch.randn_like(p))
        narrow = IMAMatchNet(c.replace(ffn_ratio=1)).eval()
        for layer in (*teacher.transformer.self_layers, *teacher.transformer.cross_layers):
            layer.ffn[5].weight[:, 1::2] = 0  # odd hidden channels carry nothing: pruning them is exact
        _prune_ffn(narrow.transformer, teacher.transformer)
        x0, x1 = (torch.randn(1, 32, 6, 7) for _ in range(2))
        for a, b in zip(narrow.transformer(x0, x1), teacher.transformer(x0, x1)):
            torch.testing.assert_close(a, b)
    path = tmp_path / "teacher.safetensors"
    with torch.no_grad():
        for p in teacher.transformer.parameters():
            p.add_(0.05 * torch.randn_like(p))
    save_weights(teacher, c, path)
    r = distil_attention(_photos(tmp_path / "photos"), path, tmp_path / "ffn1.safetensors", dim=32, heads=2,
                         ffn_ratio=1, steps=30, batch=2, size=64, lr=3e-4, progress=False)
    assert r.error_after < r.error_before, r
    tensors, stored, meta = read_weights(r.path)
    assert (stored.dim, stored.ffn_ratio) == (32, 1) and "FFN 2x -> 1x" in meta["note"]
    assert tensors["transformer.self_layers.0.ffn.1.weight"].shape[0] == 32
    _rest_kept_and_matching(r.path, teacher, ("coarse_in.", "transformer.", "top_down.top."))
    with pytest.raises(ValueError, match="only a narrower FFN"):
        distil_attention(tmp_path / "photos", path, tmp_path / "x.safetensors", dim=32, heads=2, steps=1)


def test_distillation_pairs_come_as_homographies_scenes_or_both(tmp_path):
    from imamatch.data.synthetic import WarpConfig
    from imamatch.train.distil import _pair_source, load_gray_photos

    images = load_gray_photos([_photos(tmp_path / "photos")])
    for kind in ("homography", "scenes", "mixed"):
        a, b = _pair_source(images, WarpConfig(size=64), kind)(3, np.random.default_rng(0))
        assert a.shape == b.shape == (3, 1, 64, 64) and a.dtype == torch.float32
        assert float(a.std()) > 0.01 and not torch.equal(a, b)
    with pytest.raises(ValueError, match="pairs must be one of"):
        _pair_source(images, WarpConfig(size=64), "video")


def test_projected_fine_heads_match_the_teachers_on_features_in_the_subspace():
    """Fine maps that lie in a ``d``-dim subspace, ``f = Pᵀ z``: the teacher's heads on ``f`` and the rewritten
    student heads on ``z`` give the same offsets, heatmaps and consistency, windows past the border included."""
    from imamatch.fine import FineMatcher
    from imamatch.train.distil import _project_heads

    torch.manual_seed(0)
    c, d = 16, 6
    kw = dict(size=7, bound=3.0, refine_size=3, refine_bound=1.5, refine_iters=2, radius=1.0, min_prob=0.0)
    teacher, student = FineMatcher(c, **kw).eval(), FineMatcher(d, hidden=c, **kw).eval()
    proj = torch.linalg.qr(torch.randn(c, d)).Q.T            # d × C, orthonormal rows
    z0, z1 = torch.randn(1, d, 24, 24), torch.randn(1, d, 24, 24)
    lift = lambda z: torch.einsum("dc,bdhw->bchw", proj, z)  # noqa: E731
    with torch.no_grad():
        _project_heads(student, teacher, proj)
        n = 60
        b = torch.zeros(n, dtype=torch.long)
        q0 = torch.rand(n, 2) * 22 + 1
        ref1 = q0 + torch.randn(n, 2)
        rt = teacher(lift(z0), lift(z1), b, q0, ref1)
        rs = student(z0, z1, b, q0, ref1)
    torch.testing.assert_close(rs.heat, rt.heat, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(rs.match1, rt.match1, atol=1e-4, rtol=1e-4)
    assert torch.equal(rs.consistent, rt.consistent)
    assert not torch.allclose(rs.match1, ref1, atol=1e-2)  # the heads do move the matches


def test_distilled_fine_path_is_narrower_learns_the_teacher_and_keeps_the_rest(tmp_path):
    from imamatch.train.distil import distil_fine

    torch.manual_seed(2)
    c = MatcherConfig(**SMALL)
    teacher = IMAMatchNet(c)
    path = tmp_path / "teacher.safetensors"
    save_weights(teacher, c, path)
    r = distil_fine(_photos(tmp_path / "photos"), path, tmp_path / "fine16.safetensors", dim=16, steps=40,
                    batch=2, size=64, init_pairs=4, progress=False)
    assert r.error_after < 0.7 * r.error_before, r
    tensors, stored, meta = read_weights(r.path)
    assert (stored.fine_dim, stored.fine_hidden) == (16, 64) and "fine path 64 -> 16" in meta["note"]
    assert tensors["fine.stage1.key.weight"].shape == (64, 16)
    m = _rest_kept_and_matching(r.path, teacher, ("top_down.", "fine."))
    assert m.conf.fine_dim == 16
    with pytest.raises(ValueError, match="dim in"):
        distil_fine(tmp_path / "photos", path, tmp_path / "x.safetensors", dim=64, steps=1)
