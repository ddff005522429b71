"""Training: runs, checkpoints atomically, resumes exactly where it stopped."""

import json

import pytest
import torch

from imamatch.config import ARCHITECTURE_FIELDS
from imamatch.data.synthetic import bundled_photo_folder
from imamatch.train.trainer import TrainConfig, train
from imamatch.weights import read_weights


def test_train_checkpoint_and_resume(tmp_path):
    cfg = TrainConfig(folders=[str(bundled_photo_folder())], out=str(tmp_path / "run"), steps=2, batch=1,
                      size=128, ckpt_every=1, warmup=1, seed=1)
    w = train(cfg)
    _, conf, meta = read_weights(w)
    assert meta["step"] == "2" and conf is not None
    cfg.steps = 4
    train(cfg)
    _, _, meta = read_weights(w)
    assert meta["step"] == "4"
    steps = [json.loads(line)["step"] for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]
    assert all(json.loads(line)["coarse"] > 0 for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines())
    assert not list((tmp_path / "run").glob("*.tmp*"))


def test_mixed_data_alternates_homography_and_scene_batches_by_global_step():
    from imamatch.train.trainer import _data

    cfg = TrainConfig(folders=[str(bundled_photo_folder())], out="", dataset="mixed", batch=1, size=96)
    kinds = ["H" if "H" in b else "depth" for b, _ in zip(_data(cfg, 0, 1, 0), range(4))]
    assert kinds == ["H", "depth", "H", "depth"]
    resumed = next(_data(cfg, 0, 1, 7))  # after a resume at an odd step the next batch is a scene
    assert "depth0" in resumed and resumed["depth0"].shape == (1, 96, 96)


def test_train_on_mixed_pairs(tmp_path):
    cfg = TrainConfig(folders=[str(bundled_photo_folder())], out=str(tmp_path / "run"), dataset="mixed", steps=2,
                      batch=1, size=128, ckpt_every=1, warmup=1, seed=2)
    train(cfg)
    logs = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logs] == [1, 2]
    assert all(r["coarse"] > 0 and r["positives"] > 0 for r in logs)


def test_fine_tuned_pretrained_backbone_keeps_its_batchnorm_statistics(tmp_path):
    from imamatch import IMAMatch
    from imamatch.api import SHIPPED

    ship, _, _ = read_weights(SHIPPED["fast"])
    cfg = TrainConfig(folders=[str(bundled_photo_folder())], out=str(tmp_path / "run"), steps=2, batch=1,
                      size=128, ckpt_every=2, warmup=1, seed=3, freeze_backbone=False, init=str(SHIPPED["fast"]))
    tuned, _, _ = read_weights(train(cfg))
    stats = [k for k in tuned if k.startswith("backbone.") and k.endswith(("running_mean", "running_var"))]
    convs = [k for k in tuned if k.startswith("backbone.block") and k.endswith("conv.weight")]
    assert stats and convs
    for k in stats:  # batches of one pair would corrupt the pretrained statistics: they stay
        torch.testing.assert_close(tuned[k].float(), ship[k].float())
    assert any(not torch.equal(tuned[k].float(), ship[k].float()) for k in convs)  # the weights do train
    assert IMAMatch("fast", weights=str(tmp_path / "run" / "last.safetensors")).net.backbone is not None
    # without --arch the run keeps the init file's architecture (every tensor fits)
    _, shipped_conf, _ = read_weights(SHIPPED["fast"])
    _, tuned_conf, _ = read_weights(tmp_path / "run" / "last.safetensors")
    assert all(getattr(tuned_conf, f) == getattr(shipped_conf, f) for f in ARCHITECTURE_FIELDS)
    assert tuned.keys() == ship.keys()


def test_architecture_ablation_trains_and_is_stored(tmp_path):
    """Single-scale plain linear attention (an ablation) from the shipped weights: the tensors that fit load, the
    run trains and the weights file records the changed architecture, so IMAMatch rebuilds it."""
    from imamatch import IMAMatch
    from imamatch.api import SHIPPED

    cfg = TrainConfig(folders=[str(bundled_photo_folder())], out=str(tmp_path / "run"), steps=1, batch=1, size=128,
                      ckpt_every=1, warmup=1, seed=4, init=str(SHIPPED["fast"]),
                      architecture={"focus_power": 1.0, "scales": (1,), "n_blocks": 1, "fine_blocks": 0,
                                    "pixel_stem": False})
    w = train(cfg)
    _, conf, _ = read_weights(w)
    assert conf.focus_power == 1.0 and conf.scales == (1,) and conf.n_blocks == 1 and conf.fine_blocks == 0
    assert not conf.pixel_stem
    m = IMAMatch(weights=w)
    assert m.conf.scales == (1,) and len(m.net.transformer.self_layers[0].branches) == 1
    assert len(m.net.transformer.self_layers) == 1 and len(m.net.top_down.blocks) == 0
    assert m.net.top_down.pixel_stem is None


def test_aliked_init_refuses_the_distilled_stand_ins(tmp_path):
    from imamatch.config import MatcherConfig
    from imamatch.model import IMAMatchNet
    from imamatch.train.trainer import load_aliked_backbone

    for arch in ({"stem": "s2d"}, {"mid": "lite"}):
        net = IMAMatchNet(MatcherConfig(n_blocks=1, scales=(1,), **arch))
        with pytest.raises(ValueError, match="distilled"):
            load_aliked_backbone(net, tmp_path / "aliked-n16.pth")  # refused before anything is read


def test_train_only_the_named_parts_leaves_the_rest_bit_for_bit(tmp_path):
    """``train_only`` ("fine." and "top_down."): those tensors change, every other one is the init's."""
    from imamatch.api import SHIPPED

    ship, _, _ = read_weights(SHIPPED["fast"])
    cfg = TrainConfig(folders=[str(bundled_photo_folder())], out=str(tmp_path / "run"), steps=2, batch=1,
                      size=128, ckpt_every=2, warmup=1, seed=5, init=str(SHIPPED["fast"]), lr=1e-3,
                      train_only=("fine.", "top_down."))
    tuned, _, _ = read_weights(train(cfg))
    trained = [k for k in tuned if k.startswith(("fine.", "top_down."))]
    assert trained and all(torch.equal(tuned[k].float(), ship[k].float()) for k in tuned if k not in trained)
    assert sum(not torch.equal(tuned[k].float(), ship[k].float()) for k in trained) > len(trained) // 2
    with pytest.raises(ValueError, match="no parameters to train"):
        train(TrainConfig(folders=[str(bundled_photo_folder())], out=str(tmp_path / "none"), steps=1, batch=1,
                          size=128, init=str(SHIPPED["fast"]), train_only=("nothing.",)))


def test_a_batch_without_fine_supervision_is_skipped_not_fatal(tmp_path, monkeypatch):
    """With only the fine stages trained, a batch whose homography moves image 0 out of image 1's view has no fine
    supervision: its loss (the coarse part only) carries no gradient. Training steps over it (session 22: a
    3 000-step fine-tune stopped at step 2 290 on such a batch) and leaves the weights as they were."""
    import numpy as np
    from skimage import data

    import imamatch.train.trainer as trainer
    from imamatch.api import SHIPPED

    img = torch.from_numpy(data.camera()[:128, :128].astype(np.float32) / 255)[None, None]
    away = torch.tensor([[1.0, 0.0, 500.0], [0.0, 1.0, 500.0], [0.0, 0.0, 1.0]])[None]  # far outside 128 × 128
    batch = {"image0": img, "image1": img.flip(-1).contiguous(), "H": away}
    monkeypatch.setattr(trainer, "_data", lambda cfg, rank, world, step: iter(lambda: dict(batch), None))
    ship, _, _ = read_weights(SHIPPED["fast"])
    cfg = TrainConfig(folders=[str(bundled_photo_folder())], out=str(tmp_path / "run"), steps=2, batch=1,
                      size=128, ckpt_every=2, warmup=1, seed=5, init=str(SHIPPED["fast"]), lr=1e-3,
                      train_only=("fine.", "top_down."))
    tuned, _, meta = read_weights(train(cfg))
    assert meta["step"] == "2"
    assert all(torch.equal(tuned[k].float(), ship[k].float()) for k in tuned)
    steps = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert steps[-1]["positives"] == 0
