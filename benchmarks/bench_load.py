"""Load: what the stack holds when a small team's day arrives at once, on SQLite and on
PostgreSQL (issue 23).

Run by hand from the repo root:

    .venv/bin/python benchmarks/bench_load.py [--databases sqlite,postgresql]
        [--stores local,s3] [--scoring 40] [--training 3] [--dask-files 8] [--rows 10000]
        [--scale 1] [--slots 2] [--poll-seconds 1] [--trigger client|cli] [--keep]
    .venv/bin/python benchmarks/bench_load.py --find-break [--scoring 40] [--limit-minutes 10]

For each database and artifacts store it starts, on loopback:

* local root: ``mnist-pipeline stack`` (a ``prefect server`` plus ``serve``; on PostgreSQL
  with ``--database``), the artifacts root a local folder;
* s3 root: the stack refuses a store root (its server's files live under the root), so,
  as its error says, ``prefect server`` (``cli.stack.start_server``, the stack's own) and
  ``mnist-pipeline serve --artifacts s3://…``, on moto's S3 server; inputs and outputs
  are in the same bucket.

PostgreSQL is a fresh cluster from ``tests.postgres.start_postgres`` (the tests' own:
fsync and synchronous_commit off; SQLite runs as Prefect sets it, WAL with synchronous
NORMAL, which does not sync each commit either). ``serve`` runs each flow run in a
process of its own, ``--slots`` at a time (PREFECT_RUNNER_PROCESS_LIMIT, given to the
serving process). After one training run has made a champion, the load, started within
a second of each other (times ``--scale``):

* ``--training`` runs of ``mnist-training/nightly`` (seeds 1..N, so each really trains
  and goes through the champion gate; one at a time by the deployment's own limit);
* ``--scoring`` runs of ``mnist-scoring/batch``, each of a different ``--rows``-row CSV of
  real MNIST training images (every 4th file with 5 malformed rows);
* one ``mnist-pipeline score --dask-local 2`` of ``--dask-files`` more files, a CLI run
  against the same server.

The deployment runs are created all at once with one Prefect API client
(``create_flow_run_from_deployment``, the call ``prefect deployment run`` makes; it
retries a 503 five times, backing off 2-32 s), or with ``--trigger cli`` by one
``prefect deployment run`` process each. Measured:

* runs Completed / Failed / Crashed (read from the API; the CLI by its exit code), and
  triggers refused: runs the server would not create, even after the client's retries;
* lost or partial outputs: every row of every input of a created run must be in exactly
  one predictions or rejects file (read back, by ImageId), each malformed row in rejects,
  and no temporary left;
* "database is locked" and HTTP 503 in every log (server, serve and its flow runs, CLI,
  triggers), as log records; the server logs what it answered 503 for only with
  PREFECT_API_LOG_RETRYABLE_ERRORS, which the load sets;
* API latency, p50 and p95 of every Prefect API request of every client process (the
  serving process, the flow runs, the CLI and its Dask workers, the triggers): a
  ``sitecustomize`` on their PYTHONPATH wraps httpx's ``send`` and logs each request's
  time to its response (each retry is a request); also every 503 answered;
* wall time from the first trigger to the last completion;
* the server's peak RSS (its process tree's, sampled every 0.5 s, and VmHWM; not the
  PostgreSQL server's), and how many flow runs ran at once;
* the 1-minute load average, at the start and its highest (the machine is shared).

``--find-break`` runs SQLite alone, doubling ``--scoring`` until something is lost,
refused, Failed or Crashed, or the load takes longer than ``--limit-minutes``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

MNIST_DIR = Path(os.environ.get("MNIST_DIR", REPO.parent / "shared" / "mnist"))
PIXELS = [f"pixel{j}" for j in range(784)]
TERMINAL = ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")
TIMING_VARIABLE = "MNIST_LOAD_TIMING_DIR"
ROLE_VARIABLE = "MNIST_LOAD_TIMING_ROLE"

# Malformed rows, each one a reason the scorer rejects a row; {label} is the row's label.
BAD_ROWS = (
    b"{label},1,2,3\n",  # too few fields
    b"{label}," + b"0," * 300 + b"x," + b"0," * 482 + b"0\n",  # not a number
    b"{label}," + b"0," * 100 + b"256," + b"0," * 682 + b"0\n",  # out of range
    b"{label}," + b"0," * 500 + b"," + b"0," * 282 + b"0\n",  # an empty value
    b"{label}," + b"0," * 783 + b"-1\n",  # negative
)

# Written into the work folder and put on the PYTHONPATH of every process the load
# starts: Python imports ``sitecustomize`` at start-up, before Prefect.
SITECUSTOMIZE = '''\
"""Written by benchmarks/bench_load.py: log the time of every Prefect API request."""
import os
import re
import time


def _role():
    if os.environ.get("MNIST_LOAD_TIMING_ROLE"):
        return os.environ["MNIST_LOAD_TIMING_ROLE"]
    try:
        with open("/proc/self/cmdline", "rb") as f:
            argv = f.read().split(b"\\0")
    except OSError:
        return "other"
    text = b" ".join(argv).decode(errors="replace")
    for needle, role in (("cli.main stack", "serve"), ("cli.main serve", "serve"),
                         ("cli.main score", "cli"), ("prefect.engine", "flow-run"),
                         ("prefect server", "server"), ("distributed", "dask"),
                         ("multiprocessing", "dask"),
                         ("deployment run", "trigger")):
        if needle in text:
            return role
    return "other"


def _install():
    import httpx

    if getattr(httpx.Client.send, "timed", False):  # once per process
        return
    files, roles = {}, {}
    uuid = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")

    def record(request, status, start):
        seconds = time.perf_counter() - start
        path = request.url.path
        if "/api/" not in path:
            return
        folder = os.environ.get("MNIST_LOAD_TIMING_DIR")
        if not folder:
            return
        key = (os.getpid(), folder)
        out = files.get(key)
        if out is None:
            out = files[key] = open(os.path.join(folder, f"{key[0]}.tsv"), "a", buffering=1)
        role = roles.get(key[0]) or roles.setdefault(key[0], _role())
        out.write(f"{time.time():.3f}\\t{role}\\t{request.method}\\t"
                  f"{uuid.sub('{id}', path)}\\t{status}\\t{seconds:.5f}\\n")

    real_async, real_sync = httpx.AsyncClient.send, httpx.Client.send

    async def send_async(self, request, **kwargs):
        start, status = time.perf_counter(), "error"
        try:
            response = await real_async(self, request, **kwargs)
            status = response.status_code
            return response
        finally:
            record(request, status, start)

    def send_sync(self, request, **kwargs):
        start, status = time.perf_counter(), "error"
        try:
            response = real_sync(self, request, **kwargs)
            status = response.status_code
            return response
        finally:
            record(request, status, start)

    send_async.timed = send_sync.timed = True
    httpx.AsyncClient.send, httpx.Client.send = send_async, send_sync


if os.environ.get("MNIST_LOAD_TIMING_DIR"):
    _install()
'''


# ----------------------------------------------------------------------------- inputs


@dataclasses.dataclass(frozen=True)
class ScoringInput:
    """One CSV to score: where it is, its data rows, and the ImageIds of its bad rows."""

    path: str
    rows: int
    malformed: frozenset[int]


def mnist_rows(mnist_dir: Path = MNIST_DIR) -> list[bytes]:
    """The 60k MNIST training images as Kaggle train.csv lines (``label,pixel0..783``)."""
    from core.idx import IMAGES_MAGIC, LABELS_MAGIC, read_idx_gz

    images = read_idx_gz(mnist_dir / "train-images-idx3-ubyte.gz", IMAGES_MAGIC)
    labels = read_idx_gz(mnist_dir / "train-labels-idx1-ubyte.gz", LABELS_MAGIC)
    return csv_rows(images.reshape(len(images), 784), labels)


def csv_rows(pixels: np.ndarray, labels: np.ndarray) -> list[bytes]:
    """``label,pixel0..783`` lines of uint8 ``pixels`` (n, 784) and their labels."""
    text = [str(v) for v in range(256)]
    return [
        (f"{label}," + ",".join([text[v] for v in row]) + "\n").encode()
        for row, label in zip(pixels.tolist(), labels.tolist(), strict=True)
    ]


def write_inputs(
    dest: str,
    pool: Sequence[bytes],
    count: int,
    rows: int,
    malformed_every: int = 4,
    first: int = 0,
) -> list[ScoringInput]:
    """``count`` CSVs ``dest``/in-NNNN.csv (a folder or a store URL), each ``rows`` lines
    drawn from ``pool`` in an order of its own (seeded by its number), so no two are the
    same; every ``malformed_every``-th file (0: none) has one row of each BAD_ROWS kind."""
    import fsspec

    header = ("label," + ",".join(PIXELS) + "\n").encode()
    made = []
    for k in range(first, first + count):
        rng = np.random.default_rng(k)
        picks = rng.choice(len(pool), size=rows, replace=len(pool) < rows)
        lines = [pool[i] for i in picks]
        bad: set[int] = set()
        if malformed_every and k % malformed_every == malformed_every - 1:
            where = rng.choice(rows, size=len(BAD_ROWS), replace=False)
            for row, template in zip(where.tolist(), BAD_ROWS, strict=True):
                lines[row] = template.replace(b"{label}", lines[row].split(b",", 1)[0])
                bad.add(row + 1)  # ImageId counts data rows from 1
        path = f"{dest.rstrip('/')}/in-{k:04d}.csv"
        with fsspec.open(path, "wb") as f:
            f.write(header + b"".join(lines))
        made.append(ScoringInput(path, rows, frozenset(bad)))
    return made


# ----------------------------------------------------------------------------- outputs


@dataclasses.dataclass
class OutputCheck:
    """What the outputs of a set of inputs hold, against what they must."""

    inputs: int = 0
    rows: int = 0
    lost_rows: int = 0  # in neither predictions nor rejects
    duplicated_rows: int = 0  # in both, or twice in one
    missing_files: int = 0  # inputs without a predictions file
    partial_files: int = 0  # a predictions file that lacks rows
    misplaced_rejects: int = 0  # a malformed row not in rejects, or a good row in rejects
    leftovers: int = 0  # temporaries left under the output folder

    @property
    def ok(self) -> bool:
        return not (
            self.lost_rows or self.duplicated_rows or self.missing_files or self.partial_files
            or self.misplaced_rejects or self.leftovers
        )  # fmt: skip


def _image_ids(path: str) -> np.ndarray | None:
    """The ImageId column of a predictions or rejects CSV; None if there is no such file."""
    import fsspec
    import pyarrow.csv as pa_csv

    try:
        with fsspec.open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return None
    table = pa_csv.read_csv(
        io.BytesIO(data), convert_options=pa_csv.ConvertOptions(include_columns=["ImageId"])
    )
    return table.column("ImageId").to_numpy()


def check_outputs(inputs: Sequence[ScoringInput], output_dir: str) -> OutputCheck:
    """Read back every input's predictions and rejects in ``output_dir``: each row in
    exactly one of them, the malformed rows in rejects."""
    import fsspec

    check = OutputCheck(inputs=len(inputs))
    for item in inputs:
        stem = item.path.rsplit("/", 1)[-1].removesuffix(".csv")
        check.rows += item.rows
        predicted = _image_ids(f"{output_dir}/{stem}.predictions.csv")
        rejected = _image_ids(f"{output_dir}/{stem}.rejects.csv")
        if rejected is None:
            rejected = np.empty(0, np.int64)
        if predicted is None:
            check.missing_files += 1
            predicted = np.empty(0, np.int64)
        seen = Counter(predicted.tolist()) + Counter(rejected.tolist())
        expected = set(range(1, item.rows + 1))
        missing = expected - set(seen)
        check.lost_rows += len(missing)
        check.duplicated_rows += sum(n - 1 for n in seen.values() if n > 1)
        check.duplicated_rows += sum(1 for k in seen if k not in expected)
        if len(predicted) and missing - item.malformed:
            check.partial_files += 1
        if len(predicted) or len(rejected):
            check.misplaced_rejects += len(set(rejected.tolist()) ^ item.malformed)
    fs, root = fsspec.core.url_to_fs(output_dir)
    with contextlib.suppress(FileNotFoundError):
        check.leftovers = sum(
            1 for p in fs.ls(root, detail=False) if p.rsplit("/", 1)[-1][:1] == "."
        )
    return check


# ----------------------------------------------------------------------------- the stack


class Serving:
    """A Prefect server and ``serve`` for one artifacts root, as the load test runs them.

    A local root: ``mnist-pipeline stack`` (``--database URL`` when given). A store root:
    ``cli.stack.start_server`` (the stack's server) plus ``mnist-pipeline serve``.
    ``env`` goes to every process (the timing hook, the slot limit, the S3 endpoint)."""

    def __init__(
        self,
        work: Path,
        artifacts: str,
        env: dict[str, str],
        database: str | None = None,
        poll_seconds: float = 1.0,
    ) -> None:
        from cli.stack import start_server
        from tests.support import free_port

        self.logs: list[Path] = []
        self.server: subprocess.Popen | None = None
        port = free_port()
        serving_env = {**env}
        if database:
            serving_env["PREFECT_SERVER_DATABASE_CONNECTION_URL"] = database
        common = ["--artifacts", artifacts, "--poll-seconds", f"{poll_seconds:g}"]
        if artifacts.startswith("s3://"):
            home = work / "server-home"
            saved = dict(os.environ)
            os.environ.update(serving_env)
            try:
                self.server, self.api = start_server(port, home)
            finally:
                os.environ.clear()
                os.environ.update(saved)
            self.logs.append(home / "server.log")
            args = ["serve", *common]
            serving_env["PREFECT_API_URL"] = self.api
        else:
            args = ["stack", "--port", str(port), *common]
            if database:
                args += ["--database", database]
            self.api = f"http://127.0.0.1:{port}/api"
        self.out = work / f"{args[0]}.log"
        self.logs.append(self.out)
        with self.out.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "cli.main", *args],
                cwd=REPO, env=serving_env, stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip
        try:
            self._wait_for_deployments()
        except BaseException:
            self.stop()
            raise
        if self.server is None:  # the stack's own server, and its log
            self.logs += sorted(Path(artifacts).glob(".prefect*/server.log"))

    def _wait_for_deployments(self, timeout: float = 300) -> None:
        from flows.deployments import SCORING, TRAINING

        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"serving exited {self.proc.returncode}: {self.tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"no deployments after {timeout} s: {self.tail()}")
            with contextlib.suppress(Exception):  # not up yet, or not registered yet
                with api_client(self.api) as c:
                    for name in (TRAINING, SCORING):
                        c.read_deployment_by_name(name)
                    return
            time.sleep(0.5)

    def server_pid(self) -> int | None:
        """The ``prefect server`` process's pid (the stack's child, or ours)."""
        import psutil

        if self.server is not None:
            return self.server.pid
        with contextlib.suppress(psutil.Error):
            for child in psutil.Process(self.proc.pid).children(recursive=True):
                if "server" in child.cmdline() and "start" in child.cmdline():
                    return child.pid
        return None

    def tail(self, lines: int = 15) -> str:
        return "\n".join(self.out.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        """SIGTERM ``serve``/``stack`` (the stack stops its server), then our server."""
        from cli.stack import stop_server

        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                pass
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        if self.server is not None:
            stop_server(self.server)


@contextlib.contextmanager
def api_client(api: str) -> Iterator[Any]:
    """Prefect's sync client for ``api``."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: api}), get_client(sync_client=True) as c:
        yield c


class Sampler:
    """Every 0.5 s: the resident memory of the server's process tree, its VmHWM, and how
    many flow-run processes (``prefect.engine``) the serving process has."""

    def __init__(self, server: int | None, serving: int) -> None:
        self.server, self.serving = server, serving
        self.peak = self.hwm = self.flow_processes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        import psutil

        while not self._stop.wait(0.5):
            with contextlib.suppress(psutil.Error, OSError):
                if self.server is not None:
                    proc = psutil.Process(self.server)
                    tree = [proc, *proc.children(recursive=True)]
                    self.peak = max(self.peak, sum(p.memory_info().rss for p in tree))
                    self.hwm = max(self.hwm, _vm_hwm(self.server))
                flows = 0
                for child in psutil.Process(self.serving).children(recursive=True):
                    with contextlib.suppress(psutil.Error):
                        flows += "prefect.engine" in child.cmdline()
                self.flow_processes = max(self.flow_processes, flows)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def _vm_hwm(pid: int) -> int:
    """A process's peak resident set (VmHWM), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


class LoadAverage:
    """The 1-minute load average: at the start, and the highest seen while running."""

    def __init__(self) -> None:
        self.start = os.getloadavg()[0]
        self.peak = self.start
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(2):
            self.peak = max(self.peak, os.getloadavg()[0])

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


class Ended:
    """A process of the load in its own group, its output in ``log``; ``ended`` is the
    time it exited."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                args, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip
        self.ended: float | None = None
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        self.proc.wait()
        self.ended = time.time()

    def wait(self, timeout: float) -> int | None:
        """The exit code, or None if it still runs after ``timeout`` s (then it is killed)."""
        self._thread.join(timeout)
        if self.ended is None:
            self.stop()
            return None
        return self.proc.returncode

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)


# ----------------------------------------------------------------------------- the load


@dataclasses.dataclass
class LoadSpec:
    """One load: how much of each kind, on which data, against which database and store."""

    scoring: int = 40
    training: int = 3
    dask_files: int = 8
    rows: int = 10_000
    slots: int = 2
    poll_seconds: float = 1.0
    database: str = "sqlite"  # or "postgresql"
    store: str = "local"  # or "s3"
    mirror: str = str(MNIST_DIR)
    checksums_file: str | None = None  # for a synthetic mirror
    training_params: dict[str, Any] = dataclasses.field(default_factory=dict)
    timeout: float = 3600.0  # seconds for the whole load to end
    trigger: str = "client"  # or "cli": a `prefect deployment run` process per run
    # Settings for the serving side (in every process the load starts), e.g. the server's
    # PREFECT_SERVER_DATABASE_TIMEOUT.
    server_env: dict[str, str] = dataclasses.field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.database} {self.store}"


@dataclasses.dataclass
class LoadResult:
    """What one load did; ``ok`` is the issue's invariant: nothing lost or partial, no run
    Crashed (or Failed, or left unfinished), the CLI run ended 0 or 3."""

    spec: LoadSpec
    states: dict[str, Counter]  # kind -> Counter of state names
    cli_exit: int | None
    outputs: OutputCheck
    locked: int
    log_503: int
    responses_503: int
    server_errors: Counter
    latency: dict[str, float]
    wall_seconds: float
    rss_peak: int
    rss_hwm: int
    concurrency: int
    flow_processes: int
    trigger_seconds: float
    load_start: float
    load_peak: float
    messages: list[str]

    @property
    def refused(self) -> int:
        """Deployment runs whose creation the server refused, after the client's retries."""
        return sum(c["Refused"] for c in self.states.values())

    @property
    def created(self) -> int:
        """Runs of the load that were created: deployment runs, and the CLI's."""
        return self.spec.training + self.spec.scoring - self.refused + 1

    @property
    def ok(self) -> bool:
        runs_ok = all(set(c) <= {"Completed"} for c in self.states.values())
        return runs_ok and self.cli_exit in (0, 3) and self.outputs.ok


async def _trigger(api: str, requests: list[tuple[str, dict[str, Any]]]) -> list[Any]:
    """Create every deployment run (deployment name, parameters) at once with one API
    client, as many scripts would; returns, in order, each run's id, or the exception that
    refused it after the client's own retries."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: api}):
        async with get_client() as c:
            ids = {n: (await c.read_deployment_by_name(n)).id for n in {n for n, _ in requests}}
            runs = await asyncio.gather(
                *(c.create_flow_run_from_deployment(ids[n], parameters=p) for n, p in requests),
                return_exceptions=True,
            )
    return [r if isinstance(r, BaseException) else r.id for r in runs]


class TriggerRefused(Exception):
    """``prefect deployment run`` ended without creating its run."""


def _trigger_cli(
    api: str, requests: list[tuple[str, dict[str, Any]]], env: dict[str, str], logs: Path
) -> list[Any]:
    """One ``prefect deployment run NAME --param …`` process per run, all started at once,
    as scripts would; returns, in order, each run's id or a TriggerRefused."""
    import uuid

    logs.mkdir(exist_ok=True)
    procs = []
    for k, (name, params) in enumerate(requests):
        flags = [f"--param={key}={json.dumps(value)}" for key, value in params.items()]
        procs.append(Ended(
            [sys.executable, "-m", "prefect", "deployment", "run", name, *flags],
            {**env, "PREFECT_API_URL": api, "COLUMNS": "250"}, logs / f"trigger-{k:04d}.log",
        ))  # fmt: skip
    found = []
    for k, proc in enumerate(procs):
        code = proc.wait(600)
        out = (logs / f"trigger-{k:04d}.log").read_text(errors="replace")
        match = re.search(r"UUID: ([0-9a-f-]{36})", out)
        if code == 0 and match:
            found.append(uuid.UUID(match.group(1)))
        else:
            last = out.strip().splitlines()[-1:] or [""]
            found.append(TriggerRefused(f"exit {code}: {last[0]}"))
    return found


def _wait_runs(api: str, ids: Sequence[Any], deadline: float) -> dict[Any, Any]:
    """Poll until every flow run in ``ids`` is in a final state, or the deadline."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    runs: dict[Any, Any] = {}
    while True:
        with contextlib.suppress(Exception), api_client(api) as c:
            for k in range(0, len(ids), 100):  # the API returns 200 at most
                batch = list(ids[k : k + 100])
                found = c.read_flow_runs(
                    flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=batch)), limit=100
                )
                runs.update({r.id: r for r in found})
        done = [r for r in runs.values() if r.state and r.state.type.value in TERMINAL]
        if len(done) == len(ids) or time.monotonic() > deadline:
            return runs
        time.sleep(2)


# A log record of Prefect's console format begins "21:27:49.523 | ERROR   | ..."; the
# lines up to the next such line (a traceback) belong to it.
ASGI_ECHO = b"uvicorn.error - Exception in ASGI application"
RECORD_START = re.compile(rb"^\d\d:\d\d:\d\d\.\d+ \| ")


def _log_records(path: Path) -> Iterator[bytes]:
    """The records of a log file: Prefect's, each with its traceback; other lines alone."""
    record: list[bytes] = []
    with contextlib.suppress(FileNotFoundError), open(path, "rb") as f:
        for line in f:
            if record and (RECORD_START.match(line) or not RECORD_START.match(record[0])):
                yield b"".join(record)
                record = []
            record.append(line)
    if record:
        yield b"".join(record)


def _count_in_logs(paths: Sequence[Path]) -> Counter:
    """Log records (a message with its traceback) in ``paths`` that say "database is
    locked", that hold a 503, and the server's logged errors: retryable (answered 503,
    e.g. SQLite busy) and not (answered 500). The server logs the retryable ones only
    with PREFECT_API_LOG_RETRYABLE_ERRORS, which the load sets; by default a 503 that
    the client's retry absorbed leaves no line in any log."""
    found: Counter = Counter()
    pattern = re.compile(rb"(?<![\w.:])503(?!\w)")  # not in 21:44:43.503
    for path in paths:
        for record in _log_records(path):
            if ASGI_ECHO in record.split(b"\n", 1)[0]:
                continue  # uvicorn logs again each error Prefect's handler logged
            found["locked"] += b"database is locked" in record.lower()
            found["503"] += bool(pattern.search(record))
            found["retryable"] += b"Encountered retryable exception in request" in record
            found["500"] += b"Encountered exception in request" in record
    return found


def _latency(folder: Path) -> tuple[dict[str, float], int]:
    """p50, p95, max (ms) and count of the timed API requests; and how many got a 503."""
    seconds, n_503 = [], 0
    for path in folder.glob("*.tsv"):
        for line in path.read_text().splitlines():
            parts = line.split("\t")
            if len(parts) == 6:
                seconds.append(float(parts[5]))
                n_503 += parts[4] == "503"
    if not seconds:
        return {"p50": float("nan"), "p95": float("nan"), "max": float("nan"), "n": 0}, n_503
    q = np.percentile(np.array(seconds) * 1000, [50, 95, 100])
    return {"p50": q[0], "p95": q[1], "max": q[2], "n": len(seconds)}, n_503


def _concurrency(runs: Sequence[Any]) -> int:
    """The most flow runs Running at once, from their start and end times."""
    events = []
    for r in runs:
        if r.start_time is not None:
            end = r.end_time or r.start_time
            events += [(r.start_time.timestamp(), 1), (end.timestamp(), -1)]
    level = peak = 0
    for _, step in sorted(events, key=lambda e: (e[0], e[1])):
        level += step
        peak = max(peak, level)
    return peak


def _timing_env(work: Path) -> dict[str, str]:
    """Environment that loads the timing ``sitecustomize`` and logs into ``work``/timing."""
    hook = work / "timing-hook"
    hook.mkdir(exist_ok=True)
    (hook / "sitecustomize.py").write_text(SITECUSTOMIZE)
    (work / "timing").mkdir(exist_ok=True)
    path = os.pathsep.join(filter(None, [str(hook), os.environ.get("PYTHONPATH")]))
    return {"PYTHONPATH": path, TIMING_VARIABLE: str(work / "timing")}


def run_load(
    spec: LoadSpec,
    work: Path,
    pool: Sequence[bytes],
    database_url: str | None = None,
    store_env: dict[str, str] | None = None,
    root: str | None = None,
    time_here: bool = False,
) -> LoadResult:
    """Start the serving side on ``root`` (default ``work``/artifacts), make a champion,
    run the load of ``spec`` on inputs drawn from ``pool``, measure, stop; the result.
    ``time_here``: time this process's API requests too (it patches httpx for good)."""
    import runpy

    from flows.deployments import SCORING, TRAINING

    say = _say_timed()
    env = {
        **os.environ,
        **(store_env or {}),
        **_timing_env(work),
        "PREFECT_HOME": str(work / "client-home"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "PREFECT_RUNNER_PROCESS_LIMIT": str(spec.slots),
        # The server logs what it answered 503 for (SQLite's "database is locked").
        "PREFECT_API_LOG_RETRYABLE_ERRORS": "true",
        **spec.server_env,
    }
    env.pop("PREFECT_API_URL", None)
    if spec.checksums_file:
        env["MNIST_CHECKSUMS_FILE"] = spec.checksums_file
    root = root or str(work / "artifacts")
    # Inputs and outputs beside the root: in its bucket, or in the work folder.
    data = root.rstrip("/").rsplit("/", 1)[0] if root.startswith("s3://") else str(work)
    saved_env = dict(os.environ)
    os.environ.update({k: v for k, v in env.items() if k != "PYTHONPATH"})
    os.environ[ROLE_VARIABLE] = "bench"
    try:
        say(f"{spec.label}: writing {spec.scoring + spec.dask_files} inputs of {spec.rows} rows")
        inputs = write_inputs(f"{data}/inputs", pool, spec.scoring, spec.rows)
        dask_inputs = write_inputs(f"{data}/dask-inputs", pool, spec.dask_files, spec.rows,
                                   first=spec.scoring)  # fmt: skip
        scored, dask_scored = f"{data}/scored", f"{data}/dask-scored"
        if time_here:
            runpy.run_path(str(work / "timing-hook" / "sitecustomize.py"))
        serving = Serving(work, root, env, database_url, spec.poll_seconds)
    except BaseException:
        os.environ.clear()
        os.environ.update(saved_env)
        raise
    rss = Sampler(serving.server_pid(), serving.proc.pid)
    try:
        say(f"{spec.label}: serving at {serving.api}; training a first champion")
        train = {"mirror": spec.mirror, **spec.training_params}
        (first,) = asyncio.run(_trigger(serving.api, [(TRAINING, {**train, "seed": 0})]))
        if isinstance(first, BaseException):
            raise first
        warm = _wait_runs(serving.api, [first], time.monotonic() + 600)[first]
        if warm.state.type.value != "COMPLETED":
            raise RuntimeError(f"the first training run ended {warm.state.name}: {serving.tail()}")

        requests = [(TRAINING, {**train, "seed": k + 1}) for k in range(spec.training)]
        requests += [(SCORING, {"inputs": [i.path], "output_dir": scored}) for i in inputs]
        say(f"{spec.label}: the load: {spec.training} training, {spec.scoring} scoring runs, "
            f"score --dask-local 2 of {spec.dask_files} files")  # fmt: skip
        load = LoadAverage()
        started = time.time()
        cli_log = work / "cli-score.log"
        cli = Ended(
            [sys.executable, "-m", "cli.main", "score", *(i.path for i in dask_inputs),
             "--output-dir", dask_scored, "--dask-local", "2", "--artifacts", root],
            {**env, "PREFECT_API_URL": serving.api}, cli_log,
        )  # fmt: skip
        if spec.trigger == "cli":
            triggered = _trigger_cli(serving.api, requests, env, work / "triggers")
        else:
            triggered = asyncio.run(_trigger(serving.api, requests))
        trigger_seconds = time.time() - started
        ids = [t for t in triggered if not isinstance(t, BaseException)]
        deadline = time.monotonic() + spec.timeout
        runs = _wait_runs(serving.api, ids, deadline)
        cli_exit = cli.wait(max(1.0, deadline - time.monotonic()))
        load.stop()
        ends = [r.end_time.timestamp() for r in runs.values() if r.end_time is not None]
        wall = max([*ends, cli.ended or 0.0]) - started
        say(f"{spec.label}: done in {wall:.0f} s; checking outputs")
    finally:
        rss.stop()
        with contextlib.suppress(NameError):
            cli.stop()
        serving.stop()
        os.environ.clear()
        os.environ.update(saved_env)

    states = {"training": Counter(), "scoring": Counter()}
    messages = []
    for i, run_id in enumerate(triggered):
        kind = "training" if i < spec.training else "scoring"
        if isinstance(run_id, BaseException):
            states[kind]["Refused"] += 1
            why = (str(run_id).splitlines() or [""])[0][:160]
            messages.append(f"{kind} trigger refused: {type(run_id).__name__}: {why}")
            continue
        run = runs.get(run_id)
        state = run.state.name if run is not None and run.state else "Missing"
        if run is not None and run.state and run.state.type.value not in TERMINAL:
            state = f"Unfinished ({state})"
        states[kind][state] += 1
        if state != "Completed" and run is not None and run.state:
            messages.append(f"{kind} {run.name}: {state}: {(run.state.message or '')[:200]}")
    # A run whose creation was refused wrote nothing: counted as refused, not as lost.
    created = [i for i, t in zip(inputs, triggered[spec.training :], strict=True)
               if not isinstance(t, BaseException)]  # fmt: skip
    with _env(store_env or {}):
        outputs = check_outputs(created, scored)
        dask_outputs = check_outputs(dask_inputs, dask_scored)
    for field in dataclasses.fields(OutputCheck):
        both = getattr(outputs, field.name) + getattr(dask_outputs, field.name)
        setattr(outputs, field.name, both)
    logs = [*serving.logs, cli_log, *sorted((work / "triggers").glob("*.log"))]
    logged = _count_in_logs(logs)
    latency, responses_503 = _latency(work / "timing")
    if cli_exit not in (0, 3):
        messages.append(f"score --dask-local: exit {cli_exit}: " + _tail(cli_log))
    all_runs = list(runs.values())
    return LoadResult(
        spec=spec, states=states, cli_exit=cli_exit, outputs=outputs, locked=logged["locked"],
        log_503=logged["503"], responses_503=responses_503, server_errors=logged, latency=latency,
        wall_seconds=wall, rss_peak=rss.peak, rss_hwm=rss.hwm,
        concurrency=_concurrency(all_runs), flow_processes=rss.flow_processes,
        trigger_seconds=trigger_seconds,
        load_start=load.start, load_peak=load.peak,
        messages=messages,
    )  # fmt: skip


@contextlib.contextmanager
def _env(extra: dict[str, str]) -> Iterator[None]:
    saved = dict(os.environ)
    os.environ.update(extra)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _tail(path: Path, lines: int = 3) -> str:
    return " | ".join(path.read_text(errors="replace").strip().splitlines()[-lines:])


def _say_timed():
    t0 = time.monotonic()

    def say(line: str) -> None:
        print(f"[{time.monotonic() - t0:6.0f} s] {line}", flush=True)

    return say


# ----------------------------------------------------------------------------- the runs


@contextlib.contextmanager
def backend(database: str, folder: Path) -> Iterator[str | None]:
    """None for SQLite (the stack's default), or a fresh PostgreSQL's URL."""
    if database == "sqlite":
        yield None
        return
    from tests.postgres import start_postgres, unavailable_reason

    if unavailable_reason():
        raise SystemExit(unavailable_reason())
    server = start_postgres(max_connections=200)
    try:
        yield server.new_database("prefect")[0]
    finally:
        server.stop()


@contextlib.contextmanager
def store(kind: str, folder: Path) -> Iterator[tuple[str | None, dict[str, str]]]:
    """(artifacts root, environment): a local root (None: the default under the work
    folder), or a bucket on a fresh moto S3 server."""
    if kind == "local":
        yield None, {}
        return
    import fsspec

    from tests.support import MotoServer

    # s3fs keeps its clients, made with the endpoint of the day: forget them.
    s3 = fsspec.get_filesystem_class("s3")
    s3.clear_instance_cache()
    server = MotoServer(folder / "moto.log")
    try:
        yield f"{server.bucket('load')}/root", server.env
    finally:
        server.stop()
        s3.clear_instance_cache()


def measure(spec: LoadSpec, pool: Sequence[bytes], keep: bool = False) -> LoadResult:
    """One load of ``spec`` in a fresh work folder (removed afterwards unless ``keep``)."""
    work = Path(tempfile.mkdtemp(prefix=f"bench-load-{spec.database}-{spec.store}-"))
    try:
        with backend(spec.database, work) as url, store(spec.store, work) as (root, env):
            return run_load(spec, work, pool, url, env, root, time_here=True)
    finally:
        if keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def _mb(n: int) -> str:
    return f"{n / 2**20:.0f}"


def table(results: Sequence[LoadResult]) -> str:
    """The results side by side, one column per load."""

    def states(r: LoadResult, kind: str) -> str:
        c = r.states[kind]
        shown = ("Completed", "Failed", "Crashed", "Refused")
        other = sum(n for s, n in c.items() if s not in shown)
        return "/".join(str(c.get(s, 0)) for s in shown[:3]) + (f" +{other}?" if other else "")

    rows = [
        ("load (training+scoring+dask files)",
         lambda r: f"{r.spec.training}+{r.spec.scoring}+{r.spec.dask_files}"),
        ("training runs C/F/Cr", lambda r: states(r, "training")),
        ("scoring runs C/F/Cr", lambda r: states(r, "scoring")),
        ("score --dask-local 2: exit", lambda r: str(r.cli_exit)),
        ("triggers refused / all answered s",
         lambda r: f"{r.refused} / {r.trigger_seconds:.0f}"),
        ("rows checked", lambda r: str(r.outputs.rows)),
        ("lost rows / partial files", lambda r: f"{r.outputs.lost_rows} / "
         f"{r.outputs.partial_files + r.outputs.missing_files}"),
        ("duplicated / misplaced rows", lambda r: f"{r.outputs.duplicated_rows} / "
         f"{r.outputs.misplaced_rejects}"),
        ('"database is locked" in logs', lambda r: str(r.locked)),
        ("HTTP 503: responses / in logs", lambda r: f"{r.responses_503} / {r.log_503}"),
        ("server errors logged: 503 / 500",
         lambda r: f"{r.server_errors['retryable']} / {r.server_errors['500']}"),
        ("API requests timed", lambda r: str(r.latency["n"])),
        ("API latency p50 / p95 ms", lambda r: f"{r.latency['p50']:.0f} / {r.latency['p95']:.0f}"),
        ("API latency max ms", lambda r: f"{r.latency['max']:.0f}"),
        ("wall, first trigger -> last end s", lambda r: f"{r.wall_seconds:.0f}"),
        ("wall per run created (+1 CLI run) s", lambda r: f"{r.wall_seconds / r.created:.2f}"),
        ("server peak RSS MB (tree / VmHWM)", lambda r: f"{_mb(r.rss_peak)} / {_mb(r.rss_hwm)}"),
        ("flow runs Running at once (max)", lambda r: str(r.concurrency)),
        ("flow-run processes at once (max)", lambda r: str(r.flow_processes)),
        ("load average 1 min: start / max", lambda r: f"{r.load_start:.1f} / {r.load_peak:.1f}"),
        ("invariants (nothing lost, no Crashed)", lambda r: "PASS" if r.ok else "FAIL"),
    ]  # fmt: skip
    width = max(len(h) for h, _ in rows) + 2
    col = max(16, *(len(r.spec.label) + 2 for r in results))
    lines = [" " * width + "".join(f"{r.spec.label:>{col}}" for r in results)]
    lines += [f"{h:<{width}}" + "".join(f"{f(r):>{col}}" for r in results) for h, f in rows]
    return "\n".join(lines)


def ratios(results: Sequence[LoadResult]) -> list[str]:
    """PostgreSQL against SQLite on the same store: wall time and p95 latency."""
    by = {(r.spec.database, r.spec.store): r for r in results}
    out = []
    for kind in ("local", "s3"):
        sq, pg = by.get(("sqlite", kind)), by.get(("postgresql", kind))
        if sq and pg:
            out.append(
                f"{kind}: postgresql/sqlite wall {pg.wall_seconds / sq.wall_seconds:.2f}, "
                f"p95 latency {pg.latency['p95'] / sq.latency['p95']:.2f}"
            )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--databases", default="sqlite,postgresql")
    parser.add_argument("--stores", default="local,s3")
    parser.add_argument("--scoring", type=int, default=40)
    parser.add_argument("--training", type=int, default=3)
    parser.add_argument("--dask-files", type=int, default=8)
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--slots", type=int, default=2, help="serve's concurrent flow runs")
    parser.add_argument("--poll-seconds", type=float, default=1.0)
    parser.add_argument(
        "--scale", type=int, default=1, help="multiply training, scoring and Dask files"
    )
    parser.add_argument(
        "--trigger", choices=("client", "cli"), default="client",
        help="create the deployment runs with one API client, or one `prefect deployment "
        "run` process each",
    )  # fmt: skip
    parser.add_argument(
        "--server-env", action="append", default=[], metavar="NAME=VALUE",
        help="a setting for the serving side, e.g. PREFECT_SERVER_DATABASE_TIMEOUT=30",
    )  # fmt: skip
    parser.add_argument("--find-break", action="store_true")
    parser.add_argument("--limit-minutes", type=float, default=10.0)
    parser.add_argument("--keep", action="store_true", help="keep the work folders")
    args = parser.parse_args()

    pool = mnist_rows()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO,
                            capture_output=True, text=True).stdout.strip()  # fmt: skip
    commit = os.environ.get("MNIST_LOAD_COMMIT", commit or "unknown")  # for a copied tree
    print(f"{time.strftime('%Y-%m-%d')}, commit {commit} (+ working tree), "
          f"{os.cpu_count()} cores, slots {args.slots}, poll {args.poll_seconds:g} s, "
          f"trigger {args.trigger}", *args.server_env)  # fmt: skip
    base = dict(
        rows=args.rows, slots=args.slots, poll_seconds=args.poll_seconds, trigger=args.trigger,
        server_env=dict(item.split("=", 1) for item in args.server_env),
    )  # fmt: skip
    results: list[LoadResult] = []
    if args.find_break:
        # Waiting much past the limit tells nothing more: give the load the limit and 2 min.
        limit = args.limit_minutes * 60
        scoring = args.scoring
        while True:
            spec = LoadSpec(
                scoring=scoring, training=args.training, dask_files=args.dask_files,
                database="sqlite", store="local", timeout=limit + 120, **base,
            )  # fmt: skip
            results.append(measure(spec, pool, args.keep))
            print(table(results[-1:]), flush=True)
            r = results[-1]
            unfinished = any(s.startswith("Unfinished") for c in r.states.values() for s in c)
            if unfinished or r.wall_seconds > limit:
                print(f"SQLite: {scoring} scoring runs took over {args.limit_minutes:g} min")
                break
            if not r.ok:
                print(f"SQLite: {scoring} scoring runs: something refused, lost, Failed or Crashed")
                break
            scoring *= 2
    else:
        for database in args.databases.split(","):
            for kind in args.stores.split(","):
                spec = LoadSpec(
                    scoring=args.scoring * args.scale, training=args.training * args.scale,
                    dask_files=args.dask_files * args.scale, database=database, store=kind,
                    **base,
                )  # fmt: skip
                results.append(measure(spec, pool, args.keep))
                print(table(results[-1:]), flush=True)
    print()
    print(table(results))
    for line in ratios(results):
        print(line)
    for r in results:
        for message, n in Counter(r.messages).most_common():
            print(f"{r.spec.label} ({r.spec.scoring} scoring): {n} x {message}")


if __name__ == "__main__":
    main()
