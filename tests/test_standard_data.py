"""Standard test indices (real files from ../shared/data/indices), the restricted unpickler, eval commands."""

import pickle
import subprocess
import sys

import numpy as np
import pytest

from imamatch.data.safe_pickle import safe_load
from imamatch.data.standard import megadepth_pairs, scannet_pairs
from imamatch.errors import DataError


def test_megadepth_1500_index(shared):
    pairs = megadepth_pairs(shared / "indices" / "megadepth_test_1500_scene_info")
    assert len(pairs) == 1500
    p = pairs[0]
    assert p.image0.startswith("Undistorted_SfM/") and p.depth0.endswith(".h5")
    R = p.T_0to1[:3, :3]
    np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-5)
    assert p.K0[2, 2] == 1 and p.K0[0, 0] > 100


def test_scannet_1500_index(shared):
    pairs = scannet_pairs(shared / "indices" / "scannet_test_1500")
    assert len(pairs) == 1500
    assert pairs[0].image0.endswith(".jpg") and "/color/" in pairs[0].image0
    R = pairs[0].T_0to1[:3, :3]
    np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-4)


class _Evil:
    def __reduce__(self):
        return (eval, ("__import__('os').system('touch /tmp/imamatch_evil')",))


def test_restricted_unpickler_refuses_code(tmp_path):
    p = tmp_path / "scene.npz"
    p.write_bytes(pickle.dumps({"poses": [np.eye(4)], "x": _Evil()}))
    with pytest.raises(DataError, match="refusing"):
        safe_load(p)
    ok = tmp_path / "ok.npz"
    ok.write_bytes(pickle.dumps({"a": np.arange(3), "b": [1.5, "s", (2, 3)]}))
    d = safe_load(ok)
    assert d["b"] == [1.5, "s", (2, 3)] and d["a"].tolist() == [0, 1, 2]


def test_eval_with_missing_data_names_what_is_missing(tmp_path, shared):
    r = subprocess.run([sys.executable, "-m", "imamatch", "eval", "megadepth1500", "--root", str(tmp_path),
                        "--index", str(shared / "indices" / "megadepth_test_1500_scene_info")],
                       capture_output=True, text=True)
    assert r.returncode == 1 and "1500" not in r.stdout
    assert "missing" in r.stderr and "Undistorted_SfM" in r.stderr
    r = subprocess.run([sys.executable, "-m", "imamatch", "eval", "scannet1500", "--root", str(tmp_path / "none")],
                       capture_output=True, text=True)
    assert r.returncode == 1 and "not found" in r.stderr
