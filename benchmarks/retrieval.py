"""Pairs by retrieval (`imamatch.retrieval`), measured on the shared data against the baselines a user has without
it: images in capture order (the next k frames) and any k images.

    python benchmarks/retrieval.py [--data ../shared/data]

1. A mixed folder: the 50 fox frames, the 6 Graffiti images, the two Middlebury pairs and the 38 unrelated photos;
   for each scene with more than one image, the share of its images' top-1 and top-5 retrieved images from the
   same scene.
2. Within the fox sequence: for k = 5 and 10, the share of each frame's k chosen partners that are within 30° of
   it (relative rotation of the true poses), and the share of its k nearest frames by angle among them.
3. The fox frames with every fifth one turned by a quarter (no EXIF tag to undo it): the same share for k = 5,
   for the turned frames and the others, with the upright descriptors and with ``rotations=4`` (every image
   also described at its other turns, :func:`imamatch.retrieval.similarities`).
Writes ``results/retrieval.md`` and ``.json``.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from bench_shared import data_arguments, require_data, write_results
from imamatch import IMAMatch
from imamatch.data.posed import load_posed, relative_pose
from imamatch.eval.metrics import rotation_error_deg
from imamatch.io import read_image
from imamatch.retrieval import global_descriptors, similarities


def ranking_scores(order: np.ndarray, angles: np.ndarray, k: int) -> tuple[float, float]:
    """``order`` ``(N, N-1)``: each frame's partners, best first; ``angles`` ``(N, N)`` (inf on the diagonal).
    Returns the share of the first ``k`` partners within 30°, and the share of the ``k`` nearest by angle among
    them."""
    n = len(order)
    close = np.mean([np.mean(angles[i, order[i, :k]] < 30) for i in range(n)])
    nearest = np.argsort(angles, axis=1)[:, :k]
    recall = np.mean([len(set(order[i, :k]) & set(nearest[i])) / k for i in range(n)])
    return float(close), float(recall)


def main() -> None:
    ap = data_arguments(__doc__, "retrieval.md")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    require_data(a.data)
    torch.set_num_threads(a.threads)
    matcher = IMAMatch.from_pretrained()
    frames = load_posed(a.data / "fox")
    items = [(f.path, "fox") for f in frames]
    items += [(p, "Graffiti") for p in sorted((a.data / "graf").glob("img*.png"))]
    stereo = a.data / "stereo"
    items += [(stereo / n, "Motorcycle") for n in ("motorcycle_left.png", "motorcycle_right.png")]
    items += [(stereo / n, "Aloe") for n in ("aloeL.jpg", "aloeR.jpg")]
    items += [(p, f"photo {k}") for k, p in enumerate(sorted((a.data / "photos").glob("*.jpg")))]
    t = time.perf_counter()
    desc = global_descriptors(matcher, [p for p, _ in items])
    per_image = (time.perf_counter() - t) / len(items)
    scenes = np.array([s for _, s in items])
    order = np.argsort(-similarities(desc), axis=1, kind="stable")
    mixed = {}
    for scene in ("fox", "Graffiti", "Motorcycle", "Aloe"):
        rows = np.flatnonzero(scenes == scene)
        top5 = min(5, len(rows) - 1)
        mixed[scene] = {"images": int(len(rows)),
                        "top1": float(np.mean(scenes[order[rows, 0]] == scene)),
                        "top5": float(np.mean(scenes[order[rows, :top5]] == scene)), "top_n": top5}
    n = len(frames)
    angles = np.full((n, n), np.inf)
    for i in range(n):
        for j in range(n):
            if i != j:
                angles[i, j] = rotation_error_deg(relative_pose(frames[i], frames[j])[0], np.eye(3))
    fox_order = np.argsort(-similarities(desc[:n]), axis=1, kind="stable")[:, : n - 1]
    by_capture = np.array([sorted((j for j in range(n) if j != i), key=lambda j: (abs(j - i), j)) for i in range(n)])
    rng = np.random.default_rng(0)
    anywhere = np.array([rng.permutation([j for j in range(n) if j != i]) for i in range(n)])
    ranking = {name: {k: ranking_scores(o, angles, k) for k in (5, 10)}
               for name, o in (("retrieval (imamatch)", fox_order), ("capture order (the next frames)", by_capture),
                               ("any frames (random)", anywhere))}
    md = ["# Pairs by retrieval", "",
          f"`python benchmarks/retrieval.py`: global descriptors from the shipped weights at 640 px, "
          f"{per_image:.3f} s per image ({len(items)} images, 2 threads).", "",
          f"Mixed folder ({len(items)} images: fox, Graffiti, Middlebury and 38 unrelated photos), share of each "
          "image's retrieved images from its own scene:", "",
          "| scene | images | top-1 | top-5 (or all others) |", "|---|---|---|---|"]
    md += [f"| {s} | {r['images']} | {100 * r['top1']:.0f} % | {100 * r['top5']:.0f} % (top-{r['top_n']}) |"
           for s, r in mixed.items()]
    md += ["", f"Within the fox sequence ({n} frames; {100 * np.mean(angles[np.isfinite(angles)] < 30):.0f} % of "
           "all pairs are within 30°): the share of each frame's k partners within 30° of it, and the share of its k "
           "nearest frames by angle among them:", "",
           "| partners | k = 5: within 30° | nearest found | k = 10: within 30° | nearest found |", "|---|---|---|---|---|"]
    md += [f"| {name} | {100 * r[5][0]:.0f} % | {100 * r[5][1]:.0f} % | {100 * r[10][0]:.0f} % | {100 * r[10][1]:.0f} % |"
           for name, r in ranking.items()]
    images = [read_image(f.path, 640) for f in frames]
    images = [np.ascontiguousarray(np.rot90(im, 1)) if k % 5 == 0 else im for k, im in enumerate(images)]
    turned_rows = np.arange(0, n, 5)
    others = np.setdiff1d(np.arange(n), turned_rows)
    turned = {}
    for name, rotations in (("upright descriptors (default)", 1), ("rotations=4", 4)):
        t = time.perf_counter()
        d = global_descriptors(IMAMatch.from_pretrained(rotations=rotations), images, rotations=rotations)
        s_image = (time.perf_counter() - t) / n
        order = np.argsort(-similarities(d), axis=1, kind="stable")
        turned[name] = {"turned": float(np.mean(angles[turned_rows[:, None], order[turned_rows, :5]] < 30)),
                        "others": float(np.mean(angles[others[:, None], order[others, :5]] < 30)), "s": s_image}
    md += ["", f"The fox frames with every fifth one turned by a quarter ({len(turned_rows)} of {n}), the share of "
           "each frame's 5 retrieved partners within 30° of it:", "",
           "| descriptors | turned frames | the others | s per image |", "|---|---|---|---|"]
    md += [f"| {name} | {100 * r['turned']:.0f} % | {100 * r['others']:.0f} % | {r['s']:.3f} |"
           for name, r in turned.items()]
    write_results(a.out, "\n".join(md) + "\n",
                  {"s_per_image": per_image, "mixed": mixed, "fox": ranking, "fox_turned": turned})


if __name__ == "__main__":
    main()
