"""Load a joblib file without ever running code from it, or trusting a dtype from it.

``joblib.load`` unpickles, and unpickling can import and call anything the file names:
a model file that someone could write is code. ``safe_load`` subclasses joblib's own
unpickler (so its NumPy array handling is unchanged) and lets the file name only the
globals that rebuild NumPy arrays and scalars, the approach of
``torch.load(weights_only=True)``. Plain containers and values (dict, list, tuple, str,
bytes, int, float, bool, None) need no global, so everything else is refused before it
is imported, let alone called.

Those globals are not harmless by themselves: ``dtype.__setstate__`` believes the state
the file gives it, so a file can forge a dtype whose fields hold object pointers while
its flags say they do not, and an array of it laid over bytes from the file crashes the
process (or worse) when an element is read. So every dtype the file builds or uses must
be a plain bool, integer, float or complex one, checked where it is built and again
wherever an array or scalar is made from it.
"""

from __future__ import annotations

import pickle
from typing import Any

import numpy as np
from joblib.numpy_pickle import NumpyArrayWrapper, NumpyUnpickler
from numpy._core import multiarray

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

PLAIN_KINDS = "biufc"  # bool, signed and unsigned integer, float, complex


class UnsafeFileError(PipelineError):
    """A joblib file that needs more than arrays and plain values, or is not one at all."""


class _Refused(Exception):
    """Why the file is refused; safe_load puts the file's name in front."""


def is_plain_dtype(dtype: Any) -> bool:
    """True for a bool, integer, float or complex dtype, in either byte order, that is
    exactly what its type code says: no fields, no subarray, no object, no metadata."""
    if not isinstance(dtype, np.dtype) or dtype.kind not in PLAIN_KINDS:
        return False
    try:
        honest = np.dtype(dtype.str)
    except TypeError:  # a forged item size has no type code
        return False
    # __reduce__ carries a dtype's whole state (fields, sizes, flags): a forged one differs.
    return dtype.__reduce__() == honest.__reduce__()


def _require_plain(dtype: Any) -> None:
    if not is_plain_dtype(dtype):
        what = dtype.str if isinstance(dtype, np.dtype) else repr(dtype)[:40]
        raise _Refused(
            f"it uses the dtype {what}, and only bool, integer, float and complex "
            "dtypes are allowed"
        )


def _dtype(spec: Any, align: Any = False, copy: Any = True) -> np.dtype:
    """numpy.dtype as the file sees it: refuses anything but a plain dtype. Always a copy,
    so that BUILD sets the byte order of this dtype, never of NumPy's shared one."""
    dtype = np.dtype(spec, align=bool(align), copy=True)
    _require_plain(dtype)
    return dtype


class _ArrayType:
    """numpy.ndarray as the file sees it: the type that _reconstruct and joblib's wrapper
    rebuild, which the file may name but not call, since ndarray(shape, dtype, buffer)
    lays an array over bytes from the file."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise _Refused("it calls numpy.ndarray, which no NumPy or joblib pickle does")


_ARRAY_TYPE = _ArrayType()


def _reconstruct(subtype: Any, shape: Any, spec: Any) -> np.ndarray:
    """numpy's _reconstruct (an empty array that BUILD then fills), plain ndarrays only."""
    if subtype is not _ARRAY_TYPE:
        raise _Refused("it rebuilds an array of a type other than numpy.ndarray")
    _require_plain(np.dtype(spec))
    return multiarray._reconstruct(np.ndarray, shape, spec)


def _scalar(dtype: Any, *args: Any) -> Any:
    """numpy's scalar (a scalar from raw bytes), for plain dtypes only."""
    _require_plain(dtype)
    return multiarray.scalar(dtype, *args)


class _ArrayWrapper(NumpyArrayWrapper):
    """joblib's array placeholder; joblib calls read right after BUILD has set its
    attributes from the file, so the dtype is checked before any byte of the array is."""

    def read(self, unpickler: Any, ensure_native_byte_order: bool) -> Any:
        if self.subclass is not _ARRAY_TYPE:
            raise _Refused("it stores an array of a type other than numpy.ndarray")
        _require_plain(self.dtype)
        self.subclass = np.ndarray
        return super().read(unpickler, ensure_native_byte_order)


# What the file gets for each allowed name (either spelling of NumPy's module): the
# builders above, which check every dtype before NumPy uses it.
_CHECKED = {
    "NumpyArrayWrapper": _ArrayWrapper,
    "ndarray": _ARRAY_TYPE,
    "dtype": _dtype,
    "scalar": _scalar,
    "_reconstruct": _reconstruct,
}


class _AllowListUnpickler(NumpyUnpickler):
    # joblib reads the items of an object array with a nested unpickler whose find_class
    # is this one, so they are held to the same list (object arrays are refused anyway).
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in ALLOWED_GLOBALS:
            raise _Refused(
                f"it names the global {module}.{name}, "
                "and only NumPy arrays and plain values are allowed"
            )
        return _CHECKED[name]

    def load_build(self) -> None:
        """BUILD: ``stack[-2].__setstate__(stack[-1])``, checked before it runs."""
        target, state = self.stack[-2], self.stack[-1]
        if isinstance(target, np.dtype):
            # Of a plain dtype's state, a file may only choose the byte order: the rest is
            # what forges a dtype, so it must be exactly that of the honest one.
            order = state[1] if isinstance(state, tuple) and len(state) > 1 else None
            if order not in ("<", ">", "|") or state != target.newbyteorder(order).__reduce__()[2]:
                raise _Refused(f"it sets the state of the dtype {target.str} to a forged one")
        elif isinstance(target, np.ndarray):
            for item in state if isinstance(state, tuple) else ():  # (…, dtype, …, data)
                if isinstance(item, np.dtype):
                    _require_plain(item)
        elif not isinstance(target, _ArrayWrapper):
            # Nothing else in a NumPy or joblib pickle has its state set, and setting it
            # on the builders above (or their classes) would change them for later loads.
            raise _Refused(f"it sets the state of a {type(target).__name__}")
        super().load_build()

    # The pure-Python unpickler dispatches opcodes through this table, not by method name.
    dispatch = NumpyUnpickler.dispatch.copy()
    dispatch[pickle.BUILD[0]] = load_build


def safe_load(path: str | Location) -> Any:
    """The object in the uncompressed joblib file ``path``, built from allowed globals and
    plain dtypes only.

    Raises UnsafeFileError (one line naming the file) for a forbidden global or dtype, or
    a file that is not an uncompressed joblib pickle; OSError if it cannot be read.
    """
    path = location(path)
    with store_errors(path, "read"), path.open("rb") as handle:
        try:
            return _AllowListUnpickler(str(path), handle, ensure_native_byte_order=True).load()
        except _Refused as err:
            raise UnsafeFileError(f"{path}: refused to load: {err}") from None
        except Exception as err:  # any malformed byte stream is the file's fault
            raise UnsafeFileError(f"{path}: not a readable joblib file ({err})") from None
