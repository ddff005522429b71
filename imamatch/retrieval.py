"""Which pairs to match in a large collection: a global descriptor per image from the matcher's own coarse
features, and each image paired with its most similar ones (instead of all pairs).

The descriptor is the mean, over the image's 1/8 cells, of the first self-attention layer's output (the coarse
features with their image-wide context), L2-normalised. Similarities are taken after subtracting the
collection's mean descriptor (what every image of one collection shares says nothing about which two overlap).
On the fox sequence (50 frames of one object) the 5 most similar frames of each are within 30° of it for 94 % of
the pairs (the 5 nearest frames in capture order: 91 %; any 5: 26 %); in a mixed folder (fox, Graffiti,
Middlebury, 38 unrelated photos) every image's best match comes from its own scene (``benchmarks/retrieval.py``).
No extra weights: the network's own; one backbone and one attention layer per image (~0.05 s at 640 px).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from .io import ImageInput, prepare, to_gray


def global_descriptor(matcher, image: ImageInput, name: str | None = None) -> np.ndarray:
    """``(C,)`` float32, unit length: ``image``'s global descriptor from ``matcher`` (an :class:`IMAMatch`) at
    its ``resize``."""
    net = matcher.net
    prep = prepare(to_gray(image, name, matcher.conf.resize), matcher.conf.resize, net.size_multiple)
    with torch.inference_mode():
        coarse = net.coarse_in(F.normalize(net.backbone(prep.tensor.to(matcher.device)).coarse, dim=1))
        valid = prep.valid.to(matcher.device)
        if net.conf.n_blocks > 0:
            coarse = net.transformer.first_self(coarse, valid)
        cells = coarse[0].flatten(1)[:, valid[0].flatten()]  # (C, valid cells)
        return F.normalize(cells.float().mean(1), dim=0).cpu().numpy()


def global_descriptors(matcher, images: Sequence[ImageInput], progress: bool = True) -> np.ndarray:
    """``(N, C)``: :func:`global_descriptor` of each of ``images`` (with a progress bar)."""
    out = [global_descriptor(matcher, im, str(im) if isinstance(im, (str, Path)) else None)
           for im in tqdm(images, desc="describing", unit="image", disable=not progress, dynamic_ncols=True)]
    return np.stack(out) if out else np.zeros((0, 0), np.float32)


def similarities(descriptors: np.ndarray) -> np.ndarray:
    """``(N, N)`` cosine similarities of ``descriptors`` ``(N, C)`` after subtracting their mean (the diagonal
    is -inf: an image is not its own neighbour)."""
    d = descriptors - descriptors.mean(0, keepdims=True)
    d = d / np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-12)
    s = d @ d.T
    np.fill_diagonal(s, -np.inf)
    return s


def retrieval_pairs(names: Sequence[str], descriptors: np.ndarray, top: int) -> list[tuple[str, str]]:
    """Each image paired with its ``top`` most similar others (:func:`similarities`); the union of those pairs,
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
