"""Exception types of imamatch. All derive from :class:`ImamatchError`."""


class ImamatchError(Exception):
    """Base class of every error imamatch raises on purpose."""


class ImageError(ImamatchError, ValueError):
    """An input image is missing, unreadable, or not a valid image array; the message names the input."""


class WeightsError(ImamatchError, ValueError):
    """A weights file is missing, not safetensors, truncated, or does not fit the network."""


class DataError(ImamatchError, FileNotFoundError):
    """A dataset folder or file is missing or malformed; the message names what is missing."""
