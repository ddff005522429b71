"""The one configuration object of the matcher, and its named presets."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from numbers import Integral
from typing import Any


@dataclass(frozen=True)
class MatcherConfig:
    """Every setting of the network and of matching. Presets: :data:`PRESETS`."""

    # network
    backbone: str = "aliked"          # "aliked" (CPU-fast, pretrained init) or "reference"
    stem: str = "aliked"              # aliked's first block: "aliked" (full res.) or "s2d" (1/2 res., ~4× cheaper)
    mid: str = "aliked"               # aliked's blocks 2, 3: "aliked" or "lite" (depthwise block 2, plain block 3)
    deep: str = "aliked"              # aliked's block 4 (1/32): "aliked" (deformable), "plain" or "dilated"
    dim: int = 128                    # coarse feature / attention width
    heads: int = 4
    n_blocks: int = 3                 # self+cross blocks
    scales: tuple[int, ...] = (1, 2, 4)  # Q/K/V strides at 1/8 → 1/8, 1/16, 1/32
    focus_power: float = 3.0          # 1 = plain linear attention
    separable_qkv: bool = True        # depthwise strided Q/K/V (fast) instead of full strided convs
    ffn_ratio: int = 2                # hidden channels of the attention layers' conv FFN, × dim
    match_dim: int | None = None      # coarse matching on a linear projection of the attended features to this width
    fine_dim: int = 64
    fine_hidden: int | None = None    # width of the fine heads' layers (None: fine_dim)
    fine_blocks: int = 2              # depthwise-separable blocks at 1/2 resolution after the top-down merge
    pixel_stem: bool = True           # small conv stem on the raw pixels merged into the 1/2-res fine features
    fine_smooth: bool = True          # a depthwise-separable block after each top-down merge (False: linear merges)
    # coarse matching
    temperature: float = 0.1
    coarse_threshold: float = 0.2
    border: int = 0                   # drop coarse cells this close to the image edge
    # increased matching amount
    densify: str = "all"              # "none", "band" (the release's rule) or "all" (measured best, README)
    densify_band: tuple[float, float] = (0.2, 0.6)
    densify_points: int = 4           # 1, 4, 9 or 16 fine queries per densified cell
    densify_max_queries: int | None = 4000  # expand only an evenly spread subset when the expansion would give
                                      # more fine queries than this (None: no limit)
    # fine matching (half-res pixels)
    fine_window: int = 7
    fine_bound: float = 3.0
    refine_window: int = 3
    refine_bound: float = 1.5
    refine_iters: int = 2              # refinement passes at inference (chosen on a synthetic dev set)
    consistency_radius: float = 1.0   # max distance regression ↔ classification peak (dev-set choice)
    consistency_min_prob: float = 0.0  # min heatmap probability at the regressed point
    consistency_check: bool = True
    # photometric sub-pixel polish at the input resolution (imamatch.subpixel; no weights)
    subpixel: bool = True
    subpixel_radius: int = 3          # patch half-size (input px)
    subpixel_iters: int = 4
    subpixel_max_shift: float = 3.0   # farther moves are refused (input px)
    subpixel_affine: bool = True      # warp the patches by the local affine fitted to neighbouring matches
    subpixel_min_ncc: float = 0.0     # drop matches whose patches correlate less than this after the polish
    subpixel_keep_unmoved: bool = False  # keep matches the polish could not confirm (blank patch, no gain, too far)
    subpixel_settled: float = 0.01    # a match whose last step was at most this (input px) takes no more steps
    # neighbourhood agreement (imamatch.neighbourhood; no weights)
    neighbour_max_residual: float | None = 1.0  # drop matches this far (input px) from their neighbours' affine map
    neighbour_reach: tuple[int, ...] = (1, 2, 4)  # neighbourhood radii (1/8 cells), the first that can judge
    neighbour_keep_isolated: bool = True  # keep matches too isolated to judge where the pair has >= 30 confirmed
                                      # ones (False: drop them as unconfirmed; they are the few off-plane
                                      # matches of wide baselines: results/fox_many.md)
    # hard pairs (wide baseline, strong perspective): match again with image 1 warped onto image 0 by the
    # homography the first pass's matches support, when fewer than this share of its fine queries survive the
    # checks (easy pairs keep 0.2-0.45, 30-45° baselines 0.12-0.2; None: never; 1: always)
    prealign_below: float | None = 0.15
    prealign_passes: int = 2          # at most this many such passes, each from the previous pass's matches
    # a first pass whose coarse matches cover fewer than this share of the smaller image's cells is such a pair
    # for sure (easy pairs ≥ 0.17 on the benchmark): it stops after coarse matching, and the pre-aligned pass
    # starts from the coarse matches (no fine maps, fine matching, polish for it; None: always the full pass)
    prealign_coarse_below: float | None = 0.15
    prealign_resize: int | None = None  # long side of the pre-aligned passes (None: ``resize``); e.g. the first pass
                                      # (all that easy pairs run) at a lower ``resize`` and hard pairs' passes at 640
    # image 1 turned by quarter turns (a rolled camera, no EXIF orientation): when the upright first pass finds a
    # hard pair, image 1 is also tried turned (one coarse pass per turn, image 0's features reused) and matched
    # at the turn whose coarse matches one homography explains clearly best; keypoints stay in image 1's own
    # pixels (1: upright only; 2: also upside down; 4: every quarter turn). Easy upright pairs cost nothing more.
    rotations: int = 1
    # inference memory
    strip_rows: int = 128             # 1/2-res rows per strip of the backbone and top-down at inference (a multiple
                                      # of 4): fewer, lower peak memory; more, fewer and larger ops (each op
                                      # pays ~40 µs of thread start-up; 64 → 128: 0.96-0.97× the time, +25 MiB)
    store_fp16: bool = True           # keep the 1/2-res maps (backbone skip, fine features) in float16 at inference
    attention_bf16: bool = False      # the attention layers in bfloat16 where the CPU multiplies it natively
                                      # (AVX512-BF16 / AMX; elsewhere float32): faster, features within ~5e-3
    coarse_integer: bool = True       # CPU inference: coarse similarity from int8 matrix products
    coarse_bits: int = 8              # 8: one product (~1.6× faster than float32, confidences within ~0.05);
                                      # 16: exact products of 16-bit splits (logits within ~3e-5 of their size)
    # input
    resize: int | None = 640          # long side the images are resized to (None: keep)
    max_matches: int | None = None    # keep the most confident ones

    def __post_init__(self) -> None:
        for key in ("resize", "prealign_resize"):
            side = getattr(self, key)
            if side is not None and (not isinstance(side, Integral) or isinstance(side, bool) or side < 8):
                raise ValueError(f"{key} must be None (keep the size) or a long side of at least 8 px, got {side!r}")
        quarter_turns(self.rotations)  # checks it
        if self.strip_rows <= 0 or self.strip_rows % 4:
            raise ValueError(f"strip_rows must be a positive multiple of 4, got {self.strip_rows}")

    def replace(self, **changes: Any) -> "MatcherConfig":
        """A copy with ``changes``; unknown names raise ``TypeError`` listing the valid ones."""
        names = {f.name for f in fields(self)}
        bad = set(changes) - names
        if bad:
            raise TypeError(f"unknown config option(s) {sorted(bad)}; valid: {sorted(names)}")
        return replace(self, **changes)

    def with_architecture_of(self, other: "MatcherConfig") -> "MatcherConfig":
        """This config's matching settings with ``other``'s network architecture (what a weights file fixes)."""
        return self.replace(**{k: getattr(other, k) for k in ARCHITECTURE_FIELDS})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "MatcherConfig":
        d = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
        return cls().replace(**d)


def quarter_turns(rotations: int) -> range:
    """The quarter turns (``np.rot90``'s ``k``, upright first) that ``MatcherConfig.rotations`` allows: 1 →
    upright only, 2 → also upside down, 4 → every quarter turn. Raises ``ValueError`` for other values."""
    if isinstance(rotations, bool) or rotations not in (1, 2, 4):
        raise ValueError(f"rotations must be 1 (upright only), 2 (also 180 degrees) or 4 (every quarter turn), "
                         f"got {rotations!r}")
    return range(0, 4, 4 // rotations)


ARCHITECTURE_FIELDS = ("backbone", "stem", "mid", "deep", "dim", "heads", "n_blocks", "scales", "focus_power",
                       "separable_qkv", "ffn_ratio", "match_dim", "fine_dim", "fine_hidden", "fine_blocks",
                       "pixel_stem", "fine_smooth", "fine_window", "fine_bound", "refine_window", "refine_bound",
                       "temperature")

PRESETS: dict[str, MatcherConfig] = {
    "fast": MatcherConfig(),
    "reference": MatcherConfig(backbone="reference", dim=256, heads=8, n_blocks=9, separable_qkv=False,
                               fine_dim=128, densify_points=16, densify_max_queries=None),
}
