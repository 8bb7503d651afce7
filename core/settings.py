"""One home for paths and settings: every ``MNIST_*`` environment variable is read here.

Values come from explicit arguments first, then environment variables, then defaults; a
value that cannot be used is a one-line ``SettingsError`` naming the variable. Nothing
here runs at import time: a run's settings are a ``Settings`` from ``Settings.from_env``,
and the few read elsewhere (the download deadline, run time limits, the schedule's
timezone, the Dask scheduler, a worker's checkout) are functions called when needed.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

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
# The download deadline of core.fetch (why these numbers: there).
ENV_DOWNLOAD_GRACE = "MNIST_DOWNLOAD_GRACE_SECONDS"
ENV_DOWNLOAD_MIN_RATE = "MNIST_DOWNLOAD_MIN_RATE"
# Seconds a flow run may take before Prefect stops it (TimedOut); 0 means no limit.
ENV_TRAINING_TIMEOUT = "MNIST_TRAINING_TIMEOUT"
ENV_SCORING_TIMEOUT = "MNIST_SCORING_TIMEOUT"
# The nightly schedule's IANA timezone (serve and stack).
ENV_TIMEZONE = "MNIST_TIMEZONE"
# A Dask scheduler for the runs whose options choose no task runner.
ENV_DASK_ADDRESS = "MNIST_DASK_ADDRESS"
# On a work-pool worker: the checkout its runs start in (prefect.yaml's pull step).
ENV_PIPELINE_HOME = "MNIST_PIPELINE_HOME"
# The user's labeled data for training runs given no --labeled: paths, globs, store URLs
# or store globs, separated by white space.
ENV_LABELED = "MNIST_LABELED"

DEFAULT_RETRY_DELAYS: tuple[float, ...] = (2.0, 5.0, 15.0)
DOWNLOAD_GRACE_SECONDS = 10.0
DOWNLOAD_MIN_RATE = 50_000  # bytes per second, averaged over the transfer after the grace
DEFAULT_TRAINING_TIMEOUT = 3600.0  # the default preset takes seconds, `wide` under a minute
DEFAULT_SCORING_TIMEOUT = 6 * 3600.0  # a night's batch of files


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


def labeled_entries(given: Sequence[str] | None = None) -> list[str]:
    """The labeled data a training run learns from beside MNIST: ``given`` (the
    ``--labeled`` flags, or the flow's ``labeled`` parameter) when it is not None, even
    empty; else ``MNIST_LABELED``, split on white space; else none."""
    if given is not None:
        return [given] if isinstance(given, str) else list(given)
    return os.environ.get(ENV_LABELED, "").split()


def check_fraction(name: str, value: float) -> float:
    """``value`` if it is a number from 0 to 1; SettingsError naming ``name`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise SettingsError(f"{name} {value!r}: expected a fraction from 0 to 1, e.g. 0.1")
    return float(value)


def download_deadline() -> tuple[float, float]:
    """(grace seconds, minimum average bytes per second) of each HTTP transfer: the
    defaults, or ``MNIST_DOWNLOAD_GRACE_SECONDS`` and ``MNIST_DOWNLOAD_MIN_RATE``."""
    return (
        _positive(ENV_DOWNLOAD_GRACE, DOWNLOAD_GRACE_SECONDS),
        _positive(ENV_DOWNLOAD_MIN_RATE, DOWNLOAD_MIN_RATE),
    )


def _positive(variable: str, default: float) -> float:
    text = os.environ.get(variable)
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise SettingsError(f"{variable}={text!r}: expected a positive number")
    return value


def training_timeout() -> float | None:
    """Seconds a training run may take (``MNIST_TRAINING_TIMEOUT``); None for no limit."""
    return _run_timeout(ENV_TRAINING_TIMEOUT, DEFAULT_TRAINING_TIMEOUT)


def scoring_timeout() -> float | None:
    """Seconds a scoring run may take (``MNIST_SCORING_TIMEOUT``); None for no limit."""
    return _run_timeout(ENV_SCORING_TIMEOUT, DEFAULT_SCORING_TIMEOUT)


def _run_timeout(variable: str, default: float) -> float | None:
    text = os.environ.get(variable, "").strip()
    try:
        seconds = float(text) if text else default
    except ValueError:
        seconds = -1.0
    if not seconds >= 0 or seconds == float("inf"):
        raise SettingsError(f"{variable}={text!r}: expected seconds (0 for no limit), e.g. 3600")
    return seconds or None


def schedule_timezone(flag: str | None = None) -> str:
    """The nightly schedule's timezone: ``flag``, else ``MNIST_TIMEZONE``, else UTC."""
    return check_timezone(flag or os.environ.get(ENV_TIMEZONE) or "UTC")


def check_timezone(name: str) -> str:
    """``name`` if it is an IANA timezone name (e.g. Europe/Paris); SettingsError if not."""
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise SettingsError(f"unknown timezone {name!r} (use an IANA name)") from None
    return name


def default_dask_address() -> str | None:
    """The Dask scheduler in ``MNIST_DASK_ADDRESS``, for runs whose options choose none."""
    return os.environ.get(ENV_DASK_ADDRESS) or None


PROJECT = "mnist-pipeline"
# The deployments' entrypoints, relative to a checkout (as in prefect.yaml).
ENTRYPOINTS = ("flows/training.py", "flows/scoring.py")


def pipeline_home(value: str) -> Path:
    """``MNIST_PIPELINE_HOME`` as a worker's pull step receives it: the checkout of this
    project to run in; SettingsError, saying what to set it to, if it names none."""
    if not value.strip():
        problem = f"{ENV_PIPELINE_HOME} is not set on this worker"
    elif not Path(value).expanduser().is_absolute():
        # Relative to what? Each run starts in a new temporary folder.
        problem = f"{ENV_PIPELINE_HOME}={value} is not an absolute path"
    elif not is_checkout(Path(value).expanduser()):
        problem = f"{ENV_PIPELINE_HOME}={value} is not a checkout of {PROJECT}"
    else:
        return Path(value).expanduser()
    raise SettingsError(f"{problem}: start the worker with {_home_suggestion()}")


def is_checkout(folder: Path) -> bool:
    """True when ``folder`` holds this project: its pyproject.toml and the entrypoints."""
    try:
        with (folder / "pyproject.toml").open("rb") as f:
            name = tomllib.load(f).get("project", {}).get("name")
    except (OSError, tomllib.TOMLDecodeError):
        return False
    return name == PROJECT and all((folder / entry).is_file() for entry in ENTRYPOINTS)


def _home_suggestion() -> str:
    """What to set: the checkout this worker's Python imports the project from, if any."""
    here = Path(__file__).resolve().parents[1]
    if is_checkout(here):  # an editable install (`make setup`): the usual case
        return f"{ENV_PIPELINE_HOME}={here} (the {PROJECT} checkout its Python runs from)"
    return (
        f"{ENV_PIPELINE_HOME} set to the absolute path of a {PROJECT} checkout "
        "(holding prefect.yaml)"
    )


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
