"""`imamatch eval homography`: HPatches' and the Oxford affine set's folder layouts, with known homographies."""

import cv2
import numpy as np
import pytest
from skimage import data

from imamatch.errors import DataError
from imamatch.eval.standard import evaluate_homography_folder, homography_pairs, hpatches_sequences


def _homographies():
    rng = np.random.default_rng(3)
    out = []
    for k in range(2, 7):
        s = 1 + 0.06 * k
        a = np.deg2rad(4 * k)
        H = np.array([[s * np.cos(a), -s * np.sin(a), 12.0 * k], [s * np.sin(a), s * np.cos(a), -8.0 * k],
                      [rng.uniform(-1, 1) * 2e-4, rng.uniform(-1, 1) * 2e-4, 1]])
        out.append(H)
    return out


def _write_sequence(folder, image_name, h_name):
    folder.mkdir(parents=True)
    img = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2GRAY)
    cv2.imwrite(str(folder / (image_name.format(1) + ".png")), img)
    for k, H in zip(range(2, 7), _homographies()):
        cv2.imwrite(str(folder / (image_name.format(k) + ".png")), cv2.warpPerspective(img, H, img.shape[::-1]))
        np.savetxt(folder / h_name.format(k), H)


@pytest.fixture(scope="module")
def layouts(tmp_path_factory):
    root = tmp_path_factory.mktemp("homography")
    _write_sequence(root / "hpatches" / "v_astronaut", "{}", "H_1_{}")
    _write_sequence(root / "oxford", "img{}", "H1to{}p")  # the root itself is the sequence
    return root


def test_both_layouts_are_found_with_their_five_pairs(layouts):
    (seq,) = hpatches_sequences(layouts / "hpatches")
    assert [p[1].name for p in homography_pairs(seq)] == [f"{k}.png" for k in range(2, 7)]
    assert hpatches_sequences(layouts / "oxford") == [layouts / "oxford"]
    assert [p[2].name for p in homography_pairs(layouts / "oxford")] == [f"H1to{k}p" for k in range(2, 7)]
    (layouts / "empty").mkdir(exist_ok=True)
    with pytest.raises(DataError, match="H1to2p"):
        hpatches_sequences(layouts / "empty")


def test_matching_recovers_the_known_homographies(matcher, layouts):
    def match(a, b):
        r = matcher.match(a, b)
        return r["keypoints0"], r["keypoints1"]

    for layout in ("hpatches", "oxford"):
        res = evaluate_homography_folder(match, layouts / layout)
        assert res["pairs"] == 5 and res["auc3"] > 0.9, (layout, res)  # measured 0.976: ~0.07 px corner error


def test_graffiti_in_its_own_layout(matcher, shared):
    def match(a, b):
        r = matcher.match(a, b)
        return r["keypoints0"], r["keypoints1"]

    res = evaluate_homography_folder(match, shared / "graf")
    assert res["pairs"] == 5 and res["auc10"] > 0.6, res
