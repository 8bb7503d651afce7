"""The scoring flow's reports read outputs wherever they were written: on disk or a store."""

from __future__ import annotations

import s3fs

from core.scoring.summary import DIGITS, rejects_report, summary_table

REJECTS = (
    'ImageId,Line,Reason\n3,4,pixel7: 300 is outside 0-255\n5,6,"expected 785 fields, got 2"\n'
)


def test_the_rejects_artifact_reads_a_rejects_file_on_a_store(s3_bucket):
    """It used the builtin open, so for an s3:// output it always said that it could not
    read the file."""
    url = f"{s3_bucket}/scored/bad.rejects.csv"
    s3fs.S3FileSystem(skip_instance_cache=True).pipe_file(url[5:], REJECTS.encode())
    report = rejects_report([{"file": "s3://in/bad.csv", "rejected": 2, "rejects": url}])
    assert "could not read" not in report, report
    assert "| 3 | 4 | pixel7: 300 is outside 0-255 |" in report
    assert "| 5 | 6 | expected 785 fields, got 2 |" in report
    assert "(all shown)" in report


def test_a_rejects_file_that_is_gone_is_said_in_the_report(tmp_path):
    report = rejects_report(
        [{"file": "bad.csv", "rejected": 1, "rejects": str(tmp_path / "gone.rejects.csv")}]
    )
    assert "could not read the rejects file" in report


def test_the_summary_lists_counts_and_paths_before_the_digit_columns():
    """The UI lists integer-like keys first, so the digit columns are named, not numbered."""
    f = {"file": "a.csv", "rows": 3, "scored": 3, "rejected": 0, "output": "a.p.csv",
         "rejects": None, "label_counts": {d: 0 for d in range(10)} | {1: 2, 7: 1},
         "has_labels": False}  # fmt: skip
    (row,) = summary_table([f])
    assert list(row) == ["file", "rows", "scored", "rejected", "output", "rejects", *DIGITS]
    assert not any(key.isdigit() for key in row)
    assert (row["digit 1"], row["digit 7"], row["digit 0"]) == (2, 1, 0)
