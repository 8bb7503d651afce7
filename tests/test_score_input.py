"""The CSV reader without Prefect: layout detection, the careful parser, and the fast scan
against the careful parser."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.scoring.careful import careful_chunk, careful_row
from core.scoring.layout import InputFileError, Layout, layout_from_first_line
from core.scoring.reader import PixelCsvReader
from tests.support import PIXELS, TEST_HEADER, TRAIN_HEADER, image, line

# ----------------------------------------------------------------------------- layout


def layout_of(first: str) -> Layout:
    return layout_from_first_line(Path("f.csv"), first.encode() + b"\n")


def test_kaggle_headers():
    test, train = layout_of(TEST_HEADER), layout_of(TRAIN_HEADER)
    assert test.has_header and test.label_col is None and test.pixel_cols == tuple(range(784))
    assert train.label_col == 0 and train.pixel_cols == tuple(range(1, 785))
    assert test.extra_cols == train.extra_cols == ()


def test_header_with_extras_and_reordering():
    lay = layout_of("id,pixel1,label,pixel0," + ",".join(PIXELS[2:]) + ", note ")
    assert lay.extra_names == ("id", "note")  # names are stripped
    assert lay.pixel_cols[:2] == (3, 1) and lay.label_col == 2


@pytest.mark.parametrize(
    ("first", "ncols", "label_col"),
    [(line(image(0)), 784, None), ("7," + line(image(0)), 785, 0)],
)
def test_headerless(first, ncols, label_col):
    lay = layout_of(first)
    assert not lay.has_header and lay.ncols == ncols and lay.label_col == label_col


def test_one_bad_value_in_line_1_does_not_make_it_a_header():
    # Majority vote: 783 integers and one word is a data row (whose word gets it rejected).
    assert not layout_of("abc," + line(image(0)[1:])).has_header


def test_bom_is_ignored(tmp_path):
    src = tmp_path / "bom.csv"
    src.write_bytes(b"\xef\xbb\xbf" + (TEST_HEADER + "\n" + line(image(0)) + "\n").encode())
    with PixelCsvReader(src) as r:
        assert r.layout.has_header and r.layout.names[0] == "pixel0"


def test_one_line_messages():
    with pytest.raises(InputFileError, match=r"^f.csv: has no header and 2 columns; expected"):
        layout_of("1,2")


# ----------------------------------------------------------------------------- careful row


def test_careful_row_reports_first_problem_in_file_order():
    lay = layout_of(TRAIN_HEADER)
    bad = ",".join(["3", "1", "x", "300"] + ["0"] * 781).encode()
    assert careful_row(bad, lay) == (None, [], "pixel1: 'x' is not an integer")
    long = ("3," + ",".join(["abcdefghijklmnopqrstuvwxyz"] + ["0"] * 783)).encode()
    assert careful_row(long, lay)[2] == "pixel0: 'abcdefghijklmnopqrst...' is not an integer"


# ----------------------------------------------------------------------------- fast == careful

# Tokens that stress the byte-level scan: boundaries of the 1-3 digit sum, of the range
# checks, and every way a field can be non-canonical yet valid, or invalid.
_TOKENS = [
    "0",
    "9",
    "10",
    "99",
    "100",
    "199",
    "200",
    "255",
    "256",
    "299",
    "999",
    "1000",
    "0000",
    "007",
    "0255",
    "00256",
    " 5",
    "5 ",
    "+5",
    "-0",
    "-1",
    "",
    "  ",
    '"5"',
    '"1,2"',
    "5\r",
    "\x00",
    "٥",
    "1_0",
    "5.0",
    "x",
    '"',
    'a"b',
    "\t7",
    "0x1",
    " 0X1f",
]
_EXTRA_TOKENS = ["", "id7", "a b", '"q,1"', '"say ""hi"""', "5", "\r", '"', "é", "x\x00y"]


def _mutated_row(rng: np.random.Generator, order: np.ndarray, label: bool, n_extra: int) -> str:
    """A row in canonical column order (label, pixels, extras), mutated, then permuted."""
    fields = [str(v) for v in image(int(rng.integers(1 << 30)))]
    if label:
        fields.insert(0, str(rng.integers(10)))
    fields += [str(rng.choice(["e1", "e22", ""])) for _ in range(n_extra)]
    ncols = len(fields)
    roll = rng.random()
    if roll < 0.07:
        return ""
    if roll > 0.4:  # otherwise a clean row
        for _ in range(int(rng.integers(1, 4))):
            col = int(rng.integers(ncols))
            fields[col] = str(rng.choice(_EXTRA_TOKENS if col >= ncols - n_extra else _TOKENS))
    fields = [fields[i] for i in order]
    if roll > 0.9:  # a wrong field count
        return ",".join(fields[: int(rng.integers(ncols))] if roll > 0.95 else fields + ["1"])
    return ",".join(fields)


def _read_all(path: Path, chunk_rows: int, fast: bool) -> tuple:
    with PixelCsvReader(path, chunk_rows=chunk_rows, workers=2) as r:
        if not fast:
            r.parse = careful_chunk
        ids, pixels, labels, extras, rejects = [], [], [], [], []
        for c in r.chunks():
            ids += (c.first_row + c.ok_rows).tolist()
            pixels.append(c.pixels)
            if c.labels is not None:
                labels += c.labels.tolist()
            extras += list(zip(*c.extras, strict=True)) if c.extras else []
            rejects += [(c.first_row + i, why) for i, why in c.rejects]
    return ids, np.concatenate(pixels or [np.zeros((0, 784), np.uint8)]), labels, extras, rejects


@settings(max_examples=50, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n_rows=st.integers(1, 30),
    label=st.booleans(),
    n_extra=st.integers(0, 2),
    crlf=st.booleans(),
    chunk_rows=st.integers(1, 9),
)
def test_fast_scan_agrees_with_careful_parser(
    tmp_path_factory, seed, n_rows, label, n_extra, crlf, chunk_rows
):
    rng = np.random.default_rng(seed)
    names = (["label"] if label else []) + PIXELS + [f"x{i}" for i in range(n_extra)]
    # Shuffle only sometimes: the natural order is the common (and sliced) case.
    order = rng.permutation(len(names)) if rng.random() < 0.5 else np.arange(len(names))
    names = [names[i] for i in order]
    rows = [_mutated_row(rng, order, label, n_extra) for _ in range(n_rows)]
    path = tmp_path_factory.mktemp("diff") / "in.csv"
    end = "\r\n" if crlf else "\n"
    path.write_bytes((end.join([",".join(names)] + rows) + end).encode())
    fast = _read_all(path, chunk_rows, fast=True)
    slow = _read_all(path, chunk_rows, fast=False)
    assert fast[0] == slow[0]
    np.testing.assert_array_equal(fast[1], slow[1])
    assert fast[2:] == slow[2:]
    assert len(fast[0]) + len(fast[4]) == n_rows


def test_fast_scan_accepts_real_looking_rows_without_the_careful_path(tmp_path, monkeypatch):
    import core.scoring.fast_scan as fast_scan

    def boom(*a):
        raise AssertionError("careful path used on a clean file")

    monkeypatch.setattr(fast_scan, "careful_row", boom)
    path = tmp_path / "in.csv"
    images = [image(i) for i in range(20)]
    path.write_text(
        "\n".join(
            ["id," + TRAIN_HEADER] + [f"r{i},{i % 10}," + line(im) for i, im in enumerate(images)]
        )
    )
    ids, pixels, labels, extras, rejects = _read_all(path, chunk_rows=7, fast=True)
    assert ids == list(range(20)) and rejects == []
    np.testing.assert_array_equal(pixels, np.array(images, np.uint8))
    assert labels == [i % 10 for i in range(20)]
    assert extras == [(f"r{i}",) for i in range(20)]
