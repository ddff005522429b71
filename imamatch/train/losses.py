"""Training losses: focal loss on the coarse assignment, L2 on the regressed offsets, cross-entropy on the
classification heatmap, L2 on the refinement offsets."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..densify import cell_centres, sub_offsets
from ..fine import window_offsets
from ..model import Encoded, IMAMatchNet
from .supervision import CoarseTruth, Transfer


@dataclass(frozen=True)
class LossConfig:
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    neg_weight: float = 1.0
    fine_samples: int = 256          # fine queries per pair
    w_coarse: float = 1.0
    w_regress: float = 1.0
    w_classify: float = 1.0
    w_refine: float = 1.0
    w_pose: float = 0.0              # end-to-end pose loss (needs K0/K1/T_0to1 in the batch)


def coarse_focal_loss(conf: torch.Tensor, gt: CoarseTruth, alpha: float, gamma: float,
                      neg_weight: float) -> torch.Tensor:
    """Focal loss on the dual-softmax matrix ``conf`` ``(B, L0, L1)``; positives from ``gt``."""
    p = conf.clamp(1e-6, 1 - 1e-6)
    pos_mask = torch.zeros_like(conf, dtype=torch.bool)
    pos_mask[gt.b, gt.i0, gt.i1] = True
    pp = p[pos_mask]
    loss_pos = -(alpha * (1 - pp) ** gamma * pp.log()).mean() if len(pp) else conf.sum() * 0
    pn = p[~pos_mask]
    loss_neg = -((1 - alpha) * pn ** gamma * (1 - pn).log()).mean()
    return loss_pos + neg_weight * loss_neg


def fine_losses(net: IMAMatchNet, enc: Encoded, gt: CoarseTruth, forward: Transfer, cfg: LossConfig,
                generator: torch.Generator | None = None,
                geometry: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """Fine losses on up to ``cfg.fine_samples`` ground-truth coarse matches per pair, each with a random
    sub-point of its cell as query (so densified queries are trained too). With ``geometry`` = (K0, K1,
    T_0to1) and ``cfg.w_pose`` > 0 also the end-to-end pose loss on the fine matches, weighted by their coarse
    confidences."""
    dev = enc.conf.device
    batch = enc.conf.shape[0]
    n_max = cfg.fine_samples * batch
    perm = torch.randperm(len(gt.b), generator=generator)[:n_max].to(dev)
    b, i0, i1 = gt.b[perm], gt.i0[perm], gt.i1[perm]
    lattice = torch.cat([torch.zeros(1, 2), sub_offsets(2), sub_offsets(4)]).to(dev)
    pick = torch.randint(len(lattice), (len(b),), generator=generator).to(dev)
    query0 = cell_centres(i0, enc.grid0[1]) + lattice[pick]
    ref1 = cell_centres(i1, enc.grid1[1])
    # ground truth position in image 1 (half-res)
    pts0 = query0 * 2 + 0.5
    gt1, ok = forward(pts0, b)
    gt1 = (gt1 - 0.5) / 2
    zero = enc.conf.sum() * 0
    out = {"regress": zero, "classify": zero, "refine": zero}
    if geometry is not None and cfg.w_pose > 0:
        out["pose"] = zero
    if len(b) == 0:
        return out
    fr = net.fine(enc.fine0, enc.fine1, b, query0, ref1)
    stage = net.fine.stage1
    t1 = gt1 - ref1
    m1 = ok & (t1.abs().amax(-1) <= stage.bound)
    if m1.any():
        out["regress"] = (((fr.offset1 - t1) / stage.bound) ** 2).sum(-1)[m1].mean()
        grid = window_offsets(stage.size, dev)
        nearest = torch.cdist(t1[m1].float(), grid).argmin(-1)
        out["classify"] = -fr.heat[m1].gather(1, nearest[:, None]).clamp_min(1e-6).log().mean()
    bound2 = net.fine.stage2.bound
    terms = []
    for off2, ref2 in zip(fr.offsets2, fr.refs2):
        t2 = gt1 - ref2
        m2 = ok & (t2.abs().amax(-1) <= bound2)
        if m2.any():
            terms.append((((off2 - t2) / bound2) ** 2).sum(-1)[m2].mean())
    if terms:
        out["refine"] = torch.stack(terms).mean()
    if "pose" in out:
        K0, K1, T = (g.to(torch.float64) for g in geometry)
        conf = enc.conf[b, i0, i1]
        losses = []
        for bi in range(batch):
            sel = b == bi
            if sel.sum() >= 8:
                kp0 = pts0[sel][None].double()
                kp1 = (fr.match1[sel] * 2 + 0.5)[None].double()
                losses.append(pose_loss(kp0, kp1, conf[sel][None].double(), K0[bi:bi + 1], K1[bi:bi + 1],
                                        T[bi:bi + 1, :3, :3], T[bi:bi + 1, :3, 3]))
        if losses:
            out["pose"] = torch.stack(losses).mean().to(zero.dtype)
    return out


def pose_loss(kpts0: torch.Tensor, kpts1: torch.Tensor, confidence: torch.Tensor, K0: torch.Tensor,
              K1: torch.Tensor, R_gt: torch.Tensor, t_gt: torch.Tensor, iters: int = 5) -> torch.Tensor:
    """End-to-end pose loss: the relative pose after the differentiable bundle adjustment, started at the
    ground-truth pose, against the ground truth — i.e. how far the weighted matches pull the BA optimum away
    from the truth. Gradients reach the fine positions and the confidences.

    ``kpts*`` ``(B, N, 2)`` pixels, ``confidence`` ``(B, N)``, ``K*`` ``(B, 3, 3)``, ``R_gt`` ``(B, 3, 3)``,
    ``t_gt`` ``(B, 3)``. Returns the mean of (rotation angle + translation angle) in radians.
    """
    from ..ba import bundle_adjust

    def norm(k: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
        return (k - K[:, None, :2, 2]) / torch.stack([K[:, 0, 0], K[:, 1, 1]], -1)[:, None]

    res = bundle_adjust(norm(kpts0, K0), norm(kpts1, K1), R_gt, t_gt, confidence, iters=iters)
    cos_r = ((res.R * R_gt).sum((-1, -2)) - 1) / 2
    rot = torch.acos(cos_r.clamp(-1 + 1e-7, 1 - 1e-7))
    tn = t_gt / t_gt.norm(dim=-1, keepdim=True)
    trans = torch.acos((res.t * tn).sum(-1).abs().clamp(max=1 - 1e-7))
    return (rot + trans).mean()


def epipolar_distance(p0: torch.Tensor, p1: torch.Tensor, F: torch.Tensor) -> torch.Tensor:
    """Symmetric point-to-epipolar-line distance (pixels) for points ``(B, N, 2)`` / ``(B, M, 2)`` under
    fundamental matrices ``F`` ``(B, 3, 3)`` (``x1ᵀ F x0 = 0``): all pairs, ``(B, N, M)``."""
    h0 = torch.cat([p0, torch.ones_like(p0[..., :1])], -1)
    h1 = torch.cat([p1, torch.ones_like(p1[..., :1])], -1)
    l1 = h0 @ F.transpose(1, 2)                      # lines in image 1 of the image-0 points (B, N, 3)
    l0 = h1 @ F                                      # lines in image 0 of the image-1 points (B, M, 3)
    num = torch.einsum("bnk,bmk->bnm", l1, h1).abs()
    d1 = num / l1[..., :2].norm(dim=-1).clamp_min(1e-9)[..., None]
    d0 = num / l0[..., :2].norm(dim=-1).clamp_min(1e-9)[:, None, :]
    return 0.5 * (d0 + d1)


def pointwise_epipolar_distance(p0: torch.Tensor, p1: torch.Tensor, F: torch.Tensor) -> torch.Tensor:
    """Symmetric epipolar distance (pixels) of corresponding points ``(N, 2)`` under ``F`` (3×3, or one per
    point ``(N, 3, 3)``): ``(N,)``."""
    return epipolar_distance(p0[:, None], p1[:, None], F.expand(len(p0), 3, 3))[:, 0, 0]


def fundamental(K0: torch.Tensor, K1: torch.Tensor, T: torch.Tensor) -> torch.Tensor:
    """``F = K1⁻ᵀ [t]× R K0⁻¹`` from ``T_0to1`` ``(B, 4, 4)``."""
    from ..ba import skew

    E = skew(T[:, :3, 3]) @ T[:, :3, :3]
    return torch.linalg.inv(K1).transpose(1, 2) @ E @ torch.linalg.inv(K0)


def epipolar_coarse_loss(conf: torch.Tensor, grid0: tuple[int, int], grid1: tuple[int, int], F: torch.Tensor,
                         cap: float = 32.0) -> torch.Tensor:
    """Posed images without depth: the expected epipolar distance of each image-0 cell's match distribution
    (dual-softmax rows renormalised), capped at ``cap`` px and divided by it. ``conf`` ``(B, L0, L1)``."""
    from .supervision import cell_grid

    c0 = cell_grid(*grid0, device=conf.device).expand(conf.shape[0], -1, -1).to(F.dtype)
    c1 = cell_grid(*grid1, device=conf.device).expand(conf.shape[0], -1, -1).to(F.dtype)
    d = epipolar_distance(c0, c1, F).clamp(max=cap).to(conf.dtype) / cap
    rows = conf / conf.sum(-1, keepdim=True).clamp_min(1e-9)
    return (rows * d).sum(-1).mean()
