"""Many pairs to a 3D model: pair selection, resumable batch matching, hloc-style ``features.h5`` /
``matches.h5``, a COLMAP database and pycolmap's incremental mapper.

Layout of an output folder ``DIR``::

    DIR/pairs.txt            the pair list ("name0 name1" per line)
    DIR/retrieval.npz        the images' global descriptors (pairs by retrieval; reused when run again)
    DIR/raw/<k>.npz          one file per matched pair, written atomically (the unit of resumption / sharding)
    DIR/features.h5          hloc format: /<image name>/keypoints (N, 2), scores (N,), image_size
    DIR/matches.h5           hloc format: /<name0 with / → ->/<name1 …>/matches0 (N0,), matching_scores0
    DIR/database.db, DIR/sparse/<k>/   (``colmap``)

Semi-dense matches have no repeatable keypoints, so each image's matched points (from all its pairs) are
snapped to a grid of ``quantize`` pixels and merged: points of different pairs that fall in the same grid cell
become one keypoint, which lets tracks form across pairs.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Collection, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm import tqdm

from .atomic import atomic_path
from .data.synthetic import IMAGE_SUFFIXES
from .errors import DataError
from .io import stored_orientation, to_stored_pixels, unreadable_reason

if TYPE_CHECKING:
    from .api import IMAMatch


def list_images(image_dir: str | Path) -> list[str]:
    """Image names (relative paths, sorted) under ``image_dir``."""
    image_dir = Path(image_dir)
    if not image_dir.is_dir():
        raise DataError(f"image folder not found: {image_dir}")
    names = sorted(str(p.relative_to(image_dir)) for p in image_dir.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if len(names) < 2:
        raise DataError(f"need at least two images in {image_dir}, found {len(names)}")
    return names


def unreadable_images(image_dir: str | Path, names: Sequence[str]) -> dict[str, str]:
    """The images of ``names`` that could not be read (name → why; :func:`imamatch.io.unreadable_reason`),
    found before any matching: one corrupt file should not stop a long run halfway."""
    bad = {}
    for n in tqdm(names, desc="checking images", unit="image", dynamic_ncols=True, disable=len(names) < 200):
        why = unreadable_reason(Path(image_dir) / n)
        if why:
            bad[n] = why
    return bad


def split_pair_line(line: str, known: Collection[str]) -> tuple[str, str] | None:
    """The two image names of a pairs-file line ("name0 name1", more columns ignored), or None when no split
    gives two ``known`` names. Names may hold spaces ("IMG 1.jpg IMG 2.jpg"): the line is split at the space
    that leaves a known name on each side; a line that splits so in several ways raises :class:`DataError`."""
    parts = line.split()
    if len(parts) >= 2 and parts[0] in known and parts[1] in known:
        return parts[0], parts[1]
    text = line.strip()
    splits = {(text[:i].strip(), text[i + 1:].strip()) for i, ch in enumerate(text) if ch.isspace()}
    found = [pair for pair in splits if pair[0] in known and pair[1] in known]
    if len(found) > 1:
        raise DataError(f"ambiguous pair line {line!r}: it splits into known image names as {sorted(found)}")
    return found[0] if found else None


def read_pairs(path: str | Path, names: Collection[str], left_out: Collection[str] = ()) -> list[tuple[str, str]]:
    """The pairs of a pairs file (``#`` comments and blank lines skipped), each of two image names of ``names``
    (:func:`split_pair_line`); lines naming an image of ``left_out`` (e.g. an unreadable one) are dropped.
    Raises :class:`DataError` on a line that names anything else."""
    names = set(names)
    everything = names | set(left_out)  # built once: a left-out line is checked against it
    pairs = []
    for k, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        pair = split_pair_line(line, names)
        if pair is None and left_out and split_pair_line(line, everything) is not None:
            continue
        if pair is None:
            raise DataError(f"{path}:{k}: expected two image names of the folder, got {line!r}")
        pairs.append(pair)
    return pairs


def select_pairs(names: Sequence[str], mode: str = "exhaustive", window: int = 5,
                 pairs_file: str | Path | None = None, left_out: Collection[str] = ()) -> list[tuple[str, str]]:
    """``exhaustive`` (all pairs), ``sequential`` (each image with the next ``window``), or a pairs file
    (:func:`read_pairs`; its lines naming an image of ``left_out``, e.g. an unreadable one, are dropped)."""
    if pairs_file is not None:
        return read_pairs(pairs_file, set(names), left_out)
    if mode == "exhaustive":
        return [(a, b) for i, a in enumerate(names) for b in names[i + 1:]]
    if mode == "sequential":
        return [(names[i], names[j]) for i in range(len(names)) for j in range(i + 1, min(len(names), i + 1 + window))]
    raise ValueError(f"unknown pair mode {mode!r}; expected 'exhaustive' or 'sequential' (retrieval: "
                     "retrieval_pairs_of)")


def union_pairs(names: Sequence[str], *lists: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """Every pair of the ``lists`` once (a pair and its reverse are one), as (earlier, later) in the order of
    ``names``, sorted that way."""
    index = {n: k for k, n in enumerate(names)}
    seen = {tuple(sorted((index[a], index[b]))) for pairs in lists for a, b in pairs if a != b}
    return [(names[i], names[j]) for i, j in sorted(seen)]


def retrieval_pairs_of(image_dir: str | Path, names: Sequence[str], out_dir: str | Path, top: int,
                       matcher: "IMAMatch") -> list[tuple[str, str]]:
    """Each image of ``names`` (under ``image_dir``) paired with its ``top`` most similar ones
    (:mod:`imamatch.retrieval`, descriptors from ``matcher``). The descriptors are kept in
    ``out_dir/retrieval.npz`` and reused by a later run with the same image files (names, sizes, modification
    times), weights and size."""
    from .retrieval import global_descriptors, retrieval_pairs

    cache = Path(out_dir) / "retrieval.npz"
    stats = ((n, (Path(image_dir) / n).stat()) for n in names)
    files = hashlib.sha1("".join(f"{n}\0{st.st_size}\0{st.st_mtime_ns}\n" for n, st in stats).encode()).hexdigest()
    key = f"{matcher.weights_info.get('sha256', 'untrained')}:{matcher.conf.resize}:{matcher.conf.rotations}:{files}"
    descriptors = None
    if cache.is_file():
        with np.load(cache) as z:
            if list(z["names"]) == list(names) and str(z["key"]) == key:
                descriptors = z["descriptors"]
    if descriptors is None:
        descriptors = global_descriptors(matcher, [Path(image_dir) / n for n in names],
                                         rotations=matcher.conf.rotations)  # a turned image found at its turn
        cache.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(cache) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, names=np.array(names), key=np.array(key), descriptors=descriptors)
    return retrieval_pairs(names, descriptors, top)


def pair_key(a: str, b: str) -> str:
    """A file-name-safe, stable key of a pair."""
    return hashlib.sha1(f"{a}\0{b}".encode()).hexdigest()[:20]


# ------------------------------------------------------------------ batch matching (worker processes)
_WORKER: dict[str, Any] = {}


def _init_worker(weights: str | None, overrides: dict, threads: int) -> None:
    import torch

    from .api import SHIPPED, IMAMatch

    torch.set_num_threads(threads)
    if weights and weights not in SHIPPED:
        _WORKER["m"] = IMAMatch(weights=weights, **overrides)
    else:
        _WORKER["m"] = IMAMatch.from_pretrained(weights or "fast", **overrides)


def mask_path(mask_dir: str | Path | None, name: str) -> Path | None:
    """COLMAP's mask file of image ``name`` (a relative path): ``mask_dir/<name>.png``, or None when there is none
    (no ``mask_dir``, or no file for this image: it is matched everywhere)."""
    if mask_dir is None:
        return None
    path = Path(mask_dir) / f"{name}.png"
    return path if path.is_file() else None


def _match_group(image_dir: str, a: str, bs: Sequence[str], raw_dir: str,
                 mask_dir: str | None = None) -> Iterator[str]:
    """Match image ``a`` with each of ``bs`` (image ``a`` read and encoded once: :meth:`IMAMatch.match_many`),
    writing each pair's file as soon as it is matched and yielding its path. ``mask_dir``: see :func:`mask_path`."""
    images = [Path(image_dir) / b for b in bs]
    masks = None if mask_dir is None else [mask_path(mask_dir, b) for b in bs]
    results = _WORKER["m"].match_many(Path(image_dir) / a, images, mask0=mask_path(mask_dir, a), masks1=masks)
    for b, r in zip(bs, results):
        dst = Path(raw_dir) / f"{pair_key(a, b)}.npz"
        with atomic_path(dst) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, keypoints0=r["keypoints0"], keypoints1=r["keypoints1"], confidence=r["confidence"],
                         name0=a, name1=b)
        yield str(dst)


def _match_group_all(image_dir: str, a: str, bs: Sequence[str], raw_dir: str, mask_dir: str | None = None) -> int:
    """:func:`_match_group` run through (in a worker process): the number of pairs matched."""
    return sum(1 for _ in _match_group(image_dir, a, bs, raw_dir, mask_dir))


def group_pairs(pairs: Sequence[tuple[str, str]], workers: int = 1) -> list[tuple[str, list[str]]]:
    """The pairs as ``(a, [b, ...])`` groups that share their first image (read and encoded once per group), in
    the order of their first pairs. With ``workers`` > 1 no group holds more than an eighth of a worker's share,
    so that one image paired with many (a query against a database) still keeps every worker busy."""
    groups: dict[str, list[str]] = {}
    for a, b in pairs:
        groups.setdefault(a, []).append(b)
    if workers <= 1:
        return list(groups.items())
    size = max(1, -(-len(pairs) // (8 * workers)))
    return [(a, bs[i:i + size]) for a, bs in groups.items() for i in range(0, len(bs), size)]


def match_pairs(image_dir: str | Path, pairs: Sequence[tuple[str, str]], out_dir: str | Path,
                weights: str | None = None, workers: int = 1, threads: int | None = None,
                masks: str | Path | None = None, **overrides: Any) -> int:
    """Match every pair not already in ``out_dir/raw`` (resumable: a killed run loses at most the pairs in
    flight; files appear atomically). Pairs are taken in groups that share their first image, which is read and
    encoded once per group (:meth:`IMAMatch.match_many`; the same matches; :func:`group_pairs`); ``workers`` > 1
    share the groups out. ``masks``: a folder of COLMAP-style masks (:func:`mask_path`; nonzero pixels may be
    matched); matches already in ``out_dir`` are kept as they are, so give a new ``out_dir`` after changing them.
    Returns the number of pairs matched now."""
    if masks is not None and not Path(masks).is_dir():
        raise DataError(f"mask folder not found: {masks}")
    mask_dir = None if masks is None else str(masks)
    out = Path(out_dir)
    raw = out / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "pairs.txt") as tmp:
        tmp.write_text("".join(f"{a} {b}\n" for a, b in pairs))
    todo = [(a, b) for a, b in pairs if not (raw / f"{pair_key(a, b)}.npz").exists()]
    if not todo:
        return 0
    threads = threads or max(1, (os.cpu_count() or 1) // max(1, workers))
    tasks = group_pairs(todo, workers)
    bar = tqdm(total=len(pairs), initial=len(pairs) - len(todo), desc="matching", unit="pair", dynamic_ncols=True)
    if workers <= 1:
        _init_worker(weights, overrides, threads)
        for a, bs in tasks:
            for _ in _match_group(str(image_dir), a, bs, str(raw), mask_dir):
                bar.update(1)
    else:
        import multiprocessing as mp

        with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=_init_worker,
                                 initargs=(weights, overrides, threads)) as ex:
            futs = [ex.submit(_match_group_all, str(image_dir), a, bs, str(raw), mask_dir) for a, bs in tasks]
            for f in as_completed(futs):
                bar.update(f.result())
    bar.close()
    return len(todo)


# ------------------------------------------------------------------ merging into keypoints per image
@dataclass
class MergedMatches:
    """``keypoints[name]`` (K, 2) float32, ``scores[name]`` (K,), ``matches[(a, b)]`` (M, 2) int indices and
    ``match_scores[(a, b)]`` (M,)."""

    keypoints: dict[str, np.ndarray]
    scores: dict[str, np.ndarray]
    matches: dict[tuple[str, str], np.ndarray]
    match_scores: dict[tuple[str, str], np.ndarray]


def load_raw(raw_dirs: Sequence[str | Path],
             pairs: Sequence[tuple[str, str]] | None = None) -> dict[tuple[str, str], dict]:
    """Read the per-pair results of one or several (sharded) output folders."""
    out: dict[tuple[str, str], dict] = {}
    for d in raw_dirs:
        d = Path(d)
        raw = d / "raw" if (d / "raw").is_dir() else d
        for f in sorted(raw.glob("*.npz")):
            with np.load(f, allow_pickle=False) as z:
                key = (str(z["name0"]), str(z["name1"]))
                out[key] = {k: z[k] for k in ("keypoints0", "keypoints1", "confidence")}
    if pairs is not None:
        missing = [p for p in pairs if tuple(p) not in out]
        if missing:
            raise DataError(f"{len(missing)} pairs have no results yet, e.g. {missing[0]}: run the matching first")
        out = {tuple(p): out[tuple(p)] for p in pairs}
    return out


def _cell_ids(kp: np.ndarray, conf: np.ndarray, quantize: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One image's matched points ``(N, 2)`` in the order they were met, with their confidences ``(N,)`` → each
    point's keypoint id ``(N,)`` (the ``quantize``-pixel grid cells numbered in order of first appearance), the
    keypoints ``(K, 2)`` (each cell's first point) and their scores ``(K,)`` (the cell's best confidence)."""
    if len(kp) == 0:
        return np.zeros(0, np.int64), np.zeros((0, 2), np.float32), np.zeros(0, np.float32)
    q = np.floor(kp / quantize).astype(np.int64)
    _, first, inverse = np.unique((q[:, 0] << 32) + (q[:, 1] & 0xFFFFFFFF), return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")  # the cells in order of first appearance
    rank = np.empty(len(first), np.int64)
    rank[order] = np.arange(len(first))
    ids = rank[inverse.reshape(-1)]
    score = np.full(len(first), -np.inf, np.float32)
    np.maximum.at(score, ids, conf)
    return ids, kp[first[order]], score


def merge_keypoints(raw: dict[tuple[str, str], dict], quantize: float = 2.0) -> MergedMatches:
    """Snap matched points to a ``quantize``-pixel grid per image and merge duplicates (see module doc): each
    image's keypoints are its cells in the order the pairs (``raw``'s order) first reach them. Within a pair, a
    keypoint keeps only its most confident match (both directions)."""
    occurrences: dict[str, list[tuple[tuple[str, str], int]]] = {}  # image → (pair, side) in the pairs' order
    for pair in raw:
        for side, name in enumerate(pair):
            occurrences.setdefault(name, []).append((pair, side))
    keypoints, scores, ids_of = {}, {}, {}
    for name, occ in occurrences.items():
        kps = [np.asarray(raw[p][f"keypoints{s}"], np.float32).reshape(-1, 2) for p, s in occ]
        conf = np.concatenate([raw[p]["confidence"].astype(np.float32) for p, _ in occ])
        ids, keypoints[name], scores[name] = _cell_ids(np.concatenate(kps), conf, quantize)
        for (p, s), part in zip(occ, np.split(ids, np.cumsum([len(k) for k in kps])[:-1])):
            ids_of[(p, s)] = part
    matches, mscores = {}, {}
    for pair, r in raw.items():
        conf = r["confidence"].astype(np.float32)
        i0, i1 = ids_of[(pair, 0)], ids_of[(pair, 1)]
        order = np.argsort(-conf, kind="stable")
        _, first0 = np.unique(i0[order], return_index=True)
        keep = order[np.sort(first0)]  # each image-0 keypoint's best match, still most confident first
        _, first1 = np.unique(i1[keep], return_index=True)
        keep = keep[first1]
        matches[pair] = np.stack([i0[keep], i1[keep]], -1)
        mscores[pair] = conf[keep]
    return MergedMatches(keypoints, scores, matches, mscores)


def track_lengths(merged: MergedMatches) -> np.ndarray:
    """Lengths of the tracks (connected components of matched keypoints, ≥ 2 observations), in no set order."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    offset, start = {}, 0
    for n in sorted(merged.keypoints):
        offset[n] = start
        start += len(merged.keypoints[n])
    ends = [(offset[a] + m[:, 0], offset[b] + m[:, 1]) for (a, b), m in merged.matches.items() if len(m)]
    if start == 0 or not ends:
        return np.zeros(0, np.int64)
    rows, cols = np.concatenate([u for u, _ in ends]), np.concatenate([v for _, v in ends])
    _, labels = connected_components(coo_matrix((np.ones(len(rows), np.int8), (rows, cols)), shape=(start, start)),
                                     directed=False)
    counts = np.bincount(labels)
    return counts[counts >= 2]


def names_to_pair(a: str, b: str) -> str:
    """hloc's pair key in matches.h5."""
    return "/".join((a.replace("/", "-"), b.replace("/", "-")))


def write_h5(merged: MergedMatches, out_dir: str | Path, image_sizes: dict[str, tuple[int, int]]) -> tuple[Path, Path]:
    """Write hloc-compatible ``features.h5`` and ``matches.h5`` (each atomically)."""
    import h5py

    out = Path(out_dir)
    feats, mat = out / "features.h5", out / "matches.h5"
    with atomic_path(feats) as tmp:
        with h5py.File(tmp, "w") as f:
            for n, kp in merged.keypoints.items():
                g = f.create_group(n)
                g.create_dataset("keypoints", data=kp)
                g.create_dataset("scores", data=merged.scores[n])
                g.create_dataset("image_size", data=np.array(image_sizes.get(n, (0, 0)), np.int64))
    with atomic_path(mat) as tmp:
        with h5py.File(tmp, "w") as f:
            for (a, b), m in merged.matches.items():
                m0 = np.full(len(merged.keypoints[a]), -1, np.int32)
                s0 = np.zeros(len(merged.keypoints[a]), np.float16)
                m0[m[:, 0]] = m[:, 1]
                s0[m[:, 0]] = merged.match_scores[(a, b)]
                g = f.create_group(names_to_pair(a, b))
                g.create_dataset("matches0", data=m0)
                g.create_dataset("matching_scores0", data=s0)
    return feats, mat


Orientations = dict[str, tuple[int, tuple[int, int]]]  # name → EXIF orientation, stored (width, height)


def image_orientations(image_dir: str | Path, names: Sequence[str]) -> Orientations:
    """Each image's :func:`imamatch.io.stored_orientation`, from its file header."""
    return {n: stored_orientation(Path(image_dir) / n) for n in names}


def image_sizes(image_dir: str | Path, names: Sequence[str], stored: bool = False,
                orientations: Orientations | None = None) -> dict[str, tuple[int, int]]:
    """(width, height) of each image: as imamatch reads it, EXIF orientation applied (the frame of the keypoints
    and of ``features.h5``), or (``stored``) as the file stores it (COLMAP's frame). ``orientations``: the
    images' :func:`image_orientations`, when already read."""
    orientations = orientations or image_orientations(image_dir, names)
    sizes = {}
    for n in names:
        o, (w, h) = orientations[n]
        sizes[n] = (w, h) if stored or o <= 4 else (h, w)  # orientations 5-8 swap the axes
    return sizes


# ------------------------------------------------------------------ COLMAP
def check_camera_mode(sizes: dict[str, tuple[int, int]], camera_mode: str) -> None:
    """Raise :class:`DataError` when one camera (``camera_mode`` "single") is asked to take images of several
    sizes (``sizes``: name → (width, height)): COLMAP would leave all but one size out."""
    if camera_mode == "single" and len(set(sizes.values())) > 1:
        raise DataError(f"the images have {len(set(sizes.values()))} different sizes: one camera (--camera-mode "
                        "single) cannot take them all; use --camera-mode per_image or auto")


VERIFY_SEED = 0  # of the verification's RANSAC: the same database from the same matches, run after run


def build_database(image_dir: str | Path, merged: MergedMatches, db_path: str | Path,
                   camera_mode: str = "single", min_inliers: int = 15, max_error: float = 4.0,
                   orientations: Orientations | None = None) -> Path:
    """A COLMAP database (images, keypoints, raw matches) plus each pair's geometric verification (pycolmap's
    two-view geometry, as COLMAP's matchers write it: no pairs file, so image names may hold spaces).
    ``orientations``: the images' :func:`image_orientations`, when already read."""
    import pycolmap

    db_path = Path(db_path)
    if db_path.exists():
        db_path.unlink()
    names = sorted(merged.keypoints)
    orientations = orientations or image_orientations(image_dir, names)
    mode = {"single": pycolmap.CameraMode.SINGLE, "per_image": pycolmap.CameraMode.PER_IMAGE,
            "auto": pycolmap.CameraMode.AUTO}[camera_mode]
    pycolmap.Database.open(db_path).close()  # create the empty tables
    pycolmap.import_images(db_path, image_dir, mode, names)
    db = pycolmap.Database.open(db_path)
    try:
        ids = {im.name: im.image_id for im in db.read_all_images()}
        missing = [n for n in names if n not in ids]
        if missing:
            raise DataError(f"COLMAP did not import {len(missing)} of the {len(names)} images (e.g. {missing[0]}); "
                            "with --camera-mode single they must all have one size (use per_image or auto)")
        points = {}
        for n in names:  # COLMAP reads the stored pixels (no EXIF orientation), its pixel centres at +0.5
            points[n] = (to_stored_pixels(merged.keypoints[n], *orientations[n]) + 0.5).astype(np.float64)
            db.write_keypoints(ids[n], points[n].astype(np.float32))
        cameras = {im.name: db.read_camera(im.camera_id) for im in db.read_all_images()}
        opts = pycolmap.TwoViewGeometryOptions()
        opts.min_num_inliers = min_inliers
        opts.ransac.max_error = max_error
        opts.ransac.random_seed = VERIFY_SEED
        todo = [(a, b, np.ascontiguousarray(m, np.uint32)) for (a, b), m in merged.matches.items() if len(m)]

        def verify(job: tuple[str, str, np.ndarray]) -> Any:
            a, b, m = job
            return pycolmap.estimate_two_view_geometry(cameras[a], points[a], cameras[b], points[b], m, opts)

        with ThreadPoolExecutor(os.cpu_count() or 1) as pool:  # pycolmap releases the GIL while it estimates
            geometries = pool.map(verify, todo)
            for (a, b, m), geometry in tqdm(zip(todo, geometries), total=len(todo), desc="verifying", unit="pair",
                                            dynamic_ncols=True, disable=len(todo) < 200):
                db.write_matches(ids[a], ids[b], m)
                db.write_two_view_geometry(ids[a], ids[b], geometry)
    finally:
        db.close()
    return db_path


def reconstruct(image_dir: str | Path, out_dir: str | Path, camera_mode: str = "single") -> dict[str, Any]:
    """Database + incremental mapping from a finished ``match_pairs`` folder; returns summary statistics."""
    import pycolmap

    out = Path(out_dir)
    pairs = read_pairs(out / "pairs.txt", set(list_images(image_dir)))
    merged = merge_keypoints(load_raw([out], pairs))
    names = sorted(merged.keypoints)
    orientations = image_orientations(image_dir, names)  # each file's header read once
    write_h5(merged, out, image_sizes(image_dir, names, orientations=orientations))
    tracks = track_lengths(merged)
    check_camera_mode(image_sizes(image_dir, names, stored=True, orientations=orientations), camera_mode)
    db = build_database(image_dir, merged, out / "database.db", camera_mode, orientations=orientations)
    sparse = out / "sparse"
    sparse.mkdir(exist_ok=True)
    models = pycolmap.incremental_mapping(db, image_dir, sparse)
    if not models:
        raise DataError("the incremental mapper registered no model (too few verified matches)")
    best = max(models.values(), key=lambda r: r.num_reg_images())
    return {"images": len(names), "registered": best.num_reg_images(), "points3D": best.num_points3D(),
            "mean_reprojection_error": best.compute_mean_reprojection_error(),
            "mean_track_length_model": best.compute_mean_track_length(),
            "mean_track_length_matches": float(np.mean(tracks)) if len(tracks) else 0.0,
            "models": len(models), "reconstruction": best,
            "registered_per_model": sorted((r.num_reg_images() for r in models.values()), reverse=True)}
