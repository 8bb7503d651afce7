"""safe_load's dtypes: only plain bool, integer, float and complex arrays and scalars load.

A file that names nothing but NumPy's own builders can still forge a dtype: BUILD hands
``dtype.__setstate__`` a state whose fields hold an object while its flags say none, and
an array of it laid over bytes from the file turns those bytes into pointers. The forged
files below are built by reducers that emit exactly those opcodes; each is loaded in a
child process, so a loader that lets one through crashes the child, not pytest.
"""

from __future__ import annotations

import io
import pickle
import subprocess
import sys

import joblib
import numpy as np
import pytest
from joblib.numpy_pickle import NumpyArrayWrapper
from numpy._core.multiarray import _reconstruct, scalar

from core.safe_joblib import UnsafeFileError, safe_load
from tests.support import REPO

# The state of a dtype with one field, "f", an object pointer at offset 0, whose flags
# (the last 0) claim it holds no object: reading an element follows the pointer.
FORGED_STATE = (3, "|", None, ("f",), {"f": (np.dtype("O8"), 0)}, 8, 1, 0)
# A float64's state but for its flags, which claim it holds objects: no dtype but plain
# ones is needed to write it, so only the check of BUILD itself catches it.
FLAGGED_FLOAT_STATE = (3, "<", None, None, None, -1, -1, 1)


class ForgedDtype:
    """Pickles as numpy.dtype(code) followed by BUILD with a forged state."""

    def __init__(self, code: str = "V8", state: tuple = FORGED_STATE) -> None:
        self.code, self.state = code, state

    def __reduce__(self):
        return (np.dtype, (self.code, False, True), self.state)


class ForgedArray:
    """Pickles as an ndarray of a forged dtype over 8 bytes from the file (b'AAAAAAAA')."""

    def __init__(self, dtype: ForgedDtype | None = None) -> None:
        self.dtype = dtype or ForgedDtype()

    def __reduce__(self):
        state = (1, (1,), self.dtype, False, b"A" * 8)
        return (_reconstruct, (np.ndarray, (0,), b"b"), state)


class ForgedScalar:
    def __reduce__(self):
        return (scalar, (ForgedDtype(), b"A" * 8))


class ArrayOverBuffer:
    """numpy.ndarray(shape, dtype, buffer) called directly, as no NumPy pickle does."""

    def __init__(self, dtype) -> None:
        self.dtype = dtype

    def __reduce__(self):
        return (np.ndarray, ((1,), self.dtype, b"A" * 8))


class ForgedWrapper:
    """joblib's array placeholder with a forged dtype; joblib reads the array's bytes from
    the file right after the BUILD opcode (see ``wrapper_file``)."""

    def __reduce__(self):
        state = {"subclass": np.ndarray, "shape": (1,), "order": "C", "dtype": ForgedDtype(),
                 "allow_mmap": False, "numpy_array_alignment_bytes": None}  # fmt: skip
        return (NumpyArrayWrapper, (np.ndarray, (1,), "C", np.dtype("f8")), state)


def forged_bundle(value=None) -> bytes:
    """A joblib file like a model bundle with ``value`` (the forged array) in its config."""
    buffer = io.BytesIO()
    joblib.dump({"config": {"seed": ForgedArray() if value is None else value}}, buffer)
    return buffer.getvalue()


def wrapper_file() -> bytes:
    # Protocol 2 has no frames, so the array bytes can follow the final BUILD directly.
    data = pickle.dumps(ForgedWrapper(), protocol=2)
    assert data.endswith(b"b.")
    return data[:-1] + b"A" * 8 + b"."


# Loads in a child and prints the value, which reads every element: exit 1 with the
# refusal on stderr, or a crash (-11) if the forged dtype got through.
CHILD = """
import sys
from core.safe_joblib import UnsafeFileError, safe_load
try:
    value = safe_load(sys.argv[1])
except UnsafeFileError as err:
    sys.exit(str(err))
print(repr(value))
"""


@pytest.mark.parametrize(
    "payload",
    [
        forged_bundle(),  # the reported exploit: a V8 dtype given object fields
        forged_bundle(ForgedArray(ForgedDtype("f8", FLAGGED_FLOAT_STATE))),
        forged_bundle(ForgedScalar()),
        forged_bundle(ArrayOverBuffer(ForgedDtype())),
        wrapper_file(),
    ],
    ids=["void-array", "flagged-float-array", "scalar", "ndarray-call", "joblib-wrapper"],
)
def test_a_forged_dtype_is_refused_before_any_element_is_read(tmp_path, payload):
    path = tmp_path / "model.joblib"
    path.write_bytes(payload)
    child = subprocess.run(
        [sys.executable, "-c", CHILD, str(path)],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert child.returncode == 1, f"exit {child.returncode}: {child.stderr[-2000:]}"
    assert child.stderr.startswith(f"{path}: refused to load: "), child.stderr
    assert "dtype" in child.stderr and child.stderr.count("\n") == 1, child.stderr


def test_the_forged_bundle_is_refused_in_process(tmp_path):
    path = tmp_path / "model.joblib"
    path.write_bytes(forged_bundle())
    with pytest.raises(UnsafeFileError, match=r"model.joblib: refused to load: .*dtype"):
        safe_load(path)


@pytest.mark.parametrize(
    "value",
    [
        np.array([1, "a"], dtype=object),
        np.zeros(2, dtype=[("a", "f4"), ("b", "i4")]),
        np.zeros(2, dtype=[("a", "f4", (2,))]),
        np.array(["2020-01-01"], dtype="M8[D]"),
        np.array([1], dtype="m8[s]"),
        np.array(["abc"]),
        np.array([b"abc"]),
        np.zeros(2, dtype="V4"),
        np.dtype("O"),
        np.datetime64("2020-01-01"),
        ArrayOverBuffer("f8"),  # a plain dtype, but laid over bytes from the file
    ],
    ids=[
        "object",
        "structured",
        "subarray",
        "datetime",
        "timedelta",
        "str",
        "bytes",
        "void",
        "bare-dtype",
        "datetime-scalar",
        "ndarray-call",
    ],  # fmt: skip
)
def test_every_other_dtype_is_refused(tmp_path, value):
    joblib.dump({"params": [value]}, tmp_path / "v.joblib")
    with pytest.raises(
        UnsafeFileError, match=r"v.joblib: refused to load: .*(numpy\.ndarray|dtype)"
    ):
        safe_load(tmp_path / "v.joblib")


@pytest.mark.parametrize(
    "dtype",
    [
        "?",
        "i1",
        "i2",
        "i4",
        "i8",
        "u1",
        "u2",
        "u4",
        "u8",
        "f2",
        "f4",
        "f8",
        "c8",
        "c16",
        ">i4",
        ">f4",
        ">c16",
        "<f8",
    ],  # fmt: skip
)
def test_plain_dtypes_load_in_either_byte_order(tmp_path, dtype):
    array = np.arange(6).reshape(2, 3).astype(dtype)
    value = {"joblib": array, "scalar": array[0, 1], "dtype": array.dtype}
    joblib.dump(value, tmp_path / "v.joblib")
    # pickle's own format rebuilds arrays with _reconstruct and BUILD, not joblib's wrapper
    (tmp_path / "v.pickle").write_bytes(pickle.dumps({"pickle": array}, protocol=4))
    loaded = {**safe_load(tmp_path / "v.joblib"), **safe_load(tmp_path / "v.pickle")}
    for key in ("joblib", "pickle"):
        np.testing.assert_array_equal(loaded[key], array)
        assert loaded[key].dtype.newbyteorder("=") == array.dtype.newbyteorder("=")
    assert loaded["scalar"] == array[0, 1] and loaded["dtype"] == array.dtype
