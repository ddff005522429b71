"""The generated dev sets: an oracle that answers with the truth scores perfectly (also on pose), one shifted by
2 px fails the 1 px bar but passes the 3 px one, and the sets are the same on every call."""

import numpy as np
import pytest

from imamatch.data.synthetic import bundled_photo_folder
from imamatch.eval.dev import dev_pairs, eval_dev


def _oracle(pairs, shift: float):
    def run(a, b):
        pair = next(p for p in pairs if p.image0 is a)
        g = np.stack(np.meshgrid(np.arange(6.0, a.shape[1] - 6, 5), np.arange(6.0, a.shape[0] - 6, 5)), -1)
        k0 = g.reshape(-1, 2)
        k1 = pair.truth(k0)
        ok = np.isfinite(k1).all(1)
        return k0[ok], k1[ok] + [shift, 0.0]
    return run


@pytest.mark.parametrize("kind", ["homography", "scenes"])
def test_oracle_scores_perfectly_and_a_shifted_one_does_not(kind):
    pairs = dev_pairs([bundled_photo_folder()], kind, pairs=3, size=128)
    exact = eval_dev(_oracle(pairs, 0.0), pairs, progress=False)
    assert exact["within1"] == 1.0 and exact["matches"] > 50
    shifted = eval_dev(_oracle(pairs, 2.0), pairs, progress=False)
    assert shifted["within1"] == 0.0 and shifted["within3"] == 1.0
    if kind == "scenes":
        assert exact["auc5"] > 0.95, exact


def test_same_seed_same_pairs_and_bad_kind():
    a = dev_pairs([bundled_photo_folder()], "scenes", pairs=2, size=96)
    b = dev_pairs([bundled_photo_folder()], "scenes", pairs=2, size=96)
    assert all(np.array_equal(x.image1, y.image1) and np.array_equal(x.T_0to1, y.T_0to1) for x, y in zip(a, b))
    with pytest.raises(ValueError, match="kind"):
        dev_pairs([bundled_photo_folder()], "cubes")
