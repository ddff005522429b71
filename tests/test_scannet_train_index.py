"""ScanNet's training index in LoFTR's format (``scene_data/train/sceneXXXX_XX.npz`` with ``name`` and ``score``,
``scene_data/train_list/*.txt``, ``intrinsics.npz``) on two miniature scenes of the ray-cast room: the overlap
filter, the per-scene draws of each epoch, relative poses and depth transfer against the exact projection, the
trainer's choice of index, and clear errors for malformed files."""

import shutil
from collections import Counter

import numpy as np
import pytest

from imamatch.cli import build_parser, train_config_from_args
from imamatch.data.depth_pairs import DepthPairs
from imamatch.data.scannet_train import ScanNetTrainPairs, scannet_training_pairs
from imamatch.errors import DataError
from imamatch.train.trainer import TrainConfig, _data

from mini_scannet import PAIRS, SCENE, W, K, assert_warp_is_exact, camera_to_world, room_planes, write_scene

# (scene, sub-scene, frame0, frame1): overlap score; LoFTR keeps score > 0.4 (0.4 itself is dropped)
SCORES = {(707, 0, 0, 15): 0.7, (707, 0, 15, 0): 0.35, (707, 0, 0, 45): 0.5, (707, 0, 45, 0): 0.2,
          (707, 0, 15, 45): 0.8, (707, 0, 45, 15): 0.4,
          (708, 1, 0, 15): 0.9, (708, 1, 15, 45): 0.45, (708, 1, 45, 0): 0.1, (708, 1, 15, 0): 0.05}
KEPT = sorted(k for k, s in SCORES.items() if s > 0.4)
SCENES = {"scene0707_00": (707, 0), "scene0708_01": (708, 1)}


def _scene_file(path, scene: tuple[int, int], **arrays) -> None:
    rows = [k for k in SCORES if k[:2] == scene]
    arrays = {"name": np.array(rows, np.uint16), "score": np.array([SCORES[k] for k in rows]), **arrays}
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})


@pytest.fixture(scope="module")
def mini_train(tmp_path_factory):
    """``root/scans/<scene>/{color,depth,pose}``, ``root/index/intrinsics.npz``, ``root/index/scene_data/train/
    <scene>.npz`` and ``root/index/scene_data/train_list/scannet_all.txt`` (both scenes the same room)."""
    root = tmp_path_factory.mktemp("scannet_train")
    planes = room_planes()
    write_scene(root / "scans" / SCENE, planes)
    shutil.copytree(root / "scans" / SCENE, root / "scans" / "scene0708_01")
    train = root / "index" / "scene_data" / "train"
    train.mkdir(parents=True)
    for name, scene in SCENES.items():
        _scene_file(train / f"{name}.npz", scene)
    np.savez(root / "index" / "intrinsics.npz", **{name: K for name in SCENES})
    (root / "index" / "scene_data" / "train_list").mkdir()
    (root / "index" / "scene_data" / "train_list" / "scannet_all.txt").write_text(
        "".join(f"{n}.npz\n" for n in SCENES))
    return root, root / "index", planes


def _rows(pairs: ScanNetTrainPairs) -> list[tuple[int, ...]]:
    return [tuple(int(v) for v in r) for r in pairs.names]


def test_overlap_filter_and_per_scene_draws(mini_train, tmp_path):
    root, index, _ = mini_train
    every = ScanNetTrainPairs(index, root, per_scene=0)
    assert sorted(_rows(every)) == KEPT and every.root == root / "scans"
    assert [p.overlap for p in every[:]] == pytest.approx([SCORES[r] for r in _rows(every)])
    assert len(ScanNetTrainPairs(index, root, min_overlap=0.0, per_scene=0)) == len(SCORES)
    # the list file, the scene folder itself and a list without the .npz suffix name the same files
    listed = ScanNetTrainPairs(index, root, "scene_data/train_list/scannet_all.txt", per_scene=0)
    assert _rows(listed) == _rows(every)
    assert _rows(ScanNetTrainPairs(index / "scene_data" / "train", root, per_scene=0)) == _rows(every)
    (tmp_path / "one.txt").write_text("scene0708_01\n")  # an absolute list path
    one = ScanNetTrainPairs(index, root, str(tmp_path / "one.txt"), per_scene=0)
    assert sorted(_rows(one)) == [k for k in KEPT if k[0] == 708]

    four = ScanNetTrainPairs(index, root, per_scene=4, seed=5)  # more than kept: every kept pair, then repeats
    assert Counter(r[:2] for r in _rows(four)) == {(707, 0): 4, (708, 1): 4}
    assert set(_rows(four)) == set(KEPT)
    two = ScanNetTrainPairs(index, root, per_scene=2, seed=5)  # fewer than kept: distinct pairs, new each epoch
    seen = set()
    for epoch in range(8):
        two.set_epoch(epoch)
        rows = _rows(two)
        assert Counter(r[:2] for r in rows) == {(707, 0): 2, (708, 1): 2} and len(set(rows)) == 4
        assert set(rows) <= set(KEPT)
        seen |= set(rows)
    assert seen == set(KEPT)
    again = ScanNetTrainPairs(index, root, per_scene=2, seed=5)
    again.set_epoch(7)
    assert _rows(again) == rows  # the same draw on every process for one seed and epoch


def test_relative_pose_and_depth_transfer_are_exact(mini_train):
    root, index, planes = mini_train
    pairs = ScanNetTrainPairs(index, root, per_scene=0)
    ds = DepthPairs(pairs.root, pairs, long_side=W, pad_to=None)
    for i, (_, _, f0, f1) in enumerate(_rows(pairs)):
        p = pairs[i]
        np.testing.assert_allclose(p.T_0to1, np.linalg.inv(camera_to_world(f1)) @ camera_to_world(f0), atol=1e-6)
        np.testing.assert_allclose(p.K0, K)
        assert (f0, f1) in PAIRS  # the kept pairs are those the room's truth covers
        assert_warp_is_exact(ds[i], f0, f1, planes)


def test_trainer_reads_either_kind_of_scannet_index(mini_train, tmp_path):
    root, index, _ = mini_train
    cfg = TrainConfig(folders=[], out="", dataset="scannet", root=str(root), index=str(index), size=W, batch=3,
                      pairs_per_scene=2)
    it = _data(cfg, 0, 1, 0)
    batch = next(it)
    it.close()
    assert batch["image0"].shape == (3, 1, 128, W) and batch["depth1"].shape == (3, 128, W)
    truth = [np.linalg.inv(camera_to_world(f1)) @ camera_to_world(f0) for f0, f1 in PAIRS]
    for T in batch["T_0to1"].numpy():
        assert min(np.abs(T - t).max() for t in truth) < 1e-6
    # a test.npz folder still gives its fixed pairs
    test = tmp_path / "test_index"
    test.mkdir()
    np.savez(test / "test.npz", name=np.array([[707, 0, 0, 15]], np.uint16),
             rel_pose=(np.linalg.inv(camera_to_world(15)) @ camera_to_world(0))[:3].reshape(1, 12))
    np.savez(test / "intrinsics.npz", **{SCENE: K})
    scene_root, fixed = scannet_training_pairs(test, root)
    assert scene_root == root / "scans" and isinstance(fixed, list) and len(fixed) == 1
    cli = train_config_from_args(build_parser().parse_args(
        ["train", "--config", "scannet", "--out", "o", "--min-overlap", "0.5", "--pairs-per-scene", "0"]))
    assert (cli.min_overlap, cli.pairs_per_scene, cli.index_list) == (0.5, 0, None)


def _index(tmp_path, scenes=("scene0707_00", "scene0708_01"), Ks=tuple(SCENES), **arrays):
    folder = tmp_path / "idx"
    folder.mkdir(parents=True, exist_ok=True)
    for name in scenes:
        _scene_file(folder / f"{name}.npz", SCENES[name], **arrays)
    if Ks is not None:
        np.savez(folder / "intrinsics.npz", **{k: K for k in Ks})
    return folder


@pytest.mark.parametrize("arrays, message", [
    ({"score": None}, "lacks 'score'"),
    ({"name": np.zeros((2, 3), np.int64)}, r"expected name to be \(N, 4\) integers"),
    ({"name": np.zeros((2, 4), np.float32)}, r"expected name to be \(N, 4\) integers"),
    ({"name": np.array([[707, 0, -1, 15]])}, "negative"),
    ({"score": np.ones(2)}, r"expected score to be \(6,\) numbers"),
    ({"score": np.array(["a"] * 6)}, "expected score"),
    ({"name": np.array([None] * 4, object).reshape(1, 4)}, "not an npz file of plain arrays"),
])
def test_malformed_scene_files_give_clear_errors(mini_train, tmp_path, arrays, message):
    with pytest.raises(DataError, match=message):
        ScanNetTrainPairs(_index(tmp_path, scenes=("scene0707_00",), **arrays), mini_train[0])


def test_bad_training_indices_give_clear_errors(mini_train, tmp_path):
    root = mini_train[0]
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "intrinsics.npz").write_bytes(b"")
    with pytest.raises(DataError, match="expected test.npz and intrinsics.npz .* per-scene sceneXXXX_XX.npz"):
        scannet_training_pairs(tmp_path / "empty", root)
    with pytest.raises(DataError, match="index folder not found"):
        scannet_training_pairs(tmp_path / "nowhere", root)
    with pytest.raises(DataError, match="intrinsics.npz not found"):
        ScanNetTrainPairs(_index(tmp_path / "a", Ks=None), root)
    with pytest.raises(DataError, match="has no intrinsics for scene0708_01"):
        ScanNetTrainPairs(_index(tmp_path / "b", Ks=("scene0707_00",)), root)
    folder = _index(tmp_path / "c")
    (folder / "scene0709_00.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="scene0709_00.npz: not an npz file"):
        ScanNetTrainPairs(folder, root)
    (folder / "list.txt").write_text("scene0707_00\nscene0710_00\n")
    with pytest.raises(DataError, match="1 of the 2 ScanNet scene files are missing, e.g. .*scene0710_00.npz"):
        ScanNetTrainPairs(folder, root, "list.txt")
    with pytest.raises(DataError, match="scene list not found"):
        ScanNetTrainPairs(folder, root, "nolist.txt")
    (folder / "first.txt").write_text("scene0707_00\n")
    with pytest.raises(DataError, match="no pair of the 1 ScanNet scene files .* above 0.95"):
        ScanNetTrainPairs(folder, root, "first.txt", min_overlap=0.95)
    with pytest.raises(ValueError, match="min_overlap"):
        TrainConfig(folders=[], out="", min_overlap=1.0)
