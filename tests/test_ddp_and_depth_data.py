"""A miniature MegaDepth written in the exact on-disk formats (images, depth h5, scene-info pickle) from a
rendered planar scene with known depth and poses; depth supervision checked against the exact homography; and
two-process DDP training (gloo) on it."""

import json
import pickle
import subprocess
import sys

import cv2
import h5py
import numpy as np
import pytest
import torch
from skimage import data

from imamatch.data.depth_pairs import DepthPairs
from imamatch.data.standard import megadepth_pairs
from imamatch.train.supervision import coarse_truth, homography_transfer
from imamatch.train.trainer import make_transfers

W, H = 320, 240
K = np.array([[250.0, 0, 159.5], [0, 250, 119.5], [0, 0, 1]])


def _pose(k):
    ang = 0.08 * k
    R = np.array([[np.cos(ang), 0, np.sin(ang)], [0, 1, 0], [-np.sin(ang), 0, np.cos(ang)]])
    c = np.array([0.4 * k, 0.05 * k, 0.0])
    P = np.eye(4)
    P[:3, :3], P[:3, 3] = R, -R @ c  # world-to-camera
    return P


def _render(P, tex):
    """Plane z = 5 (world), textured; returns image and depth (camera z)."""
    R, t = P[:3, :3], P[:3, 3]
    c = -R.T @ t
    u, v = np.meshgrid(np.arange(W), np.arange(H))
    rays = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u, float)], -1) @ R
    s = (5.0 - c[2]) / rays[..., 2]
    X = c + s[..., None] * rays
    mx = ((X[..., 0] + 4) * 64).astype(np.float32)
    my = ((X[..., 1] + 3) * 64).astype(np.float32)
    img = cv2.remap(tex, mx, my, cv2.INTER_LINEAR)
    depth = ((X - c) @ R.T)[..., 2].astype(np.float32)
    return img, depth


@pytest.fixture(scope="module")
def mini_megadepth(tmp_path_factory):
    root = tmp_path_factory.mktemp("megadepth")
    tex = cv2.resize(data.astronaut().mean(-1).astype(np.uint8), (512, 384))
    (root / "Undistorted_SfM/0001/images").mkdir(parents=True)
    (root / "depths").mkdir()
    paths, dpaths, Ks, poses = [], [], [], []
    for k in range(3):
        P = _pose(k)
        img, depth = _render(P, tex)
        ip, dp = f"Undistorted_SfM/0001/images/{k}.jpg", f"depths/{k}.h5"
        cv2.imwrite(str(root / ip), img, [cv2.IMWRITE_JPEG_QUALITY, 95])
        with h5py.File(root / dp, "w") as f:
            f.create_dataset("depth", data=depth)
        paths.append(ip), dpaths.append(dp), Ks.append(K.copy()), poses.append(P)
    index = root / "index"
    index.mkdir()
    info = {"image_paths": np.array(paths, dtype=object), "depth_paths": np.array(dpaths, dtype=object),
            "intrinsics": np.array(Ks, dtype=object), "poses": np.array(poses, dtype=object),
            "pair_infos": [(np.array([0, 1]), 0.8, None), (np.array([1, 2]), 0.7, None)]}
    (index / "0001_0.1_0.7.npz").write_bytes(pickle.dumps(info))
    (index / "train_list.txt").write_text("0001_0.1_0.7\n")
    return root, index


def test_depth_supervision_on_the_miniature_dataset(mini_megadepth):
    root, index = mini_megadepth
    pairs = megadepth_pairs(index, "train_list.txt")
    assert len(pairs) == 2
    ds = DepthPairs(root, pairs, long_side=320, pad_to=320)
    item = ds[0]
    assert item["image0"].shape == (1, 320, 320) and item["depth0"].shape == (320, 320)
    batch = {k: v[None] for k, v in item.items()}
    fwd, bwd = make_transfers(batch)
    # exact answer: the plane z = 5 induces a homography between the two cameras
    P0, P1 = _pose(0), _pose(1)
    T = P1 @ np.linalg.inv(P0)
    n = P0[:3, :3] @ np.array([0, 0, 1.0])
    d = 5.0 + n @ P0[:3, 3]  # plane n·X0 = d in camera 0
    Hm = K @ (T[:3, :3] + np.outer(T[:3, 3], n) / d) @ np.linalg.inv(K)
    pts = torch.tensor([[50.0, 60.0], [160.0, 120.0], [250.0, 200.0]], dtype=torch.float64)
    b = torch.zeros(3, dtype=torch.long)
    p1, ok = fwd(pts.float(), b)
    ph, _ = homography_transfer(torch.as_tensor(Hm)[None])(pts, b)
    assert ok.any()
    np.testing.assert_allclose(p1[ok].double().numpy(), ph[ok].numpy(), atol=0.05)
    gt = coarse_truth(fwd, bwd, 1, (40, 40), (40, 40))
    assert len(gt.i0) > 300


def test_ddp_two_processes_gloo(mini_megadepth, tmp_path):
    root, index = mini_megadepth
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29571",
           "-m", "imamatch", "train", "--dataset", "megadepth", "--root", str(root), "--index", str(index),
           "--out", str(tmp_path / "run"), "--steps", "2", "--batch", "1", "--size", "160", "--ckpt-every", "1",
           "--threads", "1"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    steps = [json.loads(line)["step"] for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert steps == [1, 2]  # one writer (rank 0)


def test_pose_loss_in_a_training_step(mini_megadepth):
    from imamatch.config import PRESETS
    from imamatch.model import IMAMatchNet
    from imamatch.train.losses import LossConfig
    from imamatch.train.trainer import training_step

    root, index = mini_megadepth
    ds = DepthPairs(root, megadepth_pairs(index, "train_list.txt"), long_side=160, pad_to=160)
    batch = {k: v[None] for k, v in ds[0].items()}
    torch.manual_seed(0)
    net = IMAMatchNet(PRESETS["fast"])
    loss, stats = training_step(net, batch, LossConfig(w_pose=1.0), torch.Generator().manual_seed(0))
    assert "pose" in stats and stats["pose"] > 0
    loss.backward()
    assert net.fine.stage1.regress[-1].weight.grad.abs().sum() > 0
