"""One home for paths and settings: the artifacts root, the mirrors, retry delays, Prefect.

Values come from explicit arguments first, then environment variables, then defaults.
Nothing here runs at import time; callers build a ``Settings`` with ``Settings.from_env``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from core.errors import PipelineError
from core.storage import Location, is_remote, location

DEFAULT_MIRRORS: tuple[str, ...] = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    # Last: it often answers 403.
    "http://yann.lecun.com/exdb/mnist/",
)

# SHA-256 of each file's decompressed IDX bytes. Mirrors may recompress the .gz files,
# so the compressed bytes differ between faithful copies; the IDX content does not.
MNIST_SHA256: dict[str, str] = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}


class SettingsError(PipelineError):
    """A setting (flag or environment variable) that cannot be used; names which one."""


# One mirror base, or several separated by white space, tried in order.
ENV_MIRROR = "MNIST_MIRROR"
ENV_ARTIFACTS = "MNIST_ARTIFACTS_DIR"
# Comma-separated seconds between download retries; tests shorten them.
ENV_RETRY_DELAYS = "MNIST_RETRY_DELAYS"
# A sha256sum-style file of IDX checksums replacing MNIST's (for private or synthetic data).
ENV_CHECKSUMS = "MNIST_CHECKSUMS_FILE"

DEFAULT_RETRY_DELAYS: tuple[float, ...] = (2.0, 5.0, 15.0)


@dataclass(frozen=True)
class Settings:
    """Resolved settings for one run."""

    # A local folder (resolved), or a store URL (core.storage): s3://bucket/prefix.
    artifacts: Location
    mirrors: tuple[str, ...] = DEFAULT_MIRRORS
    checksums: dict[str, str] = field(default_factory=lambda: dict(MNIST_SHA256))
    retry_delays: tuple[float, ...] = DEFAULT_RETRY_DELAYS

    @classmethod
    def from_env(
        cls,
        artifacts: str | Path | None = None,
        mirror: str | Sequence[str] | None = None,
        checksums_file: str | Path | None = None,
    ) -> Settings:
        """Build settings from arguments, falling back to environment variables."""
        root = artifacts or os.environ.get(ENV_ARTIFACTS) or "artifacts"
        mirror = mirror or os.environ.get(ENV_MIRROR, "").split()
        mirrors = tuple(_absolute(m) for m in ([mirror] if isinstance(mirror, str) else mirror))
        delays = os.environ.get(ENV_RETRY_DELAYS)
        checksums_file = checksums_file or os.environ.get(ENV_CHECKSUMS)
        return cls(
            artifacts=_artifacts_root(root),
            mirrors=mirrors or DEFAULT_MIRRORS,
            checksums=read_checksums(Path(checksums_file))
            if checksums_file
            else dict(MNIST_SHA256),
            retry_delays=_retry_delays(delays) if delays else DEFAULT_RETRY_DELAYS,
        )

    @property
    def data_dir(self) -> Location:
        return self.artifacts / "data"

    @property
    def raw_dir(self) -> Location:
        return self.data_dir / "raw"

    @property
    def models_dir(self) -> Location:
        return self.artifacts / "models"

    @property
    def results_dir(self) -> Location:
        """Prefect result and cache-record storage, shared by CLI, serve and workers."""
        return self.artifacts / ".prefect-results"


def _artifacts_root(root: str | Path) -> Location:
    """A local root resolved now (runs in other working folders find it); a store URL as is."""
    path = location(root)
    return path if is_remote(path) else path.expanduser().resolve()


def _absolute(mirror: str) -> str:
    """Resolve a local mirror folder now, so that runs in other working folders find it."""
    return mirror if "://" in mirror else str(Path(mirror).expanduser().resolve())


def read_checksums(path: Path) -> dict[str, str]:
    """Read a ``sha256sum``-style file (``<hex>  <name>``) into {name without .gz: hex}."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as err:
        reason = err.strerror if isinstance(err, OSError) else "not a text file"
        raise SettingsError(f"checksums file {path}: cannot read it ({reason})") from None
    checksums = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) != 2 or not _is_sha256(fields[0]):
            raise SettingsError(
                f"checksums file {path}, line {number}: expected '<64 hex digits>  <file name>'"
            )
        checksums[fields[1].lstrip("*").removesuffix(".gz")] = fields[0].lower()
    missing = [name for name in MNIST_SHA256 if name not in checksums]
    if missing:
        raise SettingsError(f"checksums file {path}: no checksum for {', '.join(missing)}")
    return checksums


def _is_sha256(text: str) -> bool:
    return len(text) == 64 and all(c in "0123456789abcdefABCDEF" for c in text)


def _retry_delays(text: str) -> tuple[float, ...]:
    try:
        delays = tuple(float(d) for d in text.split(","))
    except ValueError:
        delays = ()
    if not delays or any(d < 0 for d in delays):
        raise SettingsError(
            f"{ENV_RETRY_DELAYS}={text!r}: expected seconds separated by commas, e.g. 2,5,15"
        )
    return delays


def prefect_env_defaults() -> dict[str, str]:
    """Environment defaults for Prefect: no telemetry, and time for a first start.

    ``PREFECT_HOME`` is left alone, so that the user's profiles (``prefect config set``,
    ``prefect cloud login``) apply as in any Prefect project; the embedded server's
    database goes under the artifacts root (see ``cli.backend``).
    """
    return {
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        # The first start of the embedded server migrates its database; on a busy
        # 2-core machine that can take longer than Prefect's 20 s default.
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    }
