"""Pictures of matches: the two images side by side, lines coloured by confidence, the count in the title."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def draw_matches(image0: np.ndarray, image1: np.ndarray, kpts0: np.ndarray, kpts1: np.ndarray,
                 confidence: np.ndarray, path: str | Path, title: str = "", max_lines: int = 400,
                 seed: int = 0) -> Path:
    """Save a side-by-side figure to ``path`` (PNG/JPG/PDF by suffix); returns the path.

    ``image0/1``: grayscale ``(H, W)`` in [0, 1] (original pixels); ``kpts`` ``(N, 2)``; ``confidence`` ``(N,)``.
    At most ``max_lines`` matches are drawn as lines (a fixed random subset); all are drawn as points.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.collections import LineCollection

    h0, w0 = image0.shape[:2]
    h1, w1 = image1.shape[:2]
    gap = max(10, (w0 + w1) // 100)
    h = max(h0, h1)
    canvas = np.ones((h, w0 + gap + w1), np.float32)
    canvas[:h0, :w0] = image0
    canvas[:h1, w0 + gap:] = image1
    fig_w = 12.0
    fig, ax = plt.subplots(figsize=(fig_w, fig_w * h / canvas.shape[1] + 0.6), dpi=110)
    ax.imshow(canvas, cmap="gray", vmin=0, vmax=1)
    cmap = plt.get_cmap("turbo")
    n = len(kpts0)
    if n:
        c = np.clip(np.asarray(confidence, np.float64), 0, 1)
        colors = cmap(c)
        idx = np.arange(n)
        if n > max_lines:
            idx = np.sort(np.random.default_rng(seed).choice(n, max_lines, replace=False))
        segs = np.stack([kpts0[idx], kpts1[idx] + np.array([w0 + gap, 0])], 1)
        ax.add_collection(LineCollection(segs, colors=colors[idx], linewidths=0.6, alpha=0.7))
        ax.scatter(kpts0[:, 0], kpts0[:, 1], s=1.5, c=colors, linewidths=0)
        ax.scatter(kpts1[:, 0] + w0 + gap, kpts1[:, 1], s=1.5, c=colors, linewidths=0)
    sm = plt.cm.ScalarMappable(cmap=cmap, norm=plt.Normalize(0, 1))
    fig.colorbar(sm, ax=ax, fraction=0.02, pad=0.01, label="confidence")
    ax.set_title(f"{title}  {n} matches".strip())
    ax.set_axis_off()
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
