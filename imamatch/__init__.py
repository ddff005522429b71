"""imamatch: semi-dense image matching with increased matching amount (IMAMatch), CPU-fast, weights included."""

from .api import IMAMatch
from .config import PRESETS, MatcherConfig
from .errors import DataError, ImageError, ImamatchError, WeightsError

__all__ = ["IMAMatch", "MatcherConfig", "PRESETS", "ImamatchError", "ImageError", "WeightsError", "DataError"]
__version__ = "0.1.0"
