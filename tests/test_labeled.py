"""core.labeled without Prefect, on tiny synthetic files: every accepted format, rejects under
and over the limit, the leakage guard, refused files, finding files (local and on the S3
test server), the holdout's stability, and reading the data back for training."""

from __future__ import annotations

import gzip
import hashlib
import random
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from core.dataset import PIXEL_COLUMNS, write_split
from core.labeled import (
    PIXELS,
    LabeledDataError,
    convert_labeled,
    expand_sources,
    file_sha256,
    holdout_count,
    holdout_data,
    holdout_mask,
    pixels_of_column,
    row_keys,
    training_data,
)
from core.storage import location
from tests.support import synthetic_digits

TEST_IMAGES, TEST_LABELS = synthetic_digits(20, seed=2)
FLAT_TEST = TEST_IMAGES.reshape(-1, 784)


def digits(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` new labeled digits: uint8 pixels (n, 784) and labels (n,)."""
    images, labels = synthetic_digits(n, seed)
    return images.reshape(n, 784), labels


@pytest.fixture
def test_split(tmp_path: Path) -> Path:
    path = tmp_path / "test.parquet"
    write_split(path, TEST_IMAGES, TEST_LABELS, metadata={})
    return path


def csv_text(
    pixels: np.ndarray, labels: np.ndarray, header: bool = True, shuffled: bool = False
) -> str:
    """A labeled CSV: Kaggle's header (or none, label first); ``shuffled`` puts the columns
    in a random order and adds an ``id`` column."""
    names = ["label", *PIXEL_COLUMNS] + (["id"] if shuffled else [])
    order = list(range(len(names)))
    if shuffled:
        random.Random(0).shuffle(order)
    lines = [",".join(names[c] for c in order)] if header else []
    for i, (row, label) in enumerate(zip(pixels.tolist(), labels.tolist(), strict=True)):
        values = [label, *row] + ([f"id{i}"] if shuffled else [])
        lines.append(",".join(str(values[c]) for c in order))
    return "\n".join(lines) + "\n"


def write_parquet(path: Path, pixels: np.ndarray, labels: np.ndarray, floats: bool = False):
    """``label`` + ``pixel0..pixel783``: int64 pixels, or float32 pixel / 255."""
    values = pixels.astype(np.float32) / np.float32(255) if floats else pixels.astype(np.int64)
    columns = {"label": pa.array(labels.astype(np.int64))}
    columns |= {p: pa.array(values[:, k]) for k, p in enumerate(PIXEL_COLUMNS)}
    pq.write_table(pa.table(columns), path)
    return path


def convert(source: Path, out: Path, test_split: Path, limit: float = 0.01) -> dict:
    return convert_labeled(source, file_sha256(source), out, test_split, limit)


def converted(record: dict) -> pa.Table:
    return pq.read_table(record["path"])


# ----------------------------------------------------------------------------- formats


@pytest.mark.parametrize(
    "fmt", ["kaggle-shuffled", "headerless", "gzip", "parquet-ints", "parquet-floats"]
)
def test_every_format_converts_to_the_same_rows(fmt, tmp_path, test_split):
    pixels, labels = digits(30, seed=5)
    src = tmp_path / {"gzip": "a.csv.gz"}.get(fmt, f"a.{'parquet' if 'parquet' in fmt else 'csv'}")
    if fmt == "kaggle-shuffled":
        src.write_text(csv_text(pixels, labels, shuffled=True))
    elif fmt == "headerless":
        src.write_text(csv_text(pixels, labels, header=False))
    elif fmt == "gzip":
        src.write_bytes(gzip.compress(csv_text(pixels, labels).encode()))
    else:
        write_parquet(src, pixels, labels, floats=fmt == "parquet-floats")
    record = convert(src, tmp_path / "out", test_split)
    sha = hashlib.sha256(src.read_bytes()).hexdigest()
    assert record == {
        "source": str(src),
        "name": src.name,
        "sha256": sha,
        "path": str(tmp_path / "out" / f"{sha}.parquet"),
        "parquet_sha256": hashlib.sha256(Path(record["path"]).read_bytes()).hexdigest(),
        "rows": 30,
        "accepted": 30,
        "rejected": 0,
        "leaked": 0,
        "rejects": None,
    }
    table = converted(record)
    assert table.schema.names == ["label", PIXELS, "row_key", "line"]
    assert table.num_rows == 30
    got = pixels_of_column(table.column(PIXELS))
    assert np.array_equal(got, pixels)
    assert np.array_equal(table.column("label").to_numpy(), labels)
    assert np.array_equal(table.column("row_key").to_numpy(), row_keys(pixels))
    first_line = 1 if fmt in ("headerless", "parquet-ints", "parquet-floats") else 2
    assert table.column("line").to_numpy().tolist() == list(range(first_line, first_line + 30))
    assert not list((tmp_path / "out").glob("*.rejects.csv"))


def test_row_key_is_blake2b_of_the_pixel_bytes():
    pixels, _ = digits(3, seed=1)
    expected = [
        int.from_bytes(hashlib.blake2b(row.tobytes(), digest_size=8).digest(), "little")
        for row in pixels
    ]
    assert row_keys(pixels).tolist() == expected


def test_converting_again_gives_the_same_file(tmp_path, test_split):
    src = tmp_path / "a.csv"
    src.write_text(csv_text(*digits(10, seed=3)))
    first = convert(src, tmp_path / "one", test_split)
    second = convert(src, tmp_path / "two", test_split)
    assert first["parquet_sha256"] == second["parquet_sha256"]


def test_a_header_only_file_has_no_rows(tmp_path, test_split):
    src = tmp_path / "empty.csv"
    src.write_text(csv_text(*digits(0, seed=1)))
    record = convert(src, tmp_path / "out", test_split)
    assert (record["rows"], record["accepted"], record["rejected"]) == (0, 0, 0)
    assert converted(record).num_rows == 0


# ----------------------------------------------------------------------------- rejects


def bad_csv(path: Path, n: int, bad_rows: dict[int, tuple[int, int]]) -> Path:
    """Kaggle CSV of ``n`` rows; ``bad_rows`` maps a 0-based row to (pixel, value)."""
    lines = csv_text(*digits(n, seed=9)).splitlines()
    for row, (pixel, value) in bad_rows.items():
        fields = lines[row + 1].split(",")
        fields[pixel + 1] = str(value)
        lines[row + 1] = ",".join(fields)
    path.write_text("\n".join(lines) + "\n")
    return path


def test_rejects_under_the_limit_are_listed_and_the_rest_converted(tmp_path, test_split):
    src = bad_csv(tmp_path / "a.csv", 200, {4: (3, 300), 150: (0, -1)})
    record = convert(src, tmp_path / "out", test_split, limit=0.01)
    assert (record["rows"], record["accepted"], record["rejected"]) == (200, 198, 2)
    assert record["accepted"] + record["rejected"] == record["rows"]
    assert record["rejects"] == str(tmp_path / "out" / f"{record['sha256']}.rejects.csv")
    # Scoring's columns and reasons: ImageId is the data row, Line the file's line.
    assert Path(record["rejects"]).read_text() == (
        "ImageId,Line,Reason\n"
        "5,6,pixel3: 300 is outside 0-255\n"
        "151,152,pixel0: -1 is outside 0-255\n"
    )
    lines = converted(record).column("line").to_numpy()
    assert 6 not in lines and 152 not in lines and len(lines) == 198


def test_a_file_over_the_limit_is_refused_whole_with_its_rejects_written(tmp_path, test_split):
    src = bad_csv(tmp_path / "a.csv", 100, {1: (0, 256), 2: (0, 256), 3: (0, 999)})
    out = tmp_path / "out"
    with pytest.raises(LabeledDataError) as info:
        convert(src, out, test_split, limit=0.02)
    sha = file_sha256(src)
    rejects = out / f"{sha}.rejects.csv"
    assert str(info.value) == (
        f"{src}: 3 of 100 rows rejected (3%), over the limit of 2% "
        f"(--max-reject-fraction); see {rejects}"
    )
    assert rejects.read_text().splitlines()[1:] == [
        "2,3,pixel0: 256 is outside 0-255",
        "3,4,pixel0: 256 is outside 0-255",
        "4,5,pixel0: 999 is outside 0-255",
    ]
    assert not (out / f"{sha}.parquet").exists()
    assert [p.name for p in out.iterdir()] == [rejects.name]  # no temporary left behind
    # Exactly at the limit is not over it.
    assert convert(src, out, test_split, limit=0.03)["accepted"] == 97


def test_parquet_rows_are_checked_one_by_one(tmp_path, test_split):
    pixels, labels = digits(10, seed=4)
    floats = pixels.astype(np.float64) / 255
    floats[1, 5] = 0.5  # between two gray levels
    floats[2, 0] = 1.5
    floats[3, 7] = np.nan
    float_labels = labels.astype(np.float64)
    float_labels[4] = 3.5
    float_labels[5] = 12
    columns = {"label": pa.array(float_labels, mask=np.arange(10) == 6)}  # row 7: null
    columns |= {p: pa.array(floats[:, k]) for k, p in enumerate(PIXEL_COLUMNS)}
    columns["pixel9"] = pa.array(floats[:, 9], mask=np.arange(10) == 7)
    src = tmp_path / "a.parquet"
    pq.write_table(pa.table(columns), src)
    record = convert(src, tmp_path / "out", test_split, limit=1.0)
    assert (record["rows"], record["accepted"], record["rejected"]) == (10, 3, 7)
    assert Path(record["rejects"]).read_text().splitlines() == [
        "ImageId,Line,Reason",
        "2,2,pixel5: 0.5 is not k/255 for an integer k",
        "3,3,pixel0: 1.5 is outside 0-1",
        "4,4,pixel7: nan is outside 0-1",
        "5,5,label: 3.5 is not an integer",
        "6,6,label: 12 is outside 0-9",
        "7,7,label: null",
        "8,8,pixel9: null",
    ]
    table = converted(record)
    assert table.column("line").to_numpy().tolist() == [1, 9, 10]
    assert np.array_equal(pixels_of_column(table.column(PIXELS)), pixels[[0, 8, 9]])


def test_parquet_integer_pixels_outside_0_255_are_rejected(tmp_path, test_split):
    pixels, labels = digits(4, seed=4)
    values = pixels.astype(np.int64)
    values[2, 783] = 256
    columns = {"label": pa.array(labels.astype(np.int8))}
    columns |= {p: pa.array(values[:, k]) for k, p in enumerate(PIXEL_COLUMNS)}
    src = tmp_path / "a.parquet"
    pq.write_table(pa.table(columns), src)
    record = convert(src, tmp_path / "out", test_split, limit=0.5)
    assert Path(record["rejects"]).read_text().splitlines()[1:] == [
        "3,3,pixel783: 256 is outside 0-255"
    ]


# ----------------------------------------------------------------------------- leakage


def test_rows_identical_to_a_test_image_are_rejected_and_counted(tmp_path, test_split):
    pixels, labels = digits(50, seed=7)
    pixels[10] = FLAT_TEST[3]
    pixels[20] = FLAT_TEST[17]
    near = FLAT_TEST[5].copy()
    near[400] ^= 1  # one pixel off: not a copy
    pixels[30] = near
    src = tmp_path / "a.csv"
    src.write_text(csv_text(pixels, labels))
    record = convert(src, tmp_path / "out", test_split, limit=0.05)
    assert (record["accepted"], record["rejected"], record["leaked"]) == (48, 2, 2)
    assert Path(record["rejects"]).read_text().splitlines() == [
        "ImageId,Line,Reason",
        "11,12,identical to MNIST test image 3",
        "21,22,identical to MNIST test image 17",
    ]
    kept = pixels_of_column(converted(record).column(PIXELS))
    assert any(np.array_equal(row, near) for row in kept)


def test_leaked_rows_count_against_the_limit(tmp_path, test_split):
    src = tmp_path / "a.parquet"
    write_parquet(src, FLAT_TEST[:4], TEST_LABELS[:4])
    with pytest.raises(LabeledDataError, match=r"4 of 4 rows rejected \(100%\)"):
        convert(src, tmp_path / "out", test_split)


# ----------------------------------------------------------------------------- refused files


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        (
            "test.csv",  # Kaggle's test.csv: pixels without labels
            ",".join(PIXEL_COLUMNS) + "\n" + ",".join(["0"] * 784) + "\n",
            r"^{src}: has no label column; a labeled CSV has a header with label",
        ),
        (
            "pixels.csv",  # headerless, 784 columns: no label either
            ",".join(["0"] * 784) + "\n",
            r"^{src}: has no label column",
        ),
        ("few.csv", "label,a,b\n1,2,3\n", r"^{src}: header lacks 784 of the 784 pixel columns"),
        ("a.zip", b"PK\x03\x04 not really", r"^{src}: is a zip archive, not a CSV"),
        ("blank.csv", b"", r"^{src}: is empty"),
    ],
)
def test_a_file_of_no_accepted_format_is_refused_in_one_line(
    name, content, message, tmp_path, test_split
):
    src = tmp_path / name
    if isinstance(content, str):
        src.write_text(content)
    else:
        src.write_bytes(content)
    with pytest.raises(LabeledDataError, match=message.format(src=src)) as info:
        convert(src, tmp_path / "out", test_split)
    assert "\n" not in str(info.value)
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


@pytest.mark.parametrize(
    ("columns", "message"),
    [
        ({"pixel0": [1]}, r"has no label column"),
        ({"label": [1], "pixel0": [1]}, r"lacks 783 of the 784 pixel columns \(pixel1, "),
        (
            {"label": [1], **{p: [0] for p in PIXEL_COLUMNS}, "pixel3": ["x"]},
            r"column pixel3 is string; expected integers 0-255 or floats in \[0, 1\]",
        ),
    ],
)
def test_a_parquet_file_without_the_columns_is_refused(columns, message, tmp_path, test_split):
    src = tmp_path / "a.parquet"
    pq.write_table(pa.table(columns), src)
    with pytest.raises(LabeledDataError, match=message):
        convert(src, tmp_path / "out", test_split)


def test_a_truncated_parquet_file_is_refused(tmp_path, test_split):
    src = tmp_path / "a.parquet"
    write_parquet(src, *digits(5, seed=1))
    src.write_bytes(src.read_bytes()[:-100])
    with pytest.raises(LabeledDataError, match=rf"^{src}: not a readable Parquet file"):
        convert(src, tmp_path / "out", test_split)


# ----------------------------------------------------------------------------- finding files


def test_expand_sources_sorts_dedups_skips_folders_and_makes_paths_absolute(tmp_path, monkeypatch):
    inbox = tmp_path / "inbox"
    (inbox / "sub.csv").mkdir(parents=True)  # a folder named like a file: skipped
    for name in ("b.csv", "a.csv", "c.parquet"):
        (inbox / name).write_text("x")
    monkeypatch.chdir(tmp_path)
    found = expand_sources(["inbox/*.csv", str(inbox / "a.csv"), "inbox/c.parquet", "inbox/*"])
    assert found == [inbox / "a.csv", inbox / "b.csv", inbox / "c.parquet"]
    assert all(p.is_absolute() for p in found)
    assert expand_sources([f"file://{inbox}/b.csv"]) == [inbox / "b.csv"]


@pytest.mark.parametrize("entry", ["inbox/*.csv", "inbox/missing.csv", "inbox"])
def test_an_entry_matching_no_file_is_one_line(entry, tmp_path, monkeypatch):
    (tmp_path / "inbox").mkdir()
    (tmp_path / "inbox" / "a.parquet").write_text("x")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(LabeledDataError) as info:
        expand_sources(["inbox/a.parquet", entry])
    assert str(info.value) == f"{entry}: no file matches"


def test_file_sha256_is_the_bytes_hash(tmp_path):
    src = tmp_path / "a.csv"
    src.write_bytes(b"label,pixel0\n" * 1000)
    assert file_sha256(src) == hashlib.sha256(src.read_bytes()).hexdigest()
    with pytest.raises(LabeledDataError, match=r"gone.csv: file not found"):
        file_sha256(tmp_path / "gone.csv")


def test_a_store_inbox(s3_bucket, tmp_path, test_split):
    pixels, labels = digits(40, seed=8)
    local = tmp_path / "a.csv"
    local.write_text(csv_text(pixels, labels))
    write_parquet(tmp_path / "b.parquet", *digits(20, seed=9))
    fs = location(s3_bucket).fs
    fs.put_file(str(local), f"{s3_bucket[5:]}/labeled/2026-12/a.csv")
    fs.put_file(str(tmp_path / "b.parquet"), f"{s3_bucket[5:]}/labeled/2026-12/b.parquet")
    fs.put_file(str(local), f"{s3_bucket[5:]}/labeled/2026-12/sub/c.csv")
    found = expand_sources([f"{s3_bucket}/labeled/2026-12/*", f"{s3_bucket}/labeled/2026-12/a.csv"])
    assert [str(p) for p in found] == [
        f"{s3_bucket}/labeled/2026-12/a.csv",
        f"{s3_bucket}/labeled/2026-12/b.parquet",
    ]
    assert file_sha256(found[0]) == file_sha256(local)
    out = location(f"{s3_bucket}/data/labeled")
    records = [convert_labeled(src, file_sha256(src), out, test_split, 0.01) for src in found]
    assert records[0]["path"] == f"{s3_bucket}/data/labeled/{file_sha256(local)}.parquet"
    assert [r["accepted"] for r in records] == [40, 20]
    X, y = training_data(test_split, records, holdout=0.0)
    assert X.shape == (20 + 40 + 20, 784)
    assert np.array_equal(X[20:60], pixels) and np.array_equal(y[20:60], labels)
    for entry in (f"{s3_bucket}/labeled/2027-01/*.csv", f"{s3_bucket}/labeled/nothing.csv"):
        with pytest.raises(LabeledDataError, match=r"^s3://.*: no file matches$"):
            expand_sources([entry])


# ----------------------------------------------------------------------------- holdout


def test_holdout_mask_is_a_function_of_the_key_alone():
    keys = row_keys(np.random.default_rng(0).integers(0, 256, (20_000, 784), dtype=np.uint8))
    mask = holdout_mask(keys, 0.1)
    assert 0.09 < mask.mean() < 0.11
    assert np.array_equal(holdout_mask(keys[::-1], 0.1), mask[::-1])
    assert not holdout_mask(keys, 0.0).any() and holdout_mask(keys, 1.0).all()
    assert np.all(holdout_mask(keys, 0.05) <= mask)  # a smaller share is a subset
    with pytest.raises(ValueError, match="holdout fraction must be in"):
        holdout_mask(keys, 1.5)


def test_a_grown_file_keeps_its_old_rows_holdout(tmp_path, test_split):
    pixels, labels = digits(300, seed=11)
    src = tmp_path / "a.csv"
    src.write_text(csv_text(pixels[:200], labels[:200]))
    before = convert(src, tmp_path / "out", test_split)
    src.write_text(csv_text(pixels, labels))  # 100 more rows appended
    after = convert(src, tmp_path / "out", test_split)
    assert before["sha256"] != after["sha256"]  # a changed file is a new file
    X_before, _ = holdout_data(before, 0.2)
    X_after, _ = holdout_data(after, 0.2)
    assert len(X_before) > 0 and np.array_equal(X_after[: len(X_before)], X_before)
    held = {row.tobytes() for row in X_after}
    old_held = {row.tobytes() for row in pixels[:200] if row.tobytes() in held}
    assert old_held == {row.tobytes() for row in X_before}


# ----------------------------------------------------------------------------- reading back


def test_training_data_is_mnist_then_each_files_training_rows(tmp_path, test_split):
    train_images, train_labels = synthetic_digits(30, seed=1)
    train_split = tmp_path / "train.parquet"
    write_split(train_split, train_images, train_labels, metadata={})
    records = []
    for name, seed in (("a.csv", 12), ("b.parquet", 13)):
        pixels, labels = digits(100, seed)
        src = tmp_path / name
        if name.endswith(".csv"):
            src.write_text(csv_text(pixels, labels))
        else:
            write_parquet(src, pixels, labels, floats=True)
        records.append((convert(src, tmp_path / "out", test_split), pixels, labels))
    X, y = training_data(train_split, [r for r, _, _ in records], holdout=0.25)
    assert X.dtype == y.dtype == np.uint8
    parts_X, parts_y = [train_images.reshape(30, 784)], [train_labels]
    for record, pixels, labels in records:
        held = holdout_mask(row_keys(pixels), 0.25)
        parts_X.append(pixels[~held])
        parts_y.append(labels[~held])
        X_held, y_held = holdout_data(record, 0.25)
        assert np.array_equal(X_held, pixels[held]) and np.array_equal(y_held, labels[held])
        assert holdout_count(record, 0.25) == held.sum() > 0
    assert np.array_equal(X, np.concatenate(parts_X))
    assert np.array_equal(y, np.concatenate(parts_y))
    X0, y0 = training_data(train_split, [], holdout=0.25)
    assert np.array_equal(X0, parts_X[0]) and np.array_equal(y0, train_labels)
    empty_X, empty_y = holdout_data(records[0][0], 0.0)
    assert empty_X.shape == (0, 784) and empty_y.shape == (0,)


# ----------------------------------------------------------------------------- the generator


def test_the_shifted_digits_generator(tmp_path, test_split):
    from benchmarks import shifted_digits as gen

    images, labels = synthetic_digits(50, seed=3)
    assert np.array_equal(
        gen.transform(images, np.zeros((50, 2)), np.zeros(50)), images.reshape(50, -1)
    )
    down = gen.transform(images[:1], np.array([[2, 0]]), np.zeros(1)).reshape(28, 28)
    assert np.array_equal(down[2:], images[0, :-2]) and not down[:2].any()
    # Seeded, and independent of the batch size.
    whole = list(gen.shifted_batches(images, labels, 300, seed=1, batch_rows=300))
    parts = list(gen.shifted_batches(images, labels, 300, seed=1, batch_rows=64))
    assert np.array_equal(whole[0][0], np.concatenate([p for p, _ in parts]))
    assert not np.array_equal(
        whole[0][0], next(gen.shifted_batches(images, labels, 300, seed=2))[0]
    )
    # What it writes is what converts.
    pixels, digit_labels = whole[0]
    for path, write in (
        (tmp_path / "s.csv.gz", gen.write_csv),
        (tmp_path / "s.parquet", gen.write_parquet),
    ):
        assert write(path, iter(whole)) == 300
        X, y = holdout_data(convert(path, tmp_path / "out", test_split), 1.0)
        assert np.array_equal(X, pixels) and np.array_equal(y, digit_labels)


def test_an_id_column_named_like_a_scoring_output_is_fine_for_training(tmp_path):
    """Only scoring adds ImageId, Label, ...: a labeled file may carry such a column."""
    test_split = tmp_path / "test.parquet"
    images, labels = synthetic_digits(5, seed=2)
    write_split(location(test_split), images, labels, metadata={})
    rows, _ = synthetic_digits(3, seed=9)
    src = tmp_path / "ids.csv"
    header = "ImageId,label," + ",".join(f"pixel{k}" for k in range(784))
    lines = [
        f"{i + 1},{i % 10}," + ",".join(map(str, img.reshape(784))) for i, img in enumerate(rows)
    ]
    src.write_text("\n".join([header, *lines]) + "\n")
    record = convert_labeled(
        location(src), file_sha256(location(src)), location(tmp_path / "out"),
        location(test_split), 0.0,
    )  # fmt: skip
    assert (record["rows"], record["accepted"], record["rejected"]) == (3, 3, 0)
