"""Reading pickled index files without executing code: an unpickler that admits numpy arrays and plain
builtins only. Anything else (a function, ``os.system``, ``eval``…) raises :class:`DataError`."""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

from ..errors import DataError

_ALLOWED = {
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.dtypes", "Float64DType"), ("numpy.dtypes", "Float32DType"), ("numpy.dtypes", "Int64DType"),
    ("numpy.dtypes", "ObjectDType"), ("numpy.dtypes", "StrDType"),
    ("builtins", "list"), ("builtins", "dict"), ("builtins", "tuple"), ("builtins", "set"),
    ("builtins", "frozenset"), ("builtins", "int"), ("builtins", "float"), ("builtins", "complex"),
    ("builtins", "str"), ("builtins", "bytes"), ("builtins", "bytearray"), ("builtins", "bool"),
    ("builtins", "slice"), ("collections", "OrderedDict"), ("_codecs", "encode"),
}


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def safe_load(path: str | Path) -> Any:
    """Load a pickle that may only contain numpy arrays and builtins. Raises :class:`DataError`."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"index file not found: {path}")
    try:
        return _RestrictedUnpickler(io.BytesIO(path.read_bytes()), encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, AttributeError, ImportError, IndexError, TypeError, ValueError) as e:
        raise DataError(f"{path}: not a plain index pickle ({e})") from e
