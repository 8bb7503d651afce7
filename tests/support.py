"""Test helpers: synthetic IDX data, a fault-injecting HTTP mirror, a Prefect server."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import gzip
import hashlib
import http.server
import io
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
REAL_MNIST = REPO.parent / "shared" / "mnist"

FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def idx_bytes(array: np.ndarray) -> bytes:
    """Encode a uint8 array as IDX: magic 2051 for (n, 28, 28) images, 2049 for labels."""
    magic = 2051 if array.ndim == 3 else 2049
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def synthetic_digits(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Learnable fake digits: each class is a fixed random blob pattern plus noise."""
    prototypes = np.random.default_rng(1234).random((10, 28, 28)) > 0.7
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 10
    rng.shuffle(labels)
    noise = rng.integers(0, 60, size=(n, 28, 28))
    images = np.where(prototypes[labels], 200, 0) + noise
    return np.clip(images, 0, 255).astype(np.uint8), labels.astype(np.uint8)


def write_mirror(folder: Path, n_train: int = 300, n_test: int = 100, **overrides: bytes) -> Path:
    """Write four synthetic .gz IDX files and a SHA256SUMS.raw; ``overrides`` replace IDX bytes.

    Returns the checksums file. Overridden files get their own checksum, so a broken
    file still passes download verification and reaches the parser.
    """
    folder.mkdir(parents=True, exist_ok=True)
    contents: dict[str, bytes] = {}
    for split, n, seed in (("train", n_train, 1), ("test", n_test, 2)):
        images, labels = synthetic_digits(n, seed)
        images_name, labels_name = FILES[split]
        contents[images_name] = idx_bytes(images)
        contents[labels_name] = idx_bytes(labels)
    contents.update({k.replace("_", "-"): v for k, v in overrides.items()})
    sums = []
    for name, data in contents.items():
        (folder / f"{name}.gz").write_bytes(gzip.compress(data, mtime=0))
        sums.append(f"{hashlib.sha256(data).hexdigest()}  {name}")
    checksums = folder / "SHA256SUMS.raw"
    checksums.write_text("\n".join(sums) + "\n")
    return checksums


class FaultyMirror:
    """A real HTTP server on 127.0.0.1 serving a folder, with scripted faults per file.

    ``faults[name]`` is a list consumed one request at a time: "503", "404", "403",
    "truncate" (promise the full length, send half, close), "corrupt" (flip a byte),
    "drip" (send the whole response, status line included, one byte every
    ``drip_seconds``) or "hang" (accept the request, never answer). Once the list is
    empty the file is served intact. ``hits`` counts requests per file.
    """

    def __init__(self, folder: Path, drip_seconds: float = 0.2) -> None:
        self.folder = folder
        self.faults: dict[str, list[str]] = defaultdict(list)
        self.hits: Counter[str] = Counter()
        self.drip_seconds = drip_seconds
        self.closed = threading.Event()  # ends the drips and hangs still going
        mirror = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                name = self.path.rsplit("/", 1)[-1]
                mirror.hits[name] += 1
                fault = mirror.faults[name].pop(0) if mirror.faults[name] else "ok"
                path = mirror.folder / name
                if fault in ("drip", "hang"):
                    self._stall(fault, path.read_bytes())
                    return
                if fault in ("503", "404", "403") or not path.is_file():
                    self.send_error(int(fault) if fault != "ok" else 404)
                    return
                body = path.read_bytes()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if fault == "truncate":
                    self.wfile.write(body[: len(body) // 2])
                    self.close_connection = True
                    return
                if fault == "corrupt":
                    body = body[:100] + bytes([body[100] ^ 0xFF]) + body[101:]
                self.wfile.write(body)

            def _stall(self, fault: str, body: bytes) -> None:
                self.close_connection = True
                head = f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n\r\n".encode()
                for byte in head + body:
                    if mirror.closed.wait(mirror.drip_seconds if fault == "drip" else 3600):
                        return
                    try:
                        self.wfile.write(bytes([byte]))
                        self.wfile.flush()
                    except OSError:  # the client gave up
                        return

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.closed.set()
        self.server.shutdown()
        self.server.server_close()


def train_champion(root: Path, epochs: int) -> Path:
    """``root``/mirror (synthetic digits) and ``root``/artifacts with a champion trained on
    them by the training flow (needs a Prefect backend); returns ``root``."""
    from flows.training import training_flow

    checksums = write_mirror(root / "mirror")
    training_flow(
        mirror=str(root / "mirror"), checksums_file=str(checksums),
        artifacts=str(root / "artifacts"), epochs=epochs,
    )  # fmt: skip
    return root


def copy_root(root: Path, dest: Path) -> Path:
    """A copy of a trained ``root`` (its mirror and artifacts) at ``dest``, free to change.
    Its caches are its own: a cache key includes the artifacts root's path."""
    import shutil

    shutil.copytree(root, dest, symlinks=True, dirs_exist_ok=True)
    return dest


# ----------------------------------------------------------------------------- the CLI
# A process launch costs seconds (interpreter, Prefect's import); a test whose point is the
# output, the exit code or the files calls the CLI in this process instead.

SERVING = ("serve", "stack")


@dataclasses.dataclass
class CliResult:
    """What ``subprocess.run(..., capture_output=True, text=True)`` gives back."""

    args: list[str]
    returncode: int
    stdout: str
    stderr: str


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 600):
    """``mnist-pipeline ARGS`` with ``env`` added to the environment, as a user runs it;
    returns its exit code, stdout and stderr (like CompletedProcess).

    In this process (``cli.main.run``), except where only a process is faithful, which
    runs as ``run_cli_process``: ``serve`` and ``stack`` (long-running, they own the
    signals and start servers), and a command that reaches its flows' backend with no
    Prefect API configured (no ``prefect_api``): it would start Prefect's embedded server,
    which lives and dies with a process. That is found in-process, before anything ran
    but the parsing and the settings' checks, so a usage error stays quick. Tests whose
    point is the process (signals, SIGKILL, the embedded server, another working folder, a
    fresh interpreter) call ``run_cli_process`` themselves. ``timeout`` is for a process.
    """
    if args and args[0] in SERVING:
        return run_cli_process(*args, env=env, timeout=timeout)
    try:
        return _run_in_process(list(args), dict(env or {}))
    except _EmbeddedServerNeeded:
        return run_cli_process(*args, env=env, timeout=timeout)


def run_cli_process(*args: str, env: dict[str, str] | None = None, timeout: float = 600):
    """Run ``mnist-pipeline`` in a subprocess, as a user would, with ``env`` added to this
    process's environment; returns CompletedProcess."""
    return run_cli_exactly(*args, env={**os.environ, **(env or {})}, timeout=timeout)


def run_cli_exactly(*args: str, env: dict[str, str], timeout: float = 600):
    """``mnist-pipeline ARGS`` in a process of its own with exactly ``env``: for tests of
    what a process picks from its environment (a stack, the embedded server)."""
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *args],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def home_env(home: Path) -> dict[str, str]:
    """A user's environment with HOME at ``home`` (so no Prefect profile) and no
    PREFECT_HOME or PREFECT_API_URL: with no API configured anywhere, a command runs on
    Prefect's embedded server."""
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_HOME", "PREFECT_API_URL")}
    home.mkdir(parents=True, exist_ok=True)
    env["HOME"] = str(home)
    return env


def _run_in_process(args: list[str], env: dict[str, str]) -> CliResult:
    """``cli.main.run(args)`` with what a process would have of its own: the environment,
    Prefect's settings, stdout and stderr (file descriptors 1 and 2 too, so that what a
    child process or C code prints is caught), logging's levels and filters; a SystemExit
    is the exit code, an exception that escapes is a traceback on stderr and exit 1.
    Prefect's log and event queues are drained at the end, as at a process's exit."""
    import traceback

    from prefect.logging.configuration import PROCESS_LOGGING_CONFIG, setup_logging

    from cli import main as cli

    if not PROCESS_LOGGING_CONFIG:
        setup_logging()  # as the CLI would, but with this process's own stderr
    _forget_filesystems()  # a store's client reads its endpoint from the environment
    try:
        with _environment(env), _logging_kept(), _captured() as (out, err), _api_required():
            try:
                code = cli.run(args)
            except _EmbeddedServerNeeded:
                raise
            except SystemExit as exc:  # argparse, and the CLI's own sys.exit
                code = _exit_status(exc.code)
            except Exception:
                traceback.print_exc()
                code = 1
            finally:
                _drain_prefect_queues()
    finally:
        _forget_filesystems()
    return CliResult(["mnist-pipeline", *args], code, out(), err())


def _forget_filesystems() -> None:
    """Empty fsspec's instance caches (one per filesystem class): a new process builds its
    store clients afresh, from the environment it has (AWS_ENDPOINT_URL, ...)."""
    import fsspec

    classes = [fsspec.AbstractFileSystem]
    while classes:
        cls = classes.pop()
        cls.clear_instance_cache()
        classes.extend(cls.__subclasses__())


class _EmbeddedServerNeeded(Exception):
    """The command was about to start Prefect's embedded server in this process."""


@contextlib.contextmanager
def _api_required() -> Iterator[None]:
    """Stop a command at its backend (cli.backend.in_process_backend, which ``_run``
    imports at each call) when no Prefect API is configured."""
    from prefect.settings import get_current_settings

    from cli import backend

    real = backend.in_process_backend

    @contextlib.contextmanager
    def only_with_an_api(*args: object, **kwargs: object) -> Iterator[None]:
        if not get_current_settings().api.url:
            raise _EmbeddedServerNeeded
        with real(*args, **kwargs):
            yield

    backend.in_process_backend = only_with_an_api
    try:
        yield
    finally:
        backend.in_process_backend = real


def _exit_status(code: object) -> int:
    """The exit status Python gives ``sys.exit(code)``."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    sys.stderr.write(f"{code}\n")
    return 1


def _drain_prefect_queues() -> None:
    """Send what Prefect's log and event workers still hold, as a process does at exit;
    they are per API, and the next run starts them again."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=30)  # the services share one registry: events too
    EventsWorker.drain_all(timeout=30)


@contextlib.contextmanager
def _environment(env: dict[str, str]) -> Iterator[None]:
    """``env`` added to os.environ, and Prefect's settings made from it afresh, as a new
    process makes them (Prefect reads them once, at its import, and a fixture's
    ``temporary_settings`` would otherwise reach the command); all as it was afterwards."""
    import prefect.context

    saved = dict(os.environ)
    os.environ.update(env)
    try:
        current = prefect.context.get_settings_context()
        with prefect.context.SettingsContext(profile=current.profile, settings=_settings()):
            yield
    finally:
        for key in set(os.environ) - set(saved):
            del os.environ[key]
        for key, value in saved.items():
            if os.environ.get(key) != value:
                os.environ[key] = value


_SETTINGS: dict[tuple, object] = {}


def _settings():
    """``prefect.settings.Settings()`` as a new process would make it (from the environment,
    the working folder's config files, the profiles file); made again (~0.1 s) only when
    the environment's PREFECT_* variables, the working folder or the profiles file change."""
    from prefect.settings import Settings

    profiles = Path(
        os.environ.get("PREFECT_PROFILES_PATH")
        or Path(os.environ.get("PREFECT_HOME") or Path.home() / ".prefect") / "profiles.toml"
    )
    try:
        stamp = profiles.stat().st_mtime_ns
    except OSError:
        stamp = None
    key = (
        tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith("PREFECT_"))),
        os.getcwd(),
        stamp,
    )
    if key not in _SETTINGS:
        _SETTINGS[key] = Settings()
    return _SETTINGS[key]


def _all_loggers() -> list[logging.Logger]:
    found = logging.Logger.manager.loggerDict.values()
    return [logging.getLogger(), *(x for x in found if isinstance(x, logging.Logger))]


@contextlib.contextmanager
def _logging_kept() -> Iterator[None]:
    """Levels and handler filters as they were: the CLI adds a filter to Prefect's handlers
    at each start (cli.console) and quiets some loggers (flows.runners)."""
    loggers = _all_loggers()
    levels = {logger: logger.level for logger in loggers}
    filters = {h: list(h.filters) for logger in loggers for h in logger.handlers}
    try:
        yield
    finally:
        for logger in _all_loggers():
            logger.setLevel(levels.get(logger, logging.NOTSET))
        for handler, kept in filters.items():
            handler.filters[:] = kept


def _stream_handlers() -> list[logging.StreamHandler]:
    """The handlers that write to a stream (Prefect's console, distributed's, ...), not to
    a file, and not pytest's own."""
    return [
        h
        for logger in _all_loggers()
        for h in logger.handlers
        if isinstance(h, logging.StreamHandler)
        and not isinstance(h, logging.FileHandler)
        and not type(h).__module__.startswith("_pytest")
    ]


def _set_stream(handler: logging.StreamHandler, stream: object) -> None:
    handler.setStream(stream)
    console = getattr(handler, "console", None)  # Prefect's rich console keeps its own
    if console is not None:
        console.file = stream


@contextlib.contextmanager
def _captured() -> Iterator[tuple[Callable[[], str], Callable[[], str]]]:
    """stdout and stderr into two files, from Python (sys.stdout, sys.stderr and the
    logging handlers' streams) and from the file descriptors; yields their readers."""
    import tempfile

    sys.stdout.flush()
    sys.stderr.flush()
    files = [tempfile.TemporaryFile(), tempfile.TemporaryFile()]
    saved_fds = [os.dup(1), os.dup(2)]
    saved_sys = (sys.stdout, sys.stderr)
    handlers = _stream_handlers()
    saved_streams = {h: h.stream for h in handlers}
    # Text layers over the redirected descriptors, written through: Python's writes and
    # a child's reach the file in the order they were made, as in a terminal's pipe.
    texts = [
        io.TextIOWrapper(io.FileIO(fd, "w", closefd=False), encoding="utf-8",
                         errors="backslashreplace", write_through=True)
        for fd in (1, 2)
    ]  # fmt: skip
    text = {}

    def reader(k: int) -> Callable[[], str]:
        return lambda: text[k]

    try:
        os.dup2(files[0].fileno(), 1)
        os.dup2(files[1].fileno(), 2)
        sys.stdout, sys.stderr = texts
        for h in handlers:
            stdout = h.stream in (saved_sys[0], sys.__stdout__)
            _set_stream(h, texts[0] if stdout else texts[1])
        yield reader(0), reader(1)
    finally:
        for t in texts:
            t.flush()
        sys.stdout, sys.stderr = saved_sys
        for h in _stream_handlers():  # a handler made during the run took the run's stream
            if h in saved_streams:
                _set_stream(h, saved_streams[h])
            elif h.stream in texts:
                _set_stream(h, saved_sys[0] if h.stream is texts[0] else saved_sys[1])
        os.dup2(saved_fds[0], 1)
        os.dup2(saved_fds[1], 2)
        for k, f in enumerate(files):
            os.close(saved_fds[k])
            f.seek(0)
            text[k] = f.read().decode("utf-8", errors="replace")
            f.close()
        for t in texts:
            t.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, timeout: float, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {url} was healthy")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"{url} not healthy after {timeout} s")


@functools.cache  # one per test process: the migrations take ~10 s of CPU
def _migrated_database() -> Path:
    home = Path(tempfile.mkdtemp(prefix="mnist-tests-prefect-db-"))
    env = {**user_env(), "PREFECT_HOME": str(home)}
    env.pop("PREFECT_SERVER_DATABASE_CONNECTION_URL", None)
    subprocess.run(
        [sys.executable, "-m", "prefect", "server", "database", "upgrade", "-y"],
        env=env, check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    return home / "prefect.db"


def seed_database(database: Path) -> Path:
    """Put at ``database`` (unless a file is there) a copy of a SQLite database that this
    Prefect version's migrations have already made. A server's first start on a new
    database spends ~8 s of CPU migrating it, and most tests start a server only to use
    it. Tests whose point is that first start (test_backend's migration tests) leave their
    database new."""
    if not database.exists():
        database.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(_migrated_database(), database)
    return database


def start_prefect_server(home: Path, log: Path) -> tuple[subprocess.Popen, str]:
    """Start ``prefect server start`` on a free loopback port, on a migrated database
    (``seed_database``) under ``home``; return (process, api url)."""
    seed_database(home / "prefect.db")
    port = free_port()
    env = {**os.environ, "PREFECT_HOME": str(home)}
    env.pop("PREFECT_API_URL", None)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "prefect",
            "server",
            "start",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    api = f"http://127.0.0.1:{port}/api"
    wait_healthy(f"{api}/health", timeout=180, proc=proc)
    return proc, api


def stop_process_group(proc: subprocess.Popen, timeout: float = 20) -> None:
    """SIGTERM the process group, then SIGKILL it if it lingers."""
    import signal

    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=timeout)
    except ProcessLookupError:
        pass


# ----------------------------------------------------------------------------- pixel CSV rows
# Shared by the scoring tests: Kaggle-style headers, MNIST-like rows and a quick exact model.

PIXELS = [f"pixel{j}" for j in range(784)]
TEST_HEADER = ",".join(PIXELS)
TRAIN_HEADER = "label," + TEST_HEADER
_LINEAR = [
    (
        np.random.default_rng(0).normal(size=(10, 784)).astype(np.float32),
        np.zeros(10, np.float32),
    )
]


def image(seed: int) -> list[int]:
    """784 pixel values: mostly zeros, some 1-255, like MNIST."""
    rng = np.random.default_rng(seed)
    px = rng.integers(0, 256, 784)
    px[rng.random(784) < 0.8] = 0
    return px.tolist()


def line(values: list[object]) -> str:
    """One CSV row of ``values``."""
    return ",".join(str(v) for v in values)


def linear_softmax(pixels: np.ndarray) -> np.ndarray:
    """The scorer's real model code with one fixed random linear layer: quick and exact."""
    from model.predict import predict_proba_pixels

    return predict_proba_pixels(_LINEAR, pixels)


# A real S3 API on loopback: moto's server, as s3fs's own tests use it. The credentials
# are moto's dummies; the region is the one boto would otherwise look up.
S3_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


class MotoServer:
    """``moto_server`` on a free loopback port; ``env`` points boto and s3fs at it."""

    def __init__(self, log: Path) -> None:
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.env = {**S3_ENV, "AWS_ENDPOINT_URL": self.endpoint}
        self.proc = subprocess.Popen(
            [str(Path(sys.executable).with_name("moto_server")), "-p", str(self.port)],
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_healthy(f"{self.endpoint}/moto-api/", timeout=60, proc=self.proc)

    def bucket(self, name: str) -> str:
        """Create bucket ``name`` and return ``s3://name``."""
        request = urllib.request.Request(f"{self.endpoint}/{name}", method="PUT")
        urllib.request.urlopen(request, timeout=10).close()
        return f"s3://{name}"

    def stop(self) -> None:
        stop_process_group(self.proc)


class StoreOutage:
    """A loopback HTTP proxy in front of an S3 endpoint that stops answering (HTTP 503 to
    everything) from the first request ``trips(method, path)`` is true for: a store that
    goes away in the middle of a run, injected at the network boundary."""

    def __init__(self, target: str, trips) -> None:
        import http.client
        import urllib.parse

        target_host = urllib.parse.urlsplit(target).netloc
        outage = self

        class Forward(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _any(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if outage.down or trips(self.command, self.path):
                    outage.down = True
                    self.send_response(503)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                conn = http.client.HTTPConnection(target_host, timeout=30)
                headers = {k: v for k, v in self.headers.items() if k.lower() != "connection"}
                conn.request(self.command, self.path, body=body, headers=headers)
                reply = conn.getresponse()
                data = reply.read()
                self.send_response(reply.status)
                # A HEAD reply keeps the object's length: it is what s3fs reads as its size.
                skip = {"connection", "transfer-encoding"}
                if self.command != "HEAD":
                    skip.add("content-length")
                for key, value in reply.getheaders():
                    if key.lower() not in skip:
                        self.send_header(key, value)
                if self.command != "HEAD":
                    self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                conn.close()

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _any

        self.down = False
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Forward)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def states(stdout: str) -> dict[str, str]:
    """step -> state, from the CLI's closing table."""
    rows = {}
    for line in stdout.splitlines():
        parts = line.rsplit(None, 2)
        if len(parts) == 3 and parts[1] in ("Completed", "Cached", "Failed"):
            rows[parts[0]] = parts[1]
    return rows


def forget_deployment(name: str) -> None:
    """Delete deployment ``name`` from the configured server, if it is there, so that its
    schedule (and the runs it planned) cannot reach other tests' deployments."""
    from prefect import get_client
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            client.delete_deployment(client.read_deployment_by_name(name).id)
        except ObjectNotFound:
            pass


# ----------------------------------------------------------------------------- the stack
# A user's shell with no Prefect server configured, and `mnist-pipeline stack` in it.

PREFECT_CLIENT_VARIABLES = (
    "PREFECT_API_URL",
    "PREFECT_API_AUTH_STRING",
    "PREFECT_SERVER_API_AUTH_STRING",
)


def user_env(**extra: str) -> dict[str, str]:
    """This process's environment without a Prefect API URL or auth string (a session
    fixture may have set them), plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k not in PREFECT_CLIENT_VARIABLES}
    return {**env, **extra}


class StackProcess:
    """``mnist-pipeline stack --artifacts ARTIFACTS ARGS`` with exactly ``env``, in its own
    process group; its stdout and stderr in files beside ``artifacts``."""

    def __init__(self, artifacts: Path, *args: str, env: dict[str, str]) -> None:
        if "--database" not in args and "PREFECT_SERVER_DATABASE_CONNECTION_URL" not in env:
            seed_database(artifacts / ".prefect" / "prefect.db")
        self.out = artifacts.with_name(f"{artifacts.name}.stack.out")
        self.err = artifacts.with_name(f"{artifacts.name}.stack.err")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cli.main", "stack", "--artifacts", str(artifacts), *args],
            cwd=REPO, env=env, stdout=self.out.open("w"), stderr=self.err.open("w"),
            stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip

    def line(self, prefix: str, timeout: float = 180) -> str:
        """The first stdout line starting with ``prefix``, once it is there."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.out.read_text().splitlines():
                if line.startswith(prefix):
                    return line
            assert self.proc.poll() is None, self.err.read_text()
            time.sleep(0.2)
        raise AssertionError(f"no {prefix!r} line after {timeout} s: {self.err.read_text()}")

    def stop(self) -> int | None:
        """SIGTERM the stack (it stops its server itself); its exit code, None if it hangs."""
        import signal

        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            return None

    def kill(self) -> None:
        stop_process_group(self.proc)
