"""core.scoring.score_file.score_file: input flavours, rejects, file errors, atomicity."""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.scoring.layout import InputFileError
from core.scoring.reader import PixelCsvReader
from core.scoring.score_file import ScoreSummary, score_file
from model.config import ModelConfig
from model.network import init_params
from model.predict import predict_proba_pixels
from tests.support import PIXELS, TEST_HEADER, TRAIN_HEADER, image, line, linear_softmax

# ----------------------------------------------------------------------------- helpers


def echo_pixel0(pixels: np.ndarray) -> np.ndarray:
    """Predicts digit (pixel0 % 10) with probability 0.91: outcomes are easy to work out."""
    digit = pixels[:, 0].astype(int) % 10
    proba = np.full((len(pixels), 10), 0.01, np.float32)
    proba[np.arange(len(pixels)), digit] = 0.91
    return proba


def write(path: Path, lines: list[str], end: str = "\n") -> Path:
    path.write_bytes((end.join(lines) + end).encode())
    return path


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def expected(images: list[list[int]], predict=linear_softmax) -> tuple[list[int], list[float]]:
    """Labels and the Confidence as written (6 decimals), scoring ``images`` one by one."""
    proba = np.concatenate([predict(np.asarray([im], np.uint8)) for im in images])
    labels = proba.argmax(axis=1)
    return labels.tolist(), np.round(proba[np.arange(len(images)), labels], 6).tolist()


def run(tmp_path: Path, src: Path, predict=linear_softmax, **kw) -> ScoreSummary:
    return score_file(src, tmp_path / "out.csv", tmp_path / "rejects.csv", predict, **kw)


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


# ----------------------------------------------------------------------------- flavours


def test_kaggle_test_csv(tmp_path):
    images = [image(i) for i in range(3)]
    src = write(tmp_path / "test.csv", [TEST_HEADER] + [line(im) for im in images])
    s = run(tmp_path, src)
    rows = read_csv(tmp_path / "out.csv")
    assert list(rows[0]) == ["ImageId", "Label", "Confidence"]
    labels, conf = expected(images)
    assert [int(r["ImageId"]) for r in rows] == [1, 2, 3]
    assert [int(r["Label"]) for r in rows] == labels
    assert [float(r["Confidence"]) for r in rows] == conf  # scored alone or in a batch
    assert (s.rows, s.scored, s.rejected, s.has_labels) == (3, 3, 0, False)
    assert s.accuracy is None and s.confusion_matrix is None and s.rejects is None
    assert sum(s.label_counts.values()) == 3 and sorted(s.label_counts) == list(range(10))
    assert s.output == str(tmp_path / "out.csv") and s.file == str(src)
    assert not (tmp_path / "rejects.csv").exists()
    assert leftovers(tmp_path) == []


def test_kaggle_train_csv_reports_accuracy_and_confusion(tmp_path):
    # echo_pixel0 predicts pixel0 % 10: rows 1-2 are right (3->3, 7->7), row 3 is wrong
    # (true 1, predicted 4), so accuracy is 2/3 and the matrix has three 1s.
    rows = [[3, 3] + [0] * 783, [7, 17] + [0] * 783, [1, 24] + [0] * 783]
    src = write(tmp_path / "train.csv", [TRAIN_HEADER] + [line(r) for r in rows])
    s = run(tmp_path, src, predict=echo_pixel0)
    out = read_csv(tmp_path / "out.csv")
    assert list(out[0]) == ["ImageId", "Label", "Confidence", "TrueLabel"]
    assert [(r["Label"], r["TrueLabel"]) for r in out] == [("3", "3"), ("7", "7"), ("4", "1")]
    assert [float(r["Confidence"]) for r in out] == pytest.approx([0.91] * 3)
    assert s.has_labels and s.accuracy == pytest.approx(2 / 3)
    cm = np.zeros((10, 10), int)
    cm[3, 3] = cm[7, 7] = cm[1, 4] = 1
    assert s.confusion_matrix == cm.tolist()
    assert s.label_counts == {d: int(d in (3, 4, 7)) for d in range(10)}
    json.dumps(s.to_dict())  # JSON-ready


@pytest.mark.parametrize("with_label", [False, True])
def test_headerless(tmp_path, with_label):
    images = [image(i) for i in range(3)]
    body = [line(([i] if with_label else []) + im) for i, im in enumerate(images)]
    s = run(tmp_path, write(tmp_path / "in.csv", body))
    out = read_csv(tmp_path / "out.csv")
    assert [int(r["Label"]) for r in out] == expected(images)[0]
    assert ("TrueLabel" in out[0]) == with_label == s.has_labels
    if with_label:
        assert [r["TrueLabel"] for r in out] == ["0", "1", "2"]


def test_pixel_columns_matched_by_name_in_any_order(tmp_path):
    images = [image(i) for i in range(3)]
    order = np.random.default_rng(1).permutation(784)
    header = ",".join(["label"] + [PIXELS[j] for j in order])
    body = [line([5] + [im[j] for j in order]) for im in images]
    run(tmp_path, write(tmp_path / "in.csv", [header] + body))
    out = read_csv(tmp_path / "out.csv")
    assert [int(r["Label"]) for r in out] == expected(images)[0]


def test_extra_columns_carried_through_verbatim(tmp_path):
    images = [image(i) for i in range(3)]
    header = "id," + TRAIN_HEADER + ",note"
    body = [
        "a1,4," + line(images[0]) + ",plain",
        '"b,2",4,' + line(images[1]) + ',"says ""hi"""',  # quoted: the careful path
        "c3,4," + line(images[2]) + ",",
    ]
    s = run(tmp_path, write(tmp_path / "in.csv", [header] + body))
    out = read_csv(tmp_path / "out.csv")
    assert list(out[0]) == ["ImageId", "Label", "Confidence", "TrueLabel", "id", "note"]
    assert [(r["id"], r["note"]) for r in out] == [
        ("a1", "plain"),
        ("b,2", 'says "hi"'),
        ("c3", ""),
    ]
    assert [int(r["Label"]) for r in out] == expected(images)[0]
    assert s.scored == 3


def test_gzip_input(tmp_path):
    images = [image(i) for i in range(3)]
    src = tmp_path / "test.csv.gz"
    src.write_bytes(
        gzip.compress(("\n".join([TEST_HEADER] + [line(i) for i in images]) + "\n").encode())
    )
    s = run(tmp_path, src)
    assert s.scored == 3
    assert [int(r["Label"]) for r in read_csv(tmp_path / "out.csv")] == expected(images)[0]


def test_parquet_output(tmp_path):
    images = [image(i) for i in range(3)]
    src = write(
        tmp_path / "in.csv",
        ["id," + TRAIN_HEADER] + [f"x{i},{i}," + line(im) for i, im in enumerate(images)],
    )
    s = score_file(
        src, tmp_path / "out.parquet", tmp_path / "rej.csv", linear_softmax, fmt="parquet"
    )
    table = pq.read_table(tmp_path / "out.parquet")
    assert table.column_names == ["ImageId", "Label", "Confidence", "TrueLabel", "id"]
    assert [str(t) for t in table.schema.types] == ["int64", "int8", "float", "int8", "string"]
    labels, conf = expected(images)
    assert table.column("ImageId").to_pylist() == [1, 2, 3]
    assert table.column("Label").to_pylist() == labels
    assert table.column("Confidence").to_pylist() == np.float32(conf).tolist()
    assert table.column("id").to_pylist() == ["x0", "x1", "x2"]
    assert s.output == str(tmp_path / "out.parquet")


def test_crlf_line_endings_and_line_numbers(tmp_path):
    body = [line(image(0)), line(image(1)[:11]), line(image(2))]
    src = write(tmp_path / "in.csv", [TEST_HEADER] + body, end="\r\n")
    s = run(tmp_path, src)
    assert (s.scored, s.rejected) == (2, 1)
    assert (tmp_path / "rejects.csv").read_text() == (
        'ImageId,Line,Reason\n2,3,"expected 784 fields, got 11"\n'
    )


def test_odd_but_valid_values_are_accepted(tmp_path):
    # Whitespace, leading zeros, a sign and quotes go the careful way and still score.
    im = image(0)
    variants = [
        ["7"] + [str(v) for v in im[1:]],
        [" 7 "] + [str(v) for v in im[1:]],
        ["007"] + [str(v) for v in im[1:]],
        ["+7"] + [str(v) for v in im[1:]],
        ['"7"'] + [str(v) for v in im[1:]],
    ]
    s = run(tmp_path, write(tmp_path / "in.csv", [TEST_HEADER] + [",".join(v) for v in variants]))
    assert (s.scored, s.rejected) == (5, 0)
    out = read_csv(tmp_path / "out.csv")
    assert len({(r["Label"], r["Confidence"]) for r in out}) == 1


def test_final_newline_is_not_a_row_but_missing_one_is_fine(tmp_path):
    body = "\n".join([TEST_HEADER, line(image(0)), line(image(1))])
    (tmp_path / "a.csv").write_text(body)  # no final newline
    assert run(tmp_path, tmp_path / "a.csv").rows == 2
    (tmp_path / "b.csv").write_text(body + "\n")
    assert run(tmp_path, tmp_path / "b.csv").rows == 2


def test_all_rows_rejected_gives_header_only_output(tmp_path):
    calls = []

    def predict(x):
        calls.append(len(x))
        return linear_softmax(x)

    s = run(tmp_path, write(tmp_path / "in.csv", [TEST_HEADER, "1,2,3", "x"]), predict=predict)
    assert (s.rows, s.scored, s.rejected) == (2, 0, 2)
    assert calls == []
    assert (tmp_path / "out.csv").read_text() == "ImageId,Label,Confidence\n"


def test_header_only_file_scores_nothing(tmp_path):
    s = run(tmp_path, write(tmp_path / "in.csv", [TRAIN_HEADER]))
    assert (s.rows, s.scored, s.accuracy) == (0, 0, None)
    assert s.confusion_matrix == np.zeros((10, 10), int).tolist()


# ----------------------------------------------------------------------------- bad rows


def _with(col: int, value: str, label: object = None) -> str:
    vals = [str(v) for v in image(5)]
    vals[col] = value
    return ",".join(([str(label)] if label is not None else []) + vals)


@pytest.mark.parametrize(
    ("bad_line", "reason"),
    [
        (line(image(5)[:12]), '"expected 784 fields, got 12"'),  # CSV-quoted: has a comma
        (line(image(5) + [0]), '"expected 784 fields, got 785"'),
        (_with(37, "abc"), "pixel37: 'abc' is not an integer"),
        (_with(5, "300"), "pixel5: 300 is outside 0-255"),
        (_with(5, "-1"), "pixel5: -1 is outside 0-255"),
        (_with(0, ""), "pixel0: empty"),
        (_with(783, "  "), "pixel783: empty"),
        (_with(3, "5.0"), "pixel3: '5.0' is not an integer"),
        (_with(3, "1_0"), "pixel3: '1_0' is not an integer"),
        (_with(3, "0x1"), "pixel3: '0x1' is not an integer"),
        (_with(9, "0" * 30), None),  # leading zeros: fine, value 0
        ("", "empty row"),
        ("   ", "empty row"),
        (_with(2, '"1'), "unbalanced quotes (quoted newlines are not supported)"),
        (_with(2, '"1"'), None),  # quoted, balanced: fine
    ],
)
def test_bad_row_goes_to_rejects_with_exact_reason(tmp_path, bad_line, reason):
    lines = [TEST_HEADER, line(image(1)), bad_line, line(image(2))]
    s = run(tmp_path, write(tmp_path / "in.csv", lines))
    if reason is None:
        assert (s.scored, s.rejected) == (3, 0)
        return
    assert (s.rows, s.scored, s.rejected) == (3, 2, 1)
    # The bad row is data row 2 on physical line 3 (after the header); ``reason`` is given
    # as it appears in the CSV.
    assert (tmp_path / "rejects.csv").read_text() == f"ImageId,Line,Reason\n2,3,{reason}\n"
    assert s.rejects == str(tmp_path / "rejects.csv")
    assert [r["ImageId"] for r in read_csv(tmp_path / "out.csv")] == ["1", "3"]


@pytest.mark.parametrize(
    ("label", "reason"),
    [
        ("12", "label: 12 is outside 0-9"),
        ("x", "label: 'x' is not an integer"),
        ("", "label: empty"),
    ],
)
def test_bad_label_is_rejected(tmp_path, label, reason):
    lines = [TRAIN_HEADER, _with(0, "0", 3), _with(0, "0", label)]
    s = run(tmp_path, write(tmp_path / "in.csv", lines))
    assert (s.scored, s.rejected) == (1, 1)
    assert (tmp_path / "rejects.csv").read_text() == f"ImageId,Line,Reason\n2,3,{reason}\n"


def test_reason_names_the_first_bad_field_in_file_order(tmp_path):
    # Headerless with label: the label column comes first, so it is reported first.
    lines = [_with(0, "999", label="x")]
    run(tmp_path, write(tmp_path / "in.csv", lines))
    assert (
        tmp_path / "rejects.csv"
    ).read_text() == "ImageId,Line,Reason\n1,1,label: 'x' is not an integer\n"


def test_reasons_with_commas_are_csv_quoted(tmp_path):
    run(tmp_path, write(tmp_path / "in.csv", [TEST_HEADER, _with(1, '"a,b"')]))
    rows = read_csv(tmp_path / "rejects.csv")
    assert rows == [{"ImageId": "1", "Line": "2", "Reason": "pixel1: 'a,b' is not an integer"}]


def test_blank_lines_in_the_middle_are_rejected_rows(tmp_path):
    text = TEST_HEADER + "\n" + line(image(0)) + "\n\n" + line(image(1)) + "\n\n"
    (tmp_path / "in.csv").write_text(text)
    s = run(tmp_path, tmp_path / "in.csv")
    # Line 5 is a blank line followed by the file's final newline: still a (blank) row.
    assert (s.rows, s.scored, s.rejected) == (4, 2, 2)
    assert (tmp_path / "rejects.csv").read_text() == (
        "ImageId,Line,Reason\n2,3,empty row\n4,5,empty row\n"
    )


def test_quoted_newline_is_rejected_not_swallowed(tmp_path):
    header = "id," + TEST_HEADER
    lines = [header, '"two\nlines",' + line(image(0)), "ok," + line(image(1))]
    s = run(tmp_path, write(tmp_path / "in.csv", lines))
    # Both halves of the split record are rejected; the line after them is scored.
    assert (s.rows, s.scored, s.rejected) == (3, 1, 2)
    assert (tmp_path / "rejects.csv").read_text() == (
        "ImageId,Line,Reason\n"
        "1,2,unbalanced quotes (quoted newlines are not supported)\n"
        "2,3,unbalanced quotes (quoted newlines are not supported)\n"
    )


def test_stale_rejects_file_is_removed(tmp_path):
    (tmp_path / "rejects.csv").write_text("ImageId,Line,Reason\n9,10,old\n")
    s = run(tmp_path, write(tmp_path / "in.csv", [TEST_HEADER, line(image(0))]))
    assert s.rejects is None and not (tmp_path / "rejects.csv").exists()


@pytest.mark.parametrize(
    "content",
    [b"pixel0,pixel1\n1,2\n", b"ImageId,Label,Confidence\n", b"", b"ImageId,Line,Reason,x\n"],
)
def test_a_file_at_the_rejects_path_that_is_not_ours_is_left_alone(tmp_path, content):
    # Issue 13: the "stale rejects" of one job were another job's input, and were deleted.
    (tmp_path / "rejects.csv").write_bytes(content)
    src = write(tmp_path / "in.csv", [TEST_HEADER, line(image(0))])
    assert run(tmp_path, src).rejects is None
    assert (tmp_path / "rejects.csv").read_bytes() == content


@pytest.mark.parametrize(
    "header", [b"ImageId,Line,Reason\r\n", b"\xef\xbb\xbfImageId,Line,Reason\n"]
)
def test_our_rejects_saved_by_a_spreadsheet_are_still_ours(tmp_path, header):
    (tmp_path / "rejects.csv").write_bytes(header + b"9,10,old\r\n")
    assert run(tmp_path, write(tmp_path / "in.csv", [TEST_HEADER, line(image(0))])).rejects is None
    assert not (tmp_path / "rejects.csv").exists()


def _long_line_file(path: Path, n: int, at: list[int], length: int, end: bytes = b"\n") -> Path:
    """``n`` rows of images, rows ``at`` replaced by ``length`` bytes of digits and commas."""
    long = (b"1," * (length // 2 + 1))[:length]
    rows = [long if i in at else line(image(i)).encode() for i in range(n)]
    path.write_bytes(end.join([TEST_HEADER.encode()] + rows) + end)
    return path


def test_a_line_over_1_mib_is_one_rejected_row(tmp_path):
    # Issue 13: one such line in the middle used to fail the whole file (0 of 100 scored).
    src = _long_line_file(tmp_path / "in.csv", 100, [49], 1_500_000)
    s = run(tmp_path, src)
    assert (s.rows, s.scored, s.rejected) == (100, 99, 1)
    assert (tmp_path / "rejects.csv").read_text() == (
        "ImageId,Line,Reason\n50,51,line is 1500000 bytes long; the limit is 1048576 (1 MiB)\n"
    )
    ids = [int(r["ImageId"]) for r in read_csv(tmp_path / "out.csv")]
    assert ids == [i for i in range(1, 101) if i != 50]
    labels, _ = expected([image(i) for i in range(100) if i != 49])
    assert [int(r["Label"]) for r in read_csv(tmp_path / "out.csv")] == labels


@pytest.mark.parametrize("chunk_rows", [1, 2, 3, 8192])
@pytest.mark.parametrize("end", [b"\n", b"\r\n"])
def test_long_lines_anywhere_and_of_any_size_over_the_cap(tmp_path, chunk_rows, end):
    # First data row, two in a row, the last one (no final newline), one that just fits, and
    # one of 3 MiB; lengths are exact, whatever block or chunk a line starts in.
    cap = 1 << 20
    src = tmp_path / "in.csv"
    rows = [b"1," * (cap // 2 + 7), b"2," * (cap // 2 + 1), line(image(1)).encode()]
    rows += [b"9," * (cap // 2 - 1) + b"9", line(image(2)).encode(), b"3" * (3 << 20)]
    src.write_bytes(end.join([TEST_HEADER.encode()] + rows))  # no final newline
    s = run(tmp_path, src, chunk_rows=chunk_rows)
    assert (s.rows, s.scored, s.rejected) == (6, 2, 4)
    got = [(r["ImageId"], r["Reason"]) for r in read_csv(tmp_path / "rejects.csv")]
    assert [i for i, _ in got] == ["1", "2", "4", "6"]
    lengths = [int(why.split()[2]) for _, why in got if why.startswith("line is")]
    n_cr = len(end) - 1  # the line's own bytes before its newline
    assert lengths == [cap + 14 + n_cr, cap + 2 + n_cr, 3 << 20]
    assert got[2][1] == f"expected 784 fields, got {cap // 2}"  # 1 MiB - 1 bytes: under the cap


def test_skipping_a_long_line_holds_none_of_it(tmp_path):
    import tracemalloc

    src = _long_line_file(tmp_path / "in.csv", 5, [2], 40 << 20)
    tracemalloc.start()
    try:
        with PixelCsvReader(src, chunk_rows=2) as reader:
            rejects = [r for chunk in reader.chunks() for r in chunk.rejects]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert rejects == [(0, f"line is {40 << 20} bytes long; the limit is 1048576 (1 MiB)")]
    assert peak < 8 << 20  # a few 1 MiB blocks, not the 40 MiB line


def test_a_long_line_in_a_gzip_file(tmp_path):
    src = _long_line_file(tmp_path / "in.csv", 6, [3], 2 << 20)
    gz = tmp_path / "in.csv.gz"
    gz.write_bytes(gzip.compress(src.read_bytes()))
    assert run(tmp_path, gz).rejected == 1
    assert (tmp_path / "rejects.csv").read_bytes() == (
        b"ImageId,Line,Reason\n4,5,line is 2097152 bytes long; the limit is 1048576 (1 MiB)\n"
    )


# ----------------------------------------------------------------------------- bad files


def _png(d: Path) -> Path:
    path = d / "digit.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR" + bytes(range(256)))
    return path


def _empty(d: Path) -> Path:
    (d / "e.csv").write_bytes(b"")
    return d / "e.csv"


def _bytes(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _truncated_gzip() -> bytes:
    text = "\n".join([TEST_HEADER] + [line(image(i)) for i in range(50)]) + "\n"
    data = gzip.compress(text.encode())
    return data[: len(data) // 2]


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda d: d / "nope.csv", "nope.csv: file not found"),
        (lambda d: d, "is a directory"),
        (_empty, "e.csv: is empty"),
        (_png, "is binary"),
        (
            lambda d: write(d / "h.csv", ["id,label,pixel0,pixel1", "1,2,3,4"]),
            "lacks 782 of the 784 pixel columns",
        ),
        (
            lambda d: write(d / "d.csv", [TEST_HEADER + ",pixel5", line(image(0) + [1])]),
            "duplicate column 'pixel5'",
        ),
        (lambda d: write(d / "n.csv", ["1,2,3", "4,5,6"]), "has no header and 3 columns"),
        (lambda d: write(d / "c.csv", ["Label," + TEST_HEADER]), "column 'Label' clashes"),
        (lambda d: write(d / "b.csv", ["", TEST_HEADER]), "line 1 is blank"),
        (lambda d: _bytes(d / "x.csv.gz", b"pixel0,pixel1\n"), "named .gz but is not gzip"),
        (lambda d: _bytes(d / "t.csv.gz", _truncated_gzip()), "corrupt or truncated gzip"),
        (lambda d: _bytes(d / "z.csv", b"PK\x03\x04rest"), "is a zip archive"),
        (  # line 1 decides the layout, so it cannot be skipped like a later long line
            lambda d: _bytes(d / "long.csv", b"1" * (2 << 20) + b"\n" + line(image(0)).encode()),
            "line 1 is longer than 1 MiB",
        ),
    ],
)
def test_bad_file_raises_and_writes_nothing(tmp_path, make, match):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    src = make(tmp_path)
    with pytest.raises(InputFileError, match=match) as info:
        score_file(src, out_dir / "out.csv", out_dir / "rej.csv", linear_softmax, chunk_rows=4)
    assert "\n" not in str(info.value) and str(src) in str(info.value)
    assert isinstance(info.value, ValueError)
    assert list(out_dir.iterdir()) == []


def test_same_path_for_input_and_output_is_refused(tmp_path):
    src = write(tmp_path / "in.csv", [TEST_HEADER, line(image(0))])
    with pytest.raises(ValueError, match="three different files"):
        score_file(src, src, tmp_path / "rej.csv", linear_softmax)


# ----------------------------------------------------------------------------- atomicity


def test_crash_mid_run_leaves_no_output_and_no_temp_files(tmp_path):
    (tmp_path / "out.csv").write_text("previous,run\n")
    src = write(tmp_path / "in.csv", [TEST_HEADER] + [line(image(i)) for i in range(5)] + ["bad"])
    calls = []

    def flaky(x):
        calls.append(len(x))
        if len(calls) == 2:
            raise RuntimeError("model died")
        return linear_softmax(x)

    with pytest.raises(RuntimeError, match="model died"):
        run(tmp_path, src, predict=flaky, chunk_rows=2)
    assert calls == [2, 2]
    assert (tmp_path / "out.csv").read_text() == "previous,run\n"  # untouched
    assert not (tmp_path / "rejects.csv").exists()
    assert leftovers(tmp_path) == []


def test_crash_on_corrupt_gzip_midway_leaves_nothing(tmp_path):
    src = _bytes(tmp_path / "t.csv.gz", _truncated_gzip())
    with pytest.raises(InputFileError, match="truncated gzip"):
        run(tmp_path, src, chunk_rows=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.csv.gz"]


def test_predictor_with_wrong_output_shape_is_an_error(tmp_path):
    src = write(tmp_path / "in.csv", [TEST_HEADER, line(image(0))])
    with pytest.raises(ValueError, match=r"returned shape \(1, 3\)"):
        run(tmp_path, src, predict=lambda x: np.ones((len(x), 3), np.float32))
    assert leftovers(tmp_path) == [] and not (tmp_path / "out.csv").exists()


# ----------------------------------------------------------------------------- accounting

_BAD_KINDS = ["short", "long", "word", "big", "negative", "empty_field", "blank", "quote", "label"]


def _random_row(kind: str, rng: np.random.Generator, with_label: bool) -> str:
    vals = [str(v) for v in image(int(rng.integers(1 << 30)))]
    col = int(rng.integers(784))
    if kind == "short":
        vals = vals[: int(rng.integers(0, 784))]
    elif kind == "long":
        vals += ["0"] * int(rng.integers(1, 4))
    elif kind == "word":
        vals[col] = "abc"
    elif kind == "big":
        vals[col] = str(int(rng.integers(256, 2000)))
    elif kind == "negative":
        vals[col] = "-3"
    elif kind == "empty_field":
        vals[col] = ""
    elif kind == "blank":
        return ""
    elif kind == "quote":
        vals[col] = '"' + vals[col]
    elif kind == "label" and not with_label:
        vals[col] = "x"  # no label column to spoil: spoil a pixel instead
    label = str(int(rng.integers(10, 99)) if kind == "label" else int(rng.integers(10)))
    return ",".join(([label] if with_label else []) + vals)


@settings(max_examples=50, deadline=None)
@given(
    kinds=st.lists(st.sampled_from(["ok"] * 4 + _BAD_KINDS), min_size=1, max_size=12),
    seed=st.integers(0, 2**32 - 1),
    header=st.booleans(),
    with_label=st.booleans(),
    crlf=st.booleans(),
    chunk_rows=st.integers(1, 5),
)
def test_every_row_lands_in_exactly_one_output(
    tmp_path_factory, kinds, seed, header, with_label, crlf, chunk_rows
):
    tmp = tmp_path_factory.mktemp("prop")
    rng = np.random.default_rng(seed)
    lines = [_random_row(k, rng, with_label) for k in kinds]
    if header:
        lines.insert(0, TRAIN_HEADER if with_label else TEST_HEADER)
    elif kinds[0] != "ok":  # headerless files take their width from line 1
        lines.insert(0, _random_row("ok", rng, with_label))
    src = write(tmp / "in.csv", lines, end="\r\n" if crlf else "\n")
    s = score_file(src, tmp / "out.csv", tmp / "rej.csv", linear_softmax, chunk_rows=chunk_rows)

    n = len(lines) - header
    scored = [int(r["ImageId"]) for r in read_csv(tmp / "out.csv")]
    rejected = read_csv(tmp / "rej.csv") if s.rejected else []
    assert s.rows == n and s.scored + s.rejected == n
    assert (len(scored), len(rejected)) == (s.scored, s.rejected)
    assert sorted(scored + [int(r["ImageId"]) for r in rejected]) == list(range(1, n + 1))
    assert scored == sorted(scored)
    for r in rejected:
        assert int(r["Line"]) == int(r["ImageId"]) + header
    bad = {i + 1 for i, k in enumerate(kinds) if k != "ok"}
    if not header and kinds[0] != "ok":
        bad = {i + 1 for i in bad}
    assert {int(r["ImageId"]) for r in rejected} == bad
    assert leftovers(tmp) == []


def test_chunking_does_not_change_results(tmp_path):
    rng = np.random.default_rng(7)
    kinds = ["ok", "word", "ok", "ok", "blank", "big", "ok", "short", "ok", "ok", "ok"]
    lines = [TEST_HEADER] + [_random_row(k, rng, False) for k in kinds]
    src = write(tmp_path / "in.csv", lines)
    results = []
    for chunk_rows in (1, 2, 3, 4, 100):
        for workers in (1, 2):
            out, rej = (
                tmp_path / f"o{chunk_rows}{workers}.csv",
                tmp_path / f"r{chunk_rows}{workers}.csv",
            )
            score_file(src, out, rej, linear_softmax, chunk_rows=chunk_rows, workers=workers)
            rows = read_csv(out)
            results.append(
                (
                    [(r["ImageId"], r["Label"]) for r in rows],
                    np.array([float(r["Confidence"]) for r in rows]),
                    rej.read_bytes(),
                )
            )
    for ids, conf, rej in results[1:]:
        assert ids == results[0][0] and rej == results[0][2]
        assert np.array_equal(conf, results[0][1])  # written values: 6 decimals


def test_summary_to_dict_round_trips_json(tmp_path):
    s = run(tmp_path, write(tmp_path / "in.csv", [TRAIN_HEADER, _with(0, "0", 1)]))
    d = json.loads(json.dumps(s.to_dict()))
    assert set(d) == {
        "file",
        "rows",
        "scored",
        "rejected",
        "label_counts",
        "has_labels",
        "accuracy",
        "confusion_matrix",
        "output",
        "rejects",
        "seconds",
    }
    assert isinstance(s.to_dict()["label_counts"], dict) and d["seconds"] >= 0


def test_output_csv_is_readable_by_pandas(tmp_path):
    import pandas as pd

    run(tmp_path, write(tmp_path / "in.csv", [TRAIN_HEADER] + [_with(0, "0", i) for i in range(3)]))
    df = pd.read_csv(io.BytesIO((tmp_path / "out.csv").read_bytes()))
    assert list(df.columns) == ["ImageId", "Label", "Confidence", "TrueLabel"]
    assert df["ImageId"].tolist() == [1, 2, 3]


def test_outputs_get_the_usual_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        run(tmp_path, write(tmp_path / "in.csv", [TEST_HEADER, line(image(0)), "bad"]))
    finally:
        os.umask(old)
    for name in ("out.csv", "rejects.csv"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o644


def test_headerless_file_whose_first_row_is_bad(tmp_path):
    # One word among 784 numbers does not make line 1 a header: it is row 1, rejected.
    lines = [_with(10, "abc"), line(image(1))]
    s = run(tmp_path, write(tmp_path / "in.csv", lines))
    assert (s.rows, s.scored, s.rejected) == (2, 1, 1)
    assert (tmp_path / "rejects.csv").read_text() == (
        "ImageId,Line,Reason\n1,1,pixel10: 'abc' is not an integer\n"
    )


# ----------------------------------------------------------------------------- one row, one result
# README, "Scoring": a row's Label and written Confidence depend only on the row and the
# model - not on its chunk, block or position, the runner, or the CPU's BLAS kernel.

_MLP_CONFIG = ModelConfig(seed=3)  # 784-10-10, the default network: a hidden ReLU layer too
_SPELLINGS = ["7", " 7 ", "007", "+7", '"7"']  # one value, five ways (careful path but "7")


def mlp(pixels: np.ndarray) -> np.ndarray:
    return predict_proba_pixels(init_params(_MLP_CONFIG), pixels)


def one_image_file(path: Path, n: int = 20_000) -> Path:
    """``n`` copies of one image; every 997th spells its pixel0 (7) another valid way."""
    rest = line(image(0)[1:])
    lines = [TEST_HEADER]
    for i in range(n):
        spelling = _SPELLINGS[(i // 997) % 5] if i % 997 == 0 else "7"
        lines.append(f"{spelling},{rest}")
    return write(path, lines)


def written_pairs(path: Path) -> set[tuple[str, str]]:
    return {(r["Label"], r["Confidence"]) for r in read_csv(path)}


def test_one_image_anywhere_gets_one_label_and_confidence(tmp_path):
    src = one_image_file(tmp_path / "in.csv")
    pairs = set()
    for chunk_rows, workers in [(8192, 2), (1000, 1), (173, 2)]:
        out = tmp_path / f"out{chunk_rows}.csv"
        s = score_file(src, out, tmp_path / "rej.csv", mlp, chunk_rows=chunk_rows, workers=workers)
        assert (s.scored, s.rejected) == (20_000, 0)
        pairs |= written_pairs(out)
    # And alone, as a one-row file.
    alone = write(tmp_path / "alone.csv", [TEST_HEADER, "7," + line(image(0)[1:])])
    score_file(alone, tmp_path / "alone.out.csv", tmp_path / "rej.csv", mlp)
    pairs |= written_pairs(tmp_path / "alone.out.csv")
    assert len(pairs) == 1, pairs
    (label, confidence), *_ = pairs
    assert len(confidence.split(".")[-1]) <= 6


_SCORE_SCRIPT = """
import sys
from functools import partial
from pathlib import Path
from model.config import ModelConfig
from model.network import init_params
from model.predict import predict_proba_pixels
from core.scoring.score_file import score_file
params = init_params(ModelConfig(seed=3))
paths = [Path(arg) for arg in sys.argv[1:]]
for src, out in zip(paths[::2], paths[1::2], strict=True):  # (input, output) pairs
    rejects = out.with_name(out.name + ".rejects.csv")
    score_file(src, out, rejects, partial(predict_proba_pixels, params), chunk_rows=500)
"""


def _blas_kernels() -> list[str]:
    """OpenBLAS kernels this CPU can run ("" is the one OpenBLAS picks itself)."""
    if platform.machine() not in ("x86_64", "AMD64") or not os.path.exists("/proc/cpuinfo"):
        return [""]
    flags = set()
    with open("/proc/cpuinfo") as f:
        for text in f:
            if text.startswith("flags"):
                flags = set(text.split(":", 1)[1].split())
                break
    kernels = ["", "Prescott", "Sandybridge" if "avx" in flags else ""]
    if {"avx2", "fma"} <= flags:
        kernels.append("Haswell")  # the kernels of the AMD EPYC in issue 13
    if {"avx512f", "avx512bw", "avx512vl"} <= flags:
        kernels.append("SkylakeX")
    return sorted(set(kernels))


@pytest.mark.e2e  # one process per BLAS kernel
def test_blas_kernel_does_not_change_any_row(tmp_path):
    # Each run forces one of OpenBLAS's kernels (OPENBLAS_CORETYPE); all write the same bytes.
    src = tmp_path / "in.csv"
    images = [line(image(i)) for i in range(300)]
    write(src, [TEST_HEADER] + images + images[::-1] + images[:7])
    one = one_image_file(tmp_path / "one.csv", 3000)
    outputs = {}
    for kernel in _blas_kernels():
        env = {**os.environ, "OPENBLAS_CORETYPE": kernel}
        files = {name: (path, tmp_path / f"{name}-{kernel or 'auto'}.csv")
                 for name, path in (("many", src), ("one", one))}  # fmt: skip
        paths = [str(p) for pair in files.values() for p in pair]
        cmd = [sys.executable, "-c", _SCORE_SCRIPT, *paths]
        done = subprocess.run(cmd, env=env, cwd=Path(__file__).parents[1], capture_output=True)
        assert done.returncode == 0, done.stderr.decode()
        for name, (_, out) in files.items():
            outputs.setdefault(name, {})[kernel] = out.read_bytes()
    for name, by_kernel in outputs.items():
        assert len(set(by_kernel.values())) == 1, f"{name}: differs by kernel {list(by_kernel)}"
    assert len(written_pairs(tmp_path / "one-auto.csv")) == 1
