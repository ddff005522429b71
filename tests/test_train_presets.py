"""Learning-rate schedules, named training configurations and their command-line overrides (no training run)."""

import dataclasses

import pytest
import torch

from imamatch.cli import build_parser, train_config_from_args
from imamatch.train.presets import TRAIN_CONFIGS, train_config
from imamatch.train.trainer import TrainConfig, lr_factor


def _cfg(**kw):
    return TrainConfig(folders=[], out="", **kw)


def test_cosine_schedule_factors():
    cfg = _cfg(steps=4000, warmup=200)
    assert cfg.schedule == "cosine"
    got = [lr_factor(s, cfg) for s in (0, 99, 199, 200, 2100, 4000, 5000)]
    assert got == pytest.approx([1 / 200, 0.5, 1.0, 1.0, 0.55, 0.1, 0.1])


def test_step_schedule_factors_match_multistep_lr():
    cfg = _cfg(steps=1000, warmup=10, schedule="step", decay_every=100, decay=0.5)
    got = [lr_factor(s, cfg) for s in (0, 4, 9, 10, 109, 110, 209, 210, 310, 999)]
    assert got == pytest.approx([0.1, 0.5, 1.0, 1.0, 1.0, 0.5, 0.5, 0.25, 0.125, 0.5 ** 9])
    # the same as torch's MultiStepLR with milestones every decay_every steps after the warm-up
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=list(range(100, 1000, 100)), gamma=0.5)
    ref = []
    for _ in range(cfg.steps - cfg.warmup):
        ref.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert [lr_factor(s, cfg) for s in range(cfg.warmup, cfg.steps)] == pytest.approx(ref)


def test_presets_load_with_reference_settings():
    for name in TRAIN_CONFIGS:
        cfg = train_config(name)
        assert cfg.dataset == name and cfg.weight_decay == 1e-2 and cfg.clip == 10.0 and cfg.warmup > 0
    assert train_config("synthetic") == _cfg()  # the synthetic settings are TrainConfig's defaults
    md, sn = train_config("megadepth"), train_config("scannet")
    assert (md.size, md.schedule, md.lr, md.decay) == (832, "step", pytest.approx(3.75e-4), 0.5)
    assert (sn.size, sn.schedule, sn.batch, sn.lr) == (640, "step", 4, pytest.approx(7.5e-4))
    assert train_config("megadepth", size=640).size == 640


def _parse(*argv):
    return train_config_from_args(build_parser().parse_args(["train", *argv]))


def test_cli_flags_override_the_preset():
    cfg = _parse("--config", "megadepth", "--root", "r", "--index", "i", "--out", "o", "--size", "640",
                 "--lr", "1e-4", "--decay-every", "5", "--train-backbone", "--pose-loss", "0.5", "--perspective", "0.4")
    assert (cfg.dataset, cfg.root, cfg.index, cfg.out) == ("megadepth", "r", "i", "o")
    assert (cfg.size, cfg.lr, cfg.decay_every, cfg.perspective) == (640, 1e-4, 5, 0.4)  # given on the command line
    assert (cfg.schedule, cfg.warmup, cfg.batch) == ("step", 27_600, 2)  # from the preset
    assert not cfg.freeze_backbone and cfg.loss.w_pose == 0.5


def test_cli_without_config_keeps_the_former_defaults():
    cfg = _parse("photos", "--out", "runs/x", "--steps", "3000", "--threads", "2", "--lr", "2e-4", "--seed", "67")
    assert cfg == dataclasses.replace(_cfg(), folders=["photos"], out="runs/x", steps=3000, threads=2, lr=2e-4,
                                      seed=67)


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="unknown training config 'outdoor'"):
        train_config("outdoor")
    with pytest.raises(ValueError, match="unknown schedule 'linear'"):
        _cfg(schedule="linear")
    with pytest.raises(ValueError, match="decay_every"):
        _cfg(schedule="step", decay_every=0)
    with pytest.raises(ValueError, match="not TrainConfig fields: sizes"):
        train_config("scannet", sizes=3)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--config", "outdoor", "--out", "o"])


def test_arch_flags_parse_typed_and_refuse_unknown_fields():
    cfg = _parse("--out", "o", "--arch", "focus_power=1", "--arch", "scales=1,2", "--arch", "separable_qkv=false")
    assert cfg.architecture == {"focus_power": 1.0, "scales": (1, 2), "separable_qkv": False}
    for bad in ("coarse_threshold=0.3", "focus_power", "scales=a"):
        with pytest.raises(ValueError, match="--arch"):
            _parse("--out", "o", "--arch", bad)
    with pytest.raises(ValueError, match="architecture"):
        TrainConfig(folders=[], out="o", architecture={"resize": 320})
