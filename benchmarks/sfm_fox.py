"""Structure from motion on the posed fox sequence: imamatch pairs → COLMAP database → pycolmap mapper, then
registered images, reprojection error, track length and camera rotation errors against transforms.json.

    python benchmarks/sfm_fox.py [--data ../shared/data] [--out benchmarks/results/sfm_fox.md] [--window 5]
        [--pairs sequential|exhaustive|retrieval|sequential+retrieval] [--top 10] [--turn-every 5 [--rotations 4]]

``--turn-every K`` stores every K-th frame turned by a quarter (no EXIF tag: as a camera held sideways without
one writes it) in the work folder and reconstructs with one camera per image; the turned frames' estimated
rotations are turned back before they are compared with the truth.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from imamatch import IMAMatch, sfm
from imamatch.data.posed import load_transforms
from imamatch.eval.align import aligned_rotation_errors, umeyama


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[1].parent / "shared" / "data"))
    ap.add_argument("--work", default="/tmp/imamatch_sfm_fox")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "sfm_fox.md"))
    ap.add_argument("--window", type=int, default=5)
    ap.add_argument("--pairs", choices=("sequential", "exhaustive", "retrieval", "sequential+retrieval"),
                    default="sequential")
    ap.add_argument("--top", type=int, default=10, help="retrieval: pairs with the N most similar images")
    ap.add_argument("--resize", type=int, default=640)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--turn-every", type=int, default=0, help="store every K-th frame turned by a quarter")
    ap.add_argument("--rotations", type=int, choices=(1, 2, 4), default=1, help="MatcherConfig.rotations")
    a = ap.parse_args()
    fox = Path(a.data) / "fox"
    if not (fox / "transforms.json").is_file():
        sys.exit(f"fox sequence not found at {fox}")
    images = fox / "images"
    names = sfm.list_images(images)
    turned = set(names[::a.turn_every]) if a.turn_every else set()
    if turned:  # a copy of the frames, every K-th stored turned by a quarter counter-clockwise (np.rot90)
        copy = Path(a.work) / "images"
        copy.mkdir(parents=True, exist_ok=True)
        for n in names:
            if not (copy / n).exists():
                img = cv2.imread(str(images / n), cv2.IMREAD_COLOR)
                cv2.imwrite(str(copy / n), np.ascontiguousarray(np.rot90(img, 1)) if n in turned else img,
                            [cv2.IMWRITE_JPEG_QUALITY, 95])
        images = copy
    settings = {"resize": a.resize, "rotations": a.rotations}
    t = time.time()
    if "retrieval" in a.pairs:
        pairs = sfm.retrieval_pairs_of(images, names, a.work, a.top, IMAMatch.from_pretrained(**settings))
        if a.pairs == "sequential+retrieval":
            pairs = sfm.union_pairs(names, sfm.select_pairs(names, "sequential", a.window), pairs)
    else:
        pairs = sfm.select_pairs(names, a.pairs, a.window)
    t_pairs = time.time() - t
    t = time.time()
    sfm.match_pairs(images, pairs, a.work, workers=a.workers, **settings)
    t_match = time.time() - t
    t = time.time()
    res = sfm.reconstruct(images, a.work, "per_image" if turned else "single")
    t_map = time.time() - t
    rec = res["reconstruction"]
    gt = {f.path.name: f for f in load_transforms(fox)}
    R_est, R_gt, c_est, c_gt = [], [], [], []
    for image_id in rec.reg_image_ids():
        im = rec.images[image_id]
        T = im.cam_from_world().matrix()
        if im.name in turned:  # the turned frame's camera axes: (x', y', z') = (y, -x, z) of the upright one's
            T = np.vstack([np.array([[0, -1, 0], [1, 0, 0], [0, 0, 1]]) @ T[:3], T[3:]])
        g = gt[Path(im.name).name]
        R_est.append(T[:3, :3])
        c_est.append(-T[:3, :3].T @ T[:3, 3])
        R_gt.append(g.w2c[:3, :3])
        c_gt.append(-g.w2c[:3, :3].T @ g.w2c[:3, 3])
    rot = aligned_rotation_errors(R_est, R_gt)
    s, Ra, ta = umeyama(np.array(c_gt), np.array(c_est))
    pos = np.linalg.norm(s * np.array(c_gt) @ Ra.T + ta - np.array(c_est), axis=1) / s
    extent = np.linalg.norm(np.array(c_gt) - np.array(c_gt).mean(0), axis=1).mean()
    rows = [
        ("images / registered (largest model)", f"{res['images']} / {res['registered']}"),
        ("models (registered images each)", f"{res['models']} ({' + '.join(map(str, res['registered_per_model']))})"),
        ("pairs", f"{len(pairs)} ({a.pairs}" + {"sequential": f", window {a.window})",
                                                "retrieval": f", top {a.top}; {t_pairs:.0f} s)",
                                                "sequential+retrieval": f", window {a.window}, top {a.top}; "
                                                                        f"{t_pairs:.0f} s)"}.get(a.pairs, ")")),
        ("3D points", f"{res['points3D']}"),
        ("mean reprojection error (px)", f"{res['mean_reprojection_error']:.3f}"),
        ("mean track length (model / merged matches)",
         f"{res['mean_track_length_model']:.2f} / {res['mean_track_length_matches']:.2f}"),
        ("rotation error vs transforms.json, median / max (deg)", f"{np.median(rot):.2f} / {np.max(rot):.2f}"),
        ("camera position error, median (% of trajectory radius)", f"{100 * np.median(pos) / extent:.2f}"),
        ("time: matching / mapping (s)", f"{t_match:.0f} / {t_map:.0f}"),
    ]
    cameras = (f"every {a.turn_every}th frame stored turned by a quarter, one SIMPLE_RADIAL camera per image, "
               f"rotations={a.rotations}") if turned else "one SIMPLE_RADIAL camera"
    md = (f"imamatch → COLMAP on `shared/data/fox` (50 frames, original distorted images, {cameras}, long side "
          f"{a.resize}):\n\n| | |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in rows) + "\n")
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(md)
    print(md)


if __name__ == "__main__":
    main()
