"""Row strips for the strip-wise inference paths (backbone, top-down): ranges with halos, and one output."""

from __future__ import annotations

import torch


def paste_rows(out: torch.Tensor | None, part: torch.Tensor, r0: int, height: int, channel: int = 0,
               channels: int | None = None, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Write ``part`` ``(B, C, h, W)`` into rows ``r0:r0+h`` and channels ``channel:channel+C`` of ``out``
    ``(B, channels, height, W)`` and return ``out``, allocated on the first call (``out`` None; ``channels``
    defaults to C, ``dtype`` to ``part``'s) in ``part``'s memory format. Assembling strips this way keeps one
    full-size buffer alive instead of the strips plus their concatenation."""
    if out is None:
        channels_innermost = part.shape[1] > 1 and part.stride(1) == 1  # a row slice of a channels-last map
        fmt = torch.channels_last if channels_innermost else torch.contiguous_format
        out = torch.empty((part.shape[0], channels or part.shape[1], height, part.shape[3]), dtype=dtype or part.dtype,
                          device=part.device, memory_format=fmt)
    out[:, channel:channel + part.shape[1], r0:r0 + part.shape[2]] = part
    return out


def strip_ranges(height: int, strip: int, halo: int) -> list[tuple[int, int, int, int]]:
    """``(lo, hi, r0, r1)`` per strip: output rows ``r0:r1`` (``strip`` at a time) and the rows ``lo:hi`` they are
    computed from, ``halo`` more on each side (clipped to the map), enough for that many 3×3 convolutions."""
    return [(max(0, r0 - halo), min(height, r0 + strip + halo), r0, min(height, r0 + strip))
            for r0 in range(0, height, strip)]
