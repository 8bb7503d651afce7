"""Load a joblib file without ever running code from it.

``joblib.load`` unpickles, and unpickling can import and call anything the file names:
a model file that someone could write is code. ``safe_load`` subclasses joblib's own
unpickler (so its NumPy array handling is unchanged) and lets the file name only the
globals that rebuild NumPy arrays and scalars, the approach of
``torch.load(weights_only=True)``. Plain containers and values (dict, list, tuple, str,
bytes, int, float, bool, None) need no global, so everything else is refused before it
is imported, let alone called.
"""

from __future__ import annotations

from typing import Any

from joblib.numpy_pickle import NumpyUnpickler

from core.errors import PipelineError
from core.storage import Location, location, store_errors

# (module, name) pairs a model or fit file may name. NumPy moved its internals from
# numpy.core to numpy._core in 2.0; files written by either spelling load.
ALLOWED_GLOBALS: frozenset[tuple[str, str]] = frozenset(
    {
        ("joblib.numpy_pickle", "NumpyArrayWrapper"),  # joblib's placeholder for an array
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy.core.multiarray", "_reconstruct"),
    }
)


class UnsafeFileError(PipelineError):
    """A joblib file that needs more than arrays and plain values, or is not one at all."""


class _AllowListUnpickler(NumpyUnpickler):
    # joblib reads the items of an object array with a nested unpickler whose find_class
    # is this one, so they are held to the same list.
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in ALLOWED_GLOBALS:
            raise UnsafeFileError(
                f"{self.filename}: refused to load: it names the global {module}.{name}, "
                "and only NumPy arrays and plain values are allowed"
            )
        return super().find_class(module, name)


def safe_load(path: str | Location) -> Any:
    """The object in the uncompressed joblib file ``path``, built from allowed globals only.

    Raises UnsafeFileError (one line naming the file) for a forbidden global or a file
    that is not an uncompressed joblib pickle; OSError if it cannot be read.
    """
    path = location(path)
    with store_errors(path, "read"), path.open("rb") as handle:
        try:
            return _AllowListUnpickler(str(path), handle, ensure_native_byte_order=True).load()
        except UnsafeFileError:
            raise
        except Exception as err:  # any malformed byte stream is the file's fault
            raise UnsafeFileError(f"{path}: not a readable joblib file ({err})") from None
