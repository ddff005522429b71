"""Epipolar supervision for posed images without depth."""

import torch

from imamatch.train.losses import epipolar_coarse_loss, fundamental, pointwise_epipolar_distance
from imamatch.train.supervision import coarse_truth, homography_transfer

from test_depth_supervision import K, _plane_scene


def test_epipolar_distance_zero_for_true_matches_and_loss_prefers_truth():
    d0, d1, T, H = _plane_scene()
    F = fundamental(K[None], K[None], T)
    pts = torch.tensor([[30.0, 40.0], [100.0, 90.0]], dtype=torch.float64)
    p1, _ = homography_transfer(H)(pts, torch.zeros(2, dtype=torch.long))
    assert pointwise_epipolar_distance(pts, p1, F[0]).max() < 1e-6
    assert pointwise_epipolar_distance(pts, p1 + torch.tensor([0.0, 5.0], dtype=torch.float64), F[0]).min() > 1.0
    gt = coarse_truth(homography_transfer(H), homography_transfer(torch.linalg.inv(H)), 1, (16, 20), (16, 20))
    good = torch.full((1, 320, 320), 1e-6, dtype=torch.float64)
    good[0, gt.i0, gt.i1] = 1.0
    uniform = torch.full((1, 320, 320), 1.0 / 320, dtype=torch.float64)
    # rows without a true match (cells leaving the view) stay uniform in both
    assert epipolar_coarse_loss(good, (16, 20), (16, 20), F) < 0.5 * epipolar_coarse_loss(uniform, (16, 20), (16, 20), F)


def test_posed_training_step(shared):
    from imamatch.config import PRESETS
    from imamatch.data.posed import PosedPairs
    from imamatch.model import IMAMatchNet
    from imamatch.train.losses import LossConfig
    from imamatch.train.trainer import training_step

    ds = PosedPairs(shared / "fox", long_side=160)
    assert len(ds) > 100
    batch = {k: v[None] for k, v in ds[0].items()}
    net = IMAMatchNet(PRESETS["fast"])
    loss, stats = training_step(net, batch, LossConfig(), torch.Generator().manual_seed(0))
    assert set(stats) == {"coarse", "refine"} and torch.isfinite(loss)
    loss.backward()
    assert net.transformer.self_layers[0].q.weight.grad is not None
