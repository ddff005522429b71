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
