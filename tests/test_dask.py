"""Scale-out: task runners, and scoring on a real Dask cluster (one task per file).

The end-to-end tests start a ``distributed.LocalCluster`` of two worker processes on
127.0.0.1 and run the ``mnist-scoring`` flow on it through prefect-dask, against the
session's Prefect server; the outputs must be byte for byte those of the local runner.
"""

from __future__ import annotations

import csv
import gzip
import os
import signal
import threading
import time
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from core.scoring.score_file import DEFAULT_CHUNK_ROWS

HEADER = ",".join(f"pixel{j}" for j in range(784))

# ----------------------------------------------------------------------------- helpers


def digits_csv(path: Path, n: int, seed: int, labels: bool = True, bad: tuple[int, ...] = ()):
    """A Kaggle-style CSV of ``n`` synthetic digits (rows in ``bad`` get a pixel of 300)."""
    from tests.support import synthetic_digits

    unique = min(n, 1000)  # tile a block of distinct rows: writing stays fast
    images, y = synthetic_digits(unique, seed)
    text = [str(v) for v in range(256)]
    rows = [
        (f"{y[i]}," if labels else "") + ",".join([text[v] for v in images[i].ravel().tolist()])
        for i in range(unique)
    ]
    with open(path, "w") as f:
        f.write(("label," if labels else "") + HEADER + "\n")
        for k in range(n):
            row = rows[k % unique]
            f.write((row[: row.rindex(",")] + ",300" if k in bad else row) + "\n")
    return path


def test_runner_choice(monkeypatch):
    from prefect.task_runners import ThreadPoolTaskRunner
    from prefect_dask import DaskTaskRunner

    from core.settings import ENV_DASK_ADDRESS
    from flows.runners import resolve_dask, task_runner

    monkeypatch.delenv(ENV_DASK_ADDRESS, raising=False)
    assert isinstance(task_runner(), ThreadPoolTaskRunner)
    assert task_runner("tcp://10.0.0.1:8786").address == "tcp://10.0.0.1:8786"
    local = task_runner(dask_local=3)
    assert isinstance(local, DaskTaskRunner) and local.cluster_kwargs["n_workers"] == 3
    monkeypatch.setenv(ENV_DASK_ADDRESS, "tcp://sched:8786")
    assert resolve_dask() == ("tcp://sched:8786", None)
    assert resolve_dask(dask_local=2) == (None, 2)  # an explicit choice beats the env
    with pytest.raises(ValueError, match="not both"):
        resolve_dask("tcp://a:1", 2)
    with pytest.raises(ValueError, match="at least 1"):
        resolve_dask(dask_local=0)


# ----------------------------------------------------------------------------- on a cluster


@pytest.fixture(scope="module")
def trained(champion_root, tmp_path_factory):
    """An artifacts root with a champion trained on synthetic digits (the session's, copied)."""
    from tests.support import copy_root

    return copy_root(champion_root, tmp_path_factory.mktemp("dask")) / "artifacts"


@pytest.fixture(scope="module")
def cluster(prefect_api):
    """A real two-process Dask cluster on 127.0.0.1 (workers see PREFECT_API_URL)."""
    from distributed import Client, LocalCluster

    with (
        LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=":0",
        ) as local,
        Client(local) as client,
    ):
        yield local, client


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """Several small files (one with rejects, one gzipped) and one big file of several
    chunks, with rejects at chunk edges."""
    folder = tmp_path_factory.mktemp("inputs")
    for k in range(5):
        digits_csv(
            folder / f"small{k}.csv",
            300 + 37 * k,
            seed=k,
            labels=k % 2 == 0,
            bad=(5, 77) if k == 1 else (),
        )
    gz = folder / "packed.csv.gz"
    gz.write_bytes(gzip.compress(digits_csv(folder / "packed.tmp", 500, seed=9).read_bytes()))
    (folder / "packed.tmp").unlink()
    rows = 4 * DEFAULT_CHUNK_ROWS + 123
    digits_csv(folder / "big.csv", rows, seed=11, bad=(0, 8191, 8192, rows - 1))
    return folder


def score(inputs: Path, out: Path, artifacts: Path, **kw):
    from flows.scoring import scoring_flow

    return scoring_flow(
        inputs=[str(inputs / "*.csv"), str(inputs / "*.csv.gz")],
        output_dir=str(out),
        artifacts=str(artifacts),
        **kw,
    )


def tree(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def local_run(trained, inputs, tmp_path_factory):
    """The reference: the default thread runner."""
    out = tmp_path_factory.mktemp("local")
    result = score(inputs, out, trained)
    return result, tree(out)


@pytest.mark.e2e
def test_dask_outputs_equal_the_local_runner(trained, inputs, cluster, local_run, tmp_path):
    local_result, expected = local_run
    # The way a deployment asks for Dask: a parameter; the flow reruns itself on Dask.
    result = score(inputs, tmp_path, trained, dask_address=cluster[0].scheduler_address)
    assert tree(tmp_path) == expected  # byte for byte; no temp files left
    assert "big.rejects.csv" in expected and len(expected) == 7 + 2
    for key in ("rows", "scored", "rejected", "failed_files", "model"):
        assert result[key] == local_result[key]
    by_file = {Path(f["file"]).name: f for f in result["files"]}
    assert by_file["big.csv"]["rows"] == 4 * DEFAULT_CHUNK_ROWS + 123
    assert by_file["big.csv"]["rejected"] == 4
    # One task per file, each file whole (the Prefect API saw those tasks).
    # Each file's task run is named by its file (issue 16).
    assert _task_names() == Counter({"locate_model": 1, **{f"score {name}": 1 for name in by_file}})
    assert len(by_file) == 7


@pytest.mark.e2e
def test_parquet_on_dask_equals_the_thread_runner(trained, inputs, cluster, tmp_path):
    from flows.scoring import scoring_flow

    big = str(inputs / "big.csv")
    for name, dask in (("threads", None), ("dask", cluster[0].scheduler_address)):
        scoring_flow(
            inputs=[big],
            output=str(tmp_path / f"{name}.parquet"),
            format="parquet",
            artifacts=str(trained),
            dask_address=dask,
        )
    assert (tmp_path / "dask.parquet").read_bytes() == (tmp_path / "threads.parquet").read_bytes()
    assert pq.read_metadata(tmp_path / "dask.parquet").num_rows == 4 * DEFAULT_CHUNK_ROWS + 119


@pytest.mark.e2e
def test_worker_killed_mid_task_run_completes_exactly_once(
    trained, inputs, cluster, local_run, tmp_path
):
    local, client = cluster
    _, expected = local_run
    killed: list[int] = []

    def kill_a_worker_mid_file() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not killed:
            for address, running in client.run(_executing).items():
                # The big file's task, started a moment ago, is far from done: kill its worker.
                if any(k.startswith("score_csv") and 0.05 < age < 0.15 for k, age in running):
                    pid = client.run(os.getpid, workers=[address])[address]
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
                    return
            time.sleep(0.01)

    killer = threading.Thread(target=kill_a_worker_mid_file, daemon=True)
    killer.start()
    result = score(inputs, tmp_path, trained, dask_address=local.scheduler_address)
    killer.join()
    assert killed, "no scoring task was caught running"
    assert tree(tmp_path) == expected  # no duplicate, no missing row, no temp file
    ids = [int(r["ImageId"]) for r in csv.DictReader(open(tmp_path / "big.predictions.csv"))]
    ids += [int(r["ImageId"]) for r in csv.DictReader(open(tmp_path / "big.rejects.csv"))]
    assert sorted(ids) == list(range(1, 4 * DEFAULT_CHUNK_ROWS + 124))
    assert result["failed_files"] == 0
    client.wait_for_workers(2, timeout=60)  # the nanny restarted it
    assert killed[0] not in client.run(os.getpid).values()


@pytest.mark.e2e
def test_cli_score_on_a_local_dask_cluster(trained, inputs, local_run, tmp_path):
    from tests.conftest import run_cli

    _, expected = local_run
    done = run_cli(
        "score",
        str(inputs / "small0.csv"),
        str(inputs / "small1.csv"),
        "--output-dir",
        str(tmp_path),
        "--artifacts",
        str(trained),
        "--dask-local",
        "2",
    )
    assert done.returncode == 3, done.stderr  # small1 has two rejected rows
    assert "2 rejected" in done.stdout and "Traceback" not in done.stderr
    assert tree(tmp_path) == {
        k: v for k, v in expected.items() if k.startswith("small0.") or k.startswith("small1.")
    }
    done = run_cli("score", "x.csv", "--output-dir", str(tmp_path), "--dask-local", "0")
    assert done.returncode == 2 and "must be at least 1" in done.stderr


def _executing(dask_worker) -> list[tuple[str, float]]:
    """(key, seconds running) of the tasks a worker is executing (run on the worker)."""
    now = time.time()
    return [
        (str(ts.key), now - ts.start_time)
        for ts in dask_worker.state.executing
        if ts.start_time is not None
    ]


def _task_names() -> Counter[str]:
    """Names of the task runs of the latest mnist-scoring flow run (the Dask subflow)."""
    from prefect import get_client
    from prefect.client.schemas.filters import (
        FlowFilter,
        FlowFilterName,
        FlowRunFilter,
        FlowRunFilterId,
    )
    from prefect.client.schemas.sorting import FlowRunSort

    with get_client(sync_client=True) as client:
        [run] = client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=["mnist-scoring"])),
            sort=FlowRunSort.START_TIME_DESC,
            limit=1,
        )
        tasks = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id]))
        )
    return Counter(t.name.rsplit("-", 1)[0] for t in tasks)


@pytest.mark.e2e  # worker processes
def test_two_local_clusters_at_once_do_not_collide_on_a_port():
    # Both schedulers' HTTP servers took port 8787: the second printed a UserWarning.
    import warnings

    from distributed import LocalCluster

    from flows.runners import local_cluster_kwargs

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with LocalCluster(**local_cluster_kwargs(1)), LocalCluster(**local_cluster_kwargs(1)):
            pass
    assert [str(w.message) for w in caught if "already in use" in str(w.message)] == []
