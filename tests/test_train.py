"""Training: runs, checkpoints atomically, resumes exactly where it stopped."""

import json

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
