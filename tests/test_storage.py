"""core.storage and core.files against a real S3 API (moto's server on loopback)."""

from __future__ import annotations

from pathlib import Path

import pytest
from upath import UPath

from core.files import atomic_path, atomic_write_text, is_intact, seal, sha256_file
from core.storage import (
    StorageError,
    StorageURLError,
    check_bucket,
    conditional_put,
    etag,
    is_remote,
    location,
)
from tests.conftest import run_cli


def test_local_paths_stay_pathlib(tmp_path: Path) -> None:
    assert type(location(str(tmp_path))) is type(tmp_path)
    assert location(f"file://{tmp_path}") == tmp_path
    assert not is_remote(location("relative/folder"))


def test_unknown_scheme_is_one_line() -> None:
    with pytest.raises(StorageURLError, match=r"^nope://b/k: unknown storage scheme nope://"):
        location("nope://b/k")


def test_store_url_is_upath(s3_bucket: str) -> None:
    root = location(f"{s3_bucket}/artifacts")
    assert isinstance(root, UPath) and is_remote(root)
    assert str(root / "models" / "x.json") == f"{s3_bucket}/artifacts/models/x.json"


def test_atomic_write_and_seal_on_the_store(s3_bucket: str) -> None:
    dest = location(f"{s3_bucket}/a/b/report.md")
    atomic_write_text(dest, "hello\n")
    assert dest.read_text() == "hello\n"
    digest = seal(dest)
    assert digest == sha256_file(dest) and is_intact(dest)
    atomic_write_text(dest, "changed\n")
    assert not is_intact(dest)


def test_a_failed_write_leaves_the_final_key_alone(s3_bucket: str) -> None:
    dest = location(f"{s3_bucket}/keep.txt")
    atomic_write_text(dest, "previous\n")
    with pytest.raises(RuntimeError), atomic_path(dest) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash mid-write")
    assert dest.read_text() == "previous\n"
    assert [p.name for p in dest.parent.iterdir()] == ["keep.txt"]


def test_conditional_put_is_compare_and_swap(s3_bucket: str) -> None:
    dest = location(f"{s3_bucket}/models/champion.json")
    assert etag(dest) is None
    assert conditional_put(dest, b"first", None)
    assert not conditional_put(dest, b"again", None)  # exists now
    tag = etag(dest)
    assert conditional_put(dest, b"second", tag)
    assert not conditional_put(dest, b"stale", tag)  # changed since that read
    assert dest.read_bytes() == b"second"


def test_missing_bucket_names_the_url(s3_server) -> None:
    dest = location("s3://no-such-bucket-here/x.txt")
    with pytest.raises(StorageError, match="^s3://no-such-bucket-here/x.txt .*no such bucket"):
        atomic_write_text(dest, "x")


def test_check_bucket_only_looks(s3_server, tmp_path: Path) -> None:
    check_bucket(location(str(tmp_path / "no" / "such" / "folder")))  # local: nothing to check
    check_bucket(location(s3_server.bucket("bucket-that-is-there") + "/any/prefix"))
    with pytest.raises(StorageError, match=r"^s3://absent-bucket/root: no such bucket"):
        check_bucket(location("s3://absent-bucket/root"))
    fs = location("s3://absent-bucket").fs
    assert not fs.exists("absent-bucket")


@pytest.mark.parametrize(
    ("flag", "expected"),
    [
        (
            "gs://bucket/root",
            "gs://bucket/root: gs:// needs gcsfs: pip install 'mnist-pipeline[gcs]'",
        ),
        ("nope://bucket/root", "nope://bucket/root: unknown storage scheme nope://"),
    ],
)
def test_cli_names_the_missing_extra_or_unknown_scheme(flag: str, expected: str) -> None:
    """gcsfs is not in the dev lock, so gs:// stands for any store whose extra is missing."""
    result = run_cli("models", "list", "--artifacts", flag)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], result.stderr


def test_deployments_carry_a_store_root_as_its_url() -> None:
    from flows.deployments import build_deployments

    deployments = build_deployments("s3://bucket/root", "UTC", "0 3 * * *")
    assert [d.parameters["artifacts"] for d in deployments] == ["s3://bucket/root"] * 2


@pytest.mark.e2e  # stack runs as a process
def test_the_stack_refuses_a_store_root_in_one_line() -> None:
    result = run_cli("stack", "--artifacts", "s3://bucket/root")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "must be a local folder" in lines[0], result.stderr
