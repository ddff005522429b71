"""Which pairs to match in a large collection: a global descriptor per image from the matcher's own coarse
features, and each image paired with its most similar ones (instead of all pairs).

The descriptor is the mean, over the image's 1/8 cells, of the first self-attention layer's output (the coarse
features with their image-wide context), L2-normalised. Similarities are taken after subtracting the
collection's mean descriptor (what every image of one collection shares says nothing about which two overlap).
On the fox sequence (50 frames of one object) the 5 most similar frames of each are within 30° of it for 94 % of
the pairs (the 5 nearest frames in capture order: 91 %; any 5: 26 %); in a mixed folder (fox, Graffiti,
Middlebury, 38 unrelated photos) every image's best match comes from its own scene (``benchmarks/retrieval.py``).
No extra weights: the network's own; one backbone and one attention layer per image (~0.05 s at 640 px).

The descriptor is not invariant to turning the image (a frame turned by a quarter retrieves its neighbours no
better than chance), so with ``rotations`` > 1 each image is also described at its other quarter turns and two
images' similarity the best over the turns, a turn counting a little less (:func:`similarities`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from .config import quarter_turns
from .io import ImageInput, prepare, to_gray

if TYPE_CHECKING:
    from .api import IMAMatch


def global_descriptor(matcher: "IMAMatch", image: ImageInput, name: str | None = None, turns: int = 0) -> np.ndarray:
    """``(C,)`` float32, unit length: ``image``'s global descriptor from ``matcher`` (an :class:`IMAMatch`) at
    its ``resize``, the image turned by ``turns`` quarter turns counter-clockwise first."""
    net = matcher.net
    gray = np.ascontiguousarray(np.rot90(to_gray(image, name, matcher.conf.resize), turns))
    prep = prepare(gray, matcher.conf.resize, net.size_multiple)
    with torch.inference_mode():
        coarse = net.coarse_in(F.normalize(net.backbone(prep.tensor.to(matcher.device)).coarse, dim=1))
        valid = prep.valid.to(matcher.device)
        if net.conf.n_blocks > 0:
            coarse = net.transformer.first_self(coarse, valid)
        cells = coarse[0].flatten(1)[:, valid[0].flatten()]  # (C, valid cells)
        return F.normalize(cells.float().mean(1), dim=0).cpu().numpy()


def global_descriptors(matcher: "IMAMatch", images: Sequence[ImageInput], progress: bool = True,
                       rotations: int = 1) -> np.ndarray:
    """:func:`global_descriptor` of each of ``images`` (with a progress bar): ``(N, C)``, or with ``rotations``
    2 or 4 ``(N, rotations, C)``, each image at its turns (upright first; 2: upright and upside down)."""
    turns = quarter_turns(rotations)
    out = [[global_descriptor(matcher, im, str(im) if isinstance(im, (str, Path)) else None, k) for k in turns]
           for im in tqdm(images, desc="describing", unit="image", disable=not progress, dynamic_ncols=True)]
    d = np.asarray(out, np.float32).reshape(len(out), len(turns), -1)
    return d[:, 0] if rotations == 1 else d


TURN_PENALTY = 0.1  # a turned image's similarity counts this much less than an upright one's (cosine units)


def similarities(descriptors: np.ndarray) -> np.ndarray:
    """``(N, N)`` cosine similarities of ``descriptors`` ``(N, C)`` after subtracting the upright descriptors'
    mean; for ``(N, R, C)`` (each image at R turns, upright first) the upright similarity or, less
    :data:`TURN_PENALTY`, the best of either image turned against the other upright, whichever is higher (with
    no penalty, the extra turns lure upright frames to wrong neighbours: fox top-5 within 30° 95 → 89 %; with it
    93 %, and a turned frame's 28 → 86 %). The diagonal is -inf: an image is not its own neighbour."""
    d = descriptors if descriptors.ndim == 3 else descriptors[:, None]
    d = d - d[:, 0].mean(0)
    d = d / np.maximum(np.linalg.norm(d, axis=2, keepdims=True), 1e-12)
    s = np.einsum("ic,jrc->ijr", d[:, 0], d)  # image i upright against j at each turn
    best = s[..., 0]
    if s.shape[2] > 1:
        turned = s[..., 1:].max(2)
        best = np.maximum(best, np.maximum(turned, turned.T) - TURN_PENALTY)
    np.fill_diagonal(best, -np.inf)
    return best


def retrieval_pairs(names: Sequence[str], descriptors: np.ndarray, top: int) -> list[tuple[str, str]]:
    """Each image paired with its ``top`` most similar others (:func:`similarities` of ``descriptors``, ``(N, C)``
    or ``(N, R, C)``); the union of those pairs,
    each once, as (earlier, later) in the order of ``names``, sorted. ``top`` ≥ N - 1: every pair."""
    if len(names) != len(descriptors):
        raise ValueError(f"{len(names)} names for {len(descriptors)} descriptors")
    if top < 1:
        raise ValueError(f"top must be at least 1, got {top}")
    n = len(names)
    if n < 2:
        return []
    order = np.argsort(-similarities(descriptors), axis=1, kind="stable")[:, : min(top, n - 1)]
    chosen = {(min(i, int(j)), max(i, int(j))) for i in range(n) for j in order[i]}
    return [(names[i], names[j]) for i, j in sorted(chosen)]
