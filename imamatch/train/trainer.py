"""Training loop on synthetic homography pairs: AdamW, warm-up + cosine decay, gradient clipping, periodic
atomic checkpoints, exact resume, progress bar, JSON-lines log."""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..atomic import atomic_path
from ..backbone import LocalFeatureBackbone
from ..config import PRESETS, MatcherConfig
from ..data.synthetic import SyntheticPairs, WarpConfig
from ..model import IMAMatchNet
from ..weights import load_into, read_weights, save_weights
from .losses import LossConfig, coarse_focal_loss, fine_losses
from .supervision import coarse_truth, homography_transfer, inverse_homography_transfer


@dataclass
class TrainConfig:
    folders: list[str]
    out: str
    preset: str = "fast"
    steps: int = 4000
    batch: int = 2
    size: int = 320
    lr: float = 4e-4
    weight_decay: float = 1e-2
    clip: float = 10.0
    warmup: int = 200
    seed: int = 66
    ckpt_every: int = 100
    freeze_backbone: bool = True
    init: str | None = None          # imamatch .safetensors to start from (tensors whose name and shape fit)
    init_aliked: str | None = None   # ALIKED-n16 .pth (read with weights_only=True) for the backbone
    threads: int | None = None
    max_minutes: float | None = None  # stop (with a checkpoint) after this long
    loss: LossConfig = field(default_factory=LossConfig)


def load_aliked_backbone(net: IMAMatchNet, path: str | Path) -> None:
    """Copy ALIKED-n16 weights (a plain state dict; loaded with ``weights_only=True``) into the backbone."""
    sd = torch.load(str(path), map_location="cpu", weights_only=True)
    mapped = {}
    for k, v in sd.items():
        nk = LocalFeatureBackbone.aliked_key_map(k)
        if nk is not None:
            mapped[nk] = v
    net.backbone.load_state_dict(mapped, strict=True)


def _lr_factor(step: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup:
        return (step + 1) / cfg.warmup
    t = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))


def training_step(net: IMAMatchNet, batch: dict[str, torch.Tensor], loss_cfg: LossConfig,
                  gen: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
    """One forward pass on a batch of homography pairs; returns the total loss and its parts."""
    img0, img1, H = batch["image0"], batch["image1"], batch["H"]
    enc = net.encode(img0, img1)
    fwd, bwd = homography_transfer(H), inverse_homography_transfer(H)
    gt = coarse_truth(fwd, bwd, img0.shape[0], enc.grid0, enc.grid1, img0.device)
    parts = {"coarse": coarse_focal_loss(enc.conf, gt, loss_cfg.focal_alpha, loss_cfg.focal_gamma,
                                         loss_cfg.neg_weight)}
    parts.update(fine_losses(net, enc, gt, fwd, loss_cfg, gen))
    total = (loss_cfg.w_coarse * parts["coarse"] + loss_cfg.w_regress * parts["regress"]
             + loss_cfg.w_classify * parts["classify"] + loss_cfg.w_refine * parts["refine"])
    stats = {k: float(v.detach()) for k, v in parts.items()}
    stats["positives"] = float(len(gt.b)) / img0.shape[0]
    return total, stats


def _save_state(path: Path, state: dict) -> None:
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def train(cfg: TrainConfig) -> Path:
    """Train (or resume, if ``cfg.out`` holds a checkpoint) and return the path of the last weights."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    weights_path, state_path, log_path = out / "last.safetensors", out / "state.pt", out / "log.jsonl"
    torch.manual_seed(cfg.seed)
    conf: MatcherConfig = PRESETS[cfg.preset]
    net = IMAMatchNet(conf)
    step = 0
    if weights_path.exists() and state_path.exists():
        tensors, stored, _ = read_weights(weights_path)
        conf = stored or conf
        net = IMAMatchNet(conf)
        load_into(net, tensors, weights_path)
        state = torch.load(state_path, map_location="cpu", weights_only=True)
        step = int(state["step"])
        print(f"resuming from {weights_path} at step {step}")
    else:
        state = None
        if cfg.init:
            tensors, _, _ = read_weights(cfg.init)
            own = net.state_dict()
            fit = {k: v.to(own[k].dtype) for k, v in tensors.items() if k in own and own[k].shape == v.shape}
            net.load_state_dict(fit, strict=False)
            print(f"initialised {len(fit)} of {len(own)} tensors from {cfg.init}")
        elif cfg.init_aliked:
            load_aliked_backbone(net, cfg.init_aliked)
        (out / "train_config.json").write_text(json.dumps(asdict(cfg), indent=2))
    if cfg.freeze_backbone:
        for p in net.backbone.parameters():
            p.requires_grad_(False)
    params = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if state is not None:
        opt.load_state_dict(state["optimizer"])
    gen = torch.Generator().manual_seed(cfg.seed * 1000003 + step)
    data = SyntheticPairs(cfg.folders, WarpConfig(size=cfg.size), seed=cfg.seed * 7919 + step)
    loader = torch.utils.data.DataLoader(data, batch_size=cfg.batch, num_workers=0)
    it = iter(loader)
    start = time.time()
    bar = tqdm(total=cfg.steps, initial=step, desc="train", dynamic_ncols=True)
    running: dict[str, float] = {}
    while step < cfg.steps:
        net.train()
        if cfg.freeze_backbone:
            net.backbone.eval()
        for g in opt.param_groups:
            g["lr"] = cfg.lr * _lr_factor(step, cfg)
        loss, stats = training_step(net, next(it), cfg.loss, gen)
        opt.zero_grad(set_to_none=True)
        if torch.isfinite(loss):
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, cfg.clip)
            opt.step()
        step += 1
        for k, v in stats.items():
            running[k] = 0.95 * running.get(k, v) + 0.05 * v
        bar.update(1)
        bar.set_postfix({k: f"{v:.3f}" for k, v in running.items() if k != "positives"})
        timed_out = cfg.max_minutes is not None and time.time() - start > cfg.max_minutes * 60
        if step % cfg.ckpt_every == 0 or step == cfg.steps or timed_out:
            save_weights(net, conf, weights_path, step=str(step))
            _save_state(state_path, {"step": step, "optimizer": opt.state_dict()})
            with open(log_path, "a") as f:
                f.write(json.dumps({"step": step, "time": time.time(), **running}) + "\n")
        if timed_out:
            print(f"stopping after {cfg.max_minutes} min at step {step}; run again to resume")
            break
    bar.close()
    return weights_path
