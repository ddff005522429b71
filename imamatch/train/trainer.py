"""Training loop (synthetic homography pairs, depth datasets, posed photos): AdamW, warm-up then cosine or step
decay, gradient clipping, periodic atomic checkpoints, exact resume, progress bar, JSON-lines log."""

from __future__ import annotations

import itertools
import json
import math
import os
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from ..atomic import atomic_path
from ..backbone import LocalFeatureBackbone
from ..config import ARCHITECTURE_FIELDS, PRESETS, MatcherConfig
from ..data.scenes import SceneConfig, ScenePairs
from ..data.synthetic import SyntheticPairs, WarpConfig, load_photos
from ..errors import DataError
from ..coarse import CoarseMatches, select_matches
from ..densify import make_queries
from ..model import IMAMatchNet
from ..weights import load_into, read_weights, save_weights
from .losses import LossConfig, coarse_focal_loss, fine_losses
from .presets import DATASETS, PHOTO_DATASETS, SCHEDULES
from .supervision import Transfer, coarse_truth, depth_transfer, homography_transfer, inverse_homography_transfer


@dataclass
class TrainConfig:
    """Everything a training run needs. ``dataset``: "synthetic" (homography pairs from ``folders`` of photos),
    "scenes" (3D scenes textured with them, :mod:`imamatch.data.scenes`), "mixed" (both in turn), "megadepth" or
    "scannet" (``root`` images/depths, ``index`` folder, ``index_list`` file of scene names: MegaDepth's,
    default ``train_list.txt``; for ScanNet optional), or "posed" (``root`` with a ``transforms.json`` or a COLMAP
    model; epipolar supervision, no depth needed). ScanNet's ``index`` is a folder with ``test.npz`` (fixed pairs)
    or LoFTR's per-scene training index, of which each epoch draws ``pairs_per_scene`` pairs per scene (0: all)
    with an overlap score above ``min_overlap`` (:mod:`imamatch.data.scannet_train`).

    Learning rate: linear warm-up over ``warmup`` steps, then ``schedule`` "cosine" (down to 0.1·lr at
    ``steps``) or "step" (× ``decay`` every ``decay_every`` steps after the warm-up, like a MultiStepLR with
    evenly spaced milestones). Named settings per dataset: :mod:`imamatch.train.presets`."""

    folders: list[str]
    out: str
    dataset: str = "synthetic"
    root: str | None = None
    index: str | None = None
    index_list: str | None = None    # MegaDepth default: train_list.txt; ScanNet: every scene*.npz in index
    min_overlap: float = 0.4         # ScanNet training index: pairs with a larger overlap score
    pairs_per_scene: int = 200       # ScanNet training index: pairs drawn per scene and epoch (0: all)
    device: str | None = None        # default: cuda when available
    amp: bool = True                 # bfloat16 autocast on GPU
    preset: str = "fast"
    architecture: dict[str, Any] = field(default_factory=dict)  # MatcherConfig architecture fields over the
    #                                  preset's, for ablations (e.g. {"focus_power": 1.0}, {"scales": (1,)})
    steps: int = 4000
    batch: int = 2
    size: int = 320
    perspective: float = 0.25        # homography pairs: max corner displacement, fraction of the side
    lr: float = 4e-4
    weight_decay: float = 1e-2
    clip: float = 10.0
    warmup: int = 200
    schedule: str = "cosine"         # "cosine" or "step"
    decay_every: int = 10000         # step schedule: steps between decays (after the warm-up)
    decay: float = 0.5               # step schedule: factor per decay
    seed: int = 66
    ckpt_every: int = 100
    freeze_backbone: bool = True
    train_only: tuple[str, ...] = ()  # train only the parameters under these name prefixes (e.g. "fine.",
    #                                   "top_down."; empty: every parameter not frozen above)
    backbone_bn_stats: bool | None = None  # trained backbone: update its BatchNorm statistics too? None: only
    #                                        when it starts from scratch (no init / init_aliked), else keep the
    #                                        pretrained ones, which batches of 2 pairs would corrupt
    init: str | None = None          # imamatch .safetensors to start from (tensors whose name and shape fit;
    #                                  its stored architecture, with `architecture` over it)
    init_aliked: str | None = None   # ALIKED-n16 .pth (read with weights_only=True) for the backbone
    threads: int | None = None
    max_minutes: float | None = None  # stop (with a checkpoint) after this long
    loss: LossConfig = field(default_factory=LossConfig)

    def __post_init__(self) -> None:
        if self.dataset not in DATASETS:
            raise ValueError(f"unknown dataset {self.dataset!r}; choose from {', '.join(DATASETS)}")
        bad = sorted(set(self.architecture) - set(ARCHITECTURE_FIELDS))
        if bad:
            raise ValueError(f"not architecture fields: {', '.join(bad)}; choose from {', '.join(ARCHITECTURE_FIELDS)}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.schedule!r}; choose from {', '.join(SCHEDULES)}")
        if self.decay_every < 1 or not 0 < self.decay <= 1:
            raise ValueError(f"step schedule needs decay_every >= 1 and 0 < decay <= 1, got {self.decay_every} "
                             f"and {self.decay}")
        if self.warmup < 0 or self.steps < 0 or self.batch < 1 or self.size < 32:
            raise ValueError("warmup and steps must be >= 0, batch >= 1, size >= 32")
        if not 0 <= self.min_overlap < 1 or self.pairs_per_scene < 0:
            raise ValueError(f"need 0 <= min_overlap < 1 and pairs_per_scene >= 0, got {self.min_overlap} and "
                             f"{self.pairs_per_scene}")


def load_aliked_backbone(net: IMAMatchNet, path: str | Path) -> None:
    """Copy ALIKED-n16 weights (a plain state dict; loaded with ``weights_only=True``) into the backbone. The
    distilled stand-ins (``stem="s2d"``, ``mid="lite"``, ``deep="plain"``) have no ALIKED weights: a
    ``ValueError`` says so."""
    conf = net.conf
    if conf.stem != "aliked" or conf.mid != "aliked" or conf.deep != "aliked":
        raise ValueError(f"--init-aliked fills ALIKED's own blocks, but this network has stem={conf.stem!r}, "
                         f"mid={conf.mid!r}, deep={conf.deep!r}: those stand-ins are distilled from a trained "
                         f"network (scripts/distil_stem.py); train with stem, mid and deep 'aliked' first, or "
                         f"start from --init FILE")
    sd = torch.load(str(path), map_location="cpu", weights_only=True)
    mapped = {}
    for k, v in sd.items():
        nk = LocalFeatureBackbone.aliked_key_map(k)
        if nk is not None:
            mapped[nk] = v
    net.backbone.load_state_dict(mapped, strict=True)


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """Learning-rate multiplier at ``step`` (0-based): linear warm-up, then ``cfg.schedule``."""
    if step < cfg.warmup:
        return (step + 1) / cfg.warmup
    if cfg.schedule == "step":
        return cfg.decay ** ((step - cfg.warmup) // cfg.decay_every)
    t = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))


def make_transfers(batch: dict[str, torch.Tensor]) -> tuple[Transfer, Transfer]:
    """Point transfer 0→1 and 1→0 from a batch with a homography ``H`` or with ``depth0/1``, ``K0/1``, ``T_0to1``."""
    if "H" in batch:
        return homography_transfer(batch["H"]), inverse_homography_transfer(batch["H"])
    T = batch["T_0to1"].double()
    K0, K1 = batch["K0"].double(), batch["K1"].double()
    return (depth_transfer(batch["depth0"], batch["depth1"], K0, K1, T),
            depth_transfer(batch["depth1"], batch["depth0"], K1, K0, torch.linalg.inv(T)))


def training_step(net: IMAMatchNet, batch: dict[str, torch.Tensor], loss_cfg: LossConfig,
                  gen: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
    """One forward pass on a batch of pairs (homography or depth + pose); returns the total loss and its parts."""
    img0, img1 = batch["image0"], batch["image1"]
    enc = net.encode(img0, img1)
    if "H" not in batch and "depth0" not in batch:
        return _epipolar_step(net, enc, batch, loss_cfg)
    fwd, bwd = make_transfers(batch)
    gt = coarse_truth(fwd, bwd, img0.shape[0], enc.grid0, enc.grid1, img0.device)
    parts = {"coarse": coarse_focal_loss(enc.conf, gt, loss_cfg.focal_alpha, loss_cfg.focal_gamma,
                                         loss_cfg.neg_weight)}
    geometry = (batch["K0"], batch["K1"], batch["T_0to1"]) if "T_0to1" in batch else None
    parts.update(fine_losses(net, enc, gt, fwd, loss_cfg, gen, geometry))
    total = (loss_cfg.w_coarse * parts["coarse"] + loss_cfg.w_regress * parts["regress"]
             + loss_cfg.w_classify * parts["classify"] + loss_cfg.w_refine * parts["refine"]
             + loss_cfg.w_pose * parts.get("pose", 0.0))
    stats = {k: float(v.detach()) for k, v in parts.items()}
    stats["positives"] = float(len(gt.b)) / img0.shape[0]
    return total, stats


def _epipolar_step(net: IMAMatchNet, enc, batch: dict[str, torch.Tensor],
                   loss_cfg: LossConfig) -> tuple[torch.Tensor, dict[str, float]]:
    """Posed images without depth: epipolar losses on the coarse distribution and on the fine matches of the
    network's own (detached) coarse matches."""
    from .losses import epipolar_coarse_loss, fundamental, pointwise_epipolar_distance

    Fm = fundamental(batch["K0"].double(), batch["K1"].double(), batch["T_0to1"].double())
    parts = {"coarse": epipolar_coarse_loss(enc.conf, enc.grid0, enc.grid1, Fm)}
    with torch.no_grad():
        m = select_matches(enc.conf.detach(), 0.0)
        keep = torch.argsort(m.confidence, descending=True)[: loss_cfg.fine_samples * enc.conf.shape[0]]
        m = CoarseMatches(m.b[keep], m.i0[keep], m.i1[keep], m.confidence[keep])
        q = make_queries(m, enc.grid0[1], enc.grid1[1], torch.ones_like(m.confidence, dtype=torch.bool), 4)
    fr = net.fine(enc.fine0, enc.fine1, q.b, q.query0, q.ref1)
    p0 = q.query0 * 2 + 0.5
    Fq = Fm[q.b]
    terms = [(pointwise_epipolar_distance(p0.double(), (pos * 2 + 0.5).double(), Fq) / (2 * scale)).clamp(max=1.0)
             .mean().float() for pos, scale in ((fr.stage1, 3.0), (fr.match1, 1.5)) if len(pos)]
    parts["refine"] = torch.stack(terms).mean() if terms else enc.conf.sum() * 0
    total = loss_cfg.w_coarse * parts["coarse"].float() + loss_cfg.w_refine * parts["refine"]
    return total, {k: float(v.detach()) for k, v in parts.items()}


def _frozen_statistics(net: IMAMatchNet, cfg: TrainConfig) -> list[torch.nn.Module]:
    """Modules kept in eval mode while training: the frozen backbone, or the BatchNorms of a trained backbone that
    starts from pretrained weights (unless ``backbone_bn_stats`` says otherwise)."""
    if cfg.freeze_backbone:
        return [net.backbone]
    update = cfg.backbone_bn_stats
    if update is None:
        update = cfg.init is None and cfg.init_aliked is None  # from scratch
    if update:
        return []
    return [m for m in net.backbone.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]


def _save_state(path: Path, state: dict) -> None:
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


class _Step(torch.nn.Module):
    """Wraps the network so that one training step is a ``forward`` (what DistributedDataParallel syncs)."""

    def __init__(self, net: IMAMatchNet, loss_cfg: LossConfig) -> None:
        super().__init__()
        self.net, self.loss_cfg = net, loss_cfg

    def forward(self, batch: dict[str, torch.Tensor], gen: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
        return training_step(self.net, batch, self.loss_cfg, gen)


def _data(cfg: TrainConfig, rank: int, world: int, step: int) -> Iterator[dict[str, torch.Tensor]]:
    """Endless batches for this rank."""
    if cfg.dataset in PHOTO_DATASETS:
        # homography pairs, 3D scene pairs, or both in turn (by the global step, so a resume keeps the order)
        seed = (cfg.seed * 7919 + step) * 64 + rank
        photos = load_photos(cfg.folders)  # read once, shared by both kinds
        kinds = []
        if cfg.dataset != "scenes":
            kinds.append(SyntheticPairs(cfg.folders, WarpConfig(size=cfg.size, perspective=cfg.perspective), seed=seed,
                                        photos=photos))
        if cfg.dataset != "synthetic":
            kinds.append(ScenePairs(cfg.folders, SceneConfig(size=cfg.size), seed=seed, photos=photos))
        streams = [iter(torch.utils.data.DataLoader(d, batch_size=cfg.batch, num_workers=0)) for d in kinds]
        for k in itertools.count(step):
            yield next(streams[k % len(streams)])
    from ..data.depth_pairs import DepthPairs
    from ..data.posed import PosedPairs
    from ..data.scannet_train import ScanNetTrainPairs, scannet_training_pairs
    from ..data.standard import megadepth_pairs

    if cfg.dataset == "posed":
        if not cfg.root:
            raise DataError("dataset 'posed' needs --root (a folder with transforms.json or a COLMAP model)")
        data = PosedPairs(cfg.root, long_side=cfg.size)
    else:
        if not cfg.root or not cfg.index:
            raise DataError(f"dataset {cfg.dataset!r} needs --root and --index")
        if cfg.dataset == "megadepth":
            data = DepthPairs(cfg.root, megadepth_pairs(cfg.index, cfg.index_list or "train_list.txt"),
                              long_side=cfg.size, pad_to=cfg.size)
        else:
            root, pairs = scannet_training_pairs(cfg.index, cfg.root, cfg.index_list, cfg.min_overlap,
                                                 cfg.pairs_per_scene, cfg.seed)
            data = DepthPairs(root, pairs, long_side=cfg.size, pad_to=None)
    epoch = step * cfg.batch * world // max(1, len(data))
    while True:
        if isinstance(data, DepthPairs) and isinstance(data.pairs, ScanNetTrainPairs):
            data.pairs.set_epoch(epoch)  # before the loader's workers copy the dataset
        sampler = torch.utils.data.distributed.DistributedSampler(data, world, rank, shuffle=True, seed=cfg.seed)
        sampler.set_epoch(epoch)
        yield from torch.utils.data.DataLoader(data, batch_size=cfg.batch, sampler=sampler, num_workers=2)
        epoch += 1


def _to(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def train(cfg: TrainConfig) -> Path:
    """Train (or resume, if ``cfg.out`` holds a checkpoint) and return the path of the last weights.

    Under ``torchrun`` (``WORLD_SIZE`` > 1) it trains with DistributedDataParallel (gloo on CPU, NCCL on GPU);
    rank 0 writes checkpoints and logs.
    """
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    device = torch.device(cfg.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    weights_path, state_path, log_path = out / "last.safetensors", out / "state.pt", out / "log.jsonl"
    torch.manual_seed(cfg.seed)
    resume = weights_path.exists() and state_path.exists()
    init = read_weights(cfg.init) if cfg.init and not resume else None
    conf: MatcherConfig = PRESETS[cfg.preset]
    if init is not None and init[1] is not None:  # the init file's architecture, unless --arch changes it
        conf = conf.with_architecture_of(init[1])
    conf = conf.replace(**cfg.architecture)
    net = IMAMatchNet(conf)
    step = 0
    state = None
    if resume:
        tensors, stored, _ = read_weights(weights_path)
        conf = stored or conf
        net = IMAMatchNet(conf)
        load_into(net, tensors, weights_path)
        state = torch.load(state_path, map_location="cpu", weights_only=True)
        step = int(state["step"])
        if rank == 0:
            print(f"resuming from {weights_path} at step {step}")
    else:
        if init is not None:
            tensors = init[0]
            own = net.state_dict()
            fit = {k: v.to(own[k].dtype) for k, v in tensors.items() if k in own and own[k].shape == v.shape}
            net.load_state_dict(fit, strict=False)
            if rank == 0:
                print(f"initialised {len(fit)} of {len(own)} tensors from {cfg.init}")
        elif cfg.init_aliked:
            load_aliked_backbone(net, cfg.init_aliked)
        if rank == 0:
            (out / "train_config.json").write_text(json.dumps(asdict(cfg), indent=2))
    if cfg.freeze_backbone:
        for p in net.backbone.parameters():
            p.requires_grad_(False)
    if cfg.train_only:
        for name, p in net.named_parameters():
            if not name.startswith(tuple(cfg.train_only)):
                p.requires_grad_(False)
    if not any(p.requires_grad for p in net.parameters()):
        raise ValueError(f"no parameters to train (train_only={cfg.train_only}, freeze_backbone={cfg.freeze_backbone})")
    net.to(device)
    model: torch.nn.Module = _Step(net, cfg.loss)
    if world > 1:
        model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=True)
    params = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if state is not None:
        opt.load_state_dict(state["optimizer"])
    gen = torch.Generator().manual_seed(cfg.seed * 1000003 + step * 64 + rank)
    it = _data(cfg, rank, world, step)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.amp and device.type == "cuda")
    frozen_stats = _frozen_statistics(net, cfg)
    start = time.time()
    bar = tqdm(total=cfg.steps, initial=step, desc="train", dynamic_ncols=True, disable=rank != 0)
    running: dict[str, float] = {}
    while step < cfg.steps:
        net.train()
        for mod in frozen_stats:
            mod.eval()
        for g in opt.param_groups:
            g["lr"] = cfg.lr * lr_factor(step, cfg)
        with autocast:
            loss, stats = model(_to(next(it), device), gen)
        opt.zero_grad(set_to_none=True)
        # a batch can carry no gradient: e.g. with only the fine stages trained (``train_only``), a batch without
        # fine supervision leaves just the coarse loss, which does not depend on them
        if torch.isfinite(loss) and loss.requires_grad:
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, cfg.clip)
            opt.step()
        step += 1
        for k, v in stats.items():
            running[k] = 0.95 * running.get(k, v) + 0.05 * v
        bar.update(1)
        bar.set_postfix({k: f"{v:.3f}" for k, v in running.items() if k != "positives"})
        timed_out = cfg.max_minutes is not None and time.time() - start > cfg.max_minutes * 60
        if world > 1:  # every rank must agree on stopping
            flag = torch.tensor([float(timed_out)])
            dist.all_reduce(flag)
            timed_out = bool(flag.item() > 0)
        if step % cfg.ckpt_every == 0 or step == cfg.steps or timed_out:
            if rank == 0:
                save_weights(net, conf, weights_path, step=str(step))
                _save_state(state_path, {"step": step, "optimizer": opt.state_dict()})
                with open(log_path, "a") as f:
                    f.write(json.dumps({"step": step, "time": time.time(), **running}) + "\n")
            if world > 1:
                dist.barrier()
        if timed_out:
            if rank == 0:
                print(f"stopping after {cfg.max_minutes} min at step {step}; run again to resume")
            break
    bar.close()
    return weights_path
