"""Training on the user's labeled digits (issue 22), through the flow and the CLI, on tiny
synthetic data: the flags and MNIST_LABELED, rejects beside the run, the leakage guard,
lineage in metrics, manifest, bundle, report and `models list`, the labeled champion gate,
the cache (an unchanged inbox is all Cached; a new file converts alone), a store inbox,
and the nightly deployment's `labeled` parameter.

The mirror's test split is ``synthetic_digits(100, seed=2)`` (tests.support.write_mirror),
so a labeled row made from those images is MNIST-test leakage; labeled digits are drawn
with other seeds.
"""

from __future__ import annotations

import csv
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from core import registry
from core.dataset import PIXEL_COLUMNS
from core.report import render_report
from core.settings import MNIST_SHA256
from core.training import fingerprint, resolve_config
from flows.training import training_flow
from tests.conftest import run_cli
from tests.support import TRAIN_HEADER, line, states, synthetic_digits

TEST_IMAGES = synthetic_digits(100, seed=2)[0].reshape(100, 784)
OUT_OF_RANGE = "pixel0: 300 is outside 0-255"


# ----------------------------------------------------------------------------- data


def labeled_rows(n: int, seed: int) -> list[list[int]]:
    """``n`` rows ``[label, pixel0..pixel783]`` of new synthetic digits."""
    images, labels = synthetic_digits(n, seed)
    return [[int(lab), *img.reshape(784).tolist()] for img, lab in zip(images, labels, strict=True)]


def write_csv(path: Path, rows: list[list[int]], leaked: list[int] = (), bad: int = 0) -> Path:
    """A Kaggle train.csv of ``rows``, then one row per MNIST test image index in
    ``leaked`` (pixels copied from it) and ``bad`` rows with an out-of-range pixel."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [TRAIN_HEADER, *(line(r) for r in rows)]
    lines += [line([7, *TEST_IMAGES[i].tolist()]) for i in leaked]
    lines += [line([1, 300, *[0] * 783]) for _ in range(bad)]
    path.write_text("\n".join(lines) + "\n")
    return path


def write_parquet(path: Path, rows: list[list[int]]) -> Path:
    """The same rows as a Parquet file: ``label`` and ``pixel0..pixel783``, integers."""
    data = np.array(rows, dtype=np.int64)
    table = pa.table(
        {"label": data[:, 0], **{p: data[:, k + 1] for k, p in enumerate(PIXEL_COLUMNS)}}
    )
    pq.write_table(table, path)
    return path


def train(artifacts: Path, mirror: tuple[Path, Path], *flags: str, env: dict | None = None):
    """``mnist-pipeline train`` on the synthetic mirror, one epoch."""
    return run_cli(
        "train", "--mirror", str(mirror[0]), "--checksums", str(mirror[1]),
        "--artifacts", str(artifacts), "--epochs", "1", *flags, env=env,
    )  # fmt: skip


def run_flow(artifacts: Path, mirror: tuple[Path, Path], **kw):
    return training_flow(
        mirror=str(mirror[0]), checksums_file=str(mirror[1]), artifacts=str(artifacts),
        **{"epochs": 1, **kw},
    )  # fmt: skip


def flow_states(result: dict) -> dict[str, str]:
    return {s["step"]: s["state"] for s in result["steps"]}


def error_line(done) -> str:
    """The one error line of a failed command (and no traceback anywhere)."""
    assert "Traceback" not in done.stdout + done.stderr, done.stderr
    (error,) = [x for x in done.stderr.splitlines() if "mnist-pipeline train: error:" in x]
    return error


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


# ----------------------------------------------------------------------------- without Prefect


def test_a_run_on_mnist_alone_keeps_its_identity():
    """The run id of a run without labeled files is the one it always had (so its folder
    and caches stay), and any labeled file, or another holdout, makes another run."""
    import hashlib

    config = resolve_config("default", epochs=1)
    payload = json.dumps({"source": MNIST_SHA256, "config": config}, sort_keys=True)
    before = hashlib.sha256(payload.encode()).hexdigest()[:20]
    assert fingerprint(MNIST_SHA256, config) == before
    assert fingerprint(MNIST_SHA256, config, [], 0.1) == before
    one = fingerprint(MNIST_SHA256, config, ["a" * 64, "b" * 64], 0.1)
    assert one != before
    assert fingerprint(MNIST_SHA256, config, ["b" * 64, "a" * 64], 0.1) == one, "a set"
    assert fingerprint(MNIST_SHA256, config, ["a" * 64, "b" * 64], 0.2) != one


def test_the_report_has_a_data_section():
    metrics = {
        "test_accuracy": 0.9, "test_log_loss": 0.3, "validation_accuracy": 0.91,
        "train_seconds": 1.2, "n_test": 3, "per_class": {}, "most_confused": [],
        "labeled_rows": 170, "labeled_holdout_accuracy": 0.625, "labeled": {"/in/a.csv": 0.625},
    }  # fmt: skip
    lineage = [{"source": "/in/a.csv", "sha256": "ab" * 32, "rows": 200, "accepted": 190,
                "rejected": 10, "held_out": 20}]  # fmt: skip
    provenance = {"labeled_data": lineage, "labeled_leaked": {"ab" * 32: 3}, "labeled_holdout": 0.1}
    report = render_report("v1", metrics, {"promoted": True, "reason": "x"}, provenance)
    assert "| labeled holdout accuracy | 0.6250 |" in report
    data = report.split("## Data", 1)[1].split("## ", 1)[0]
    assert "170 labeled rows trained on, 20 held out (10% of each file" in data
    assert "3 row(s) identical to an MNIST test image rejected" in data
    assert "| /in/a.csv | abababababab | 200 | 190 | 10 | 3 | 20 | 0.6250 |" in data
    alone = render_report("v1", {**metrics, "labeled_holdout_accuracy": None}, {"promoted": True,
                          "reason": "x"})  # fmt: skip
    assert "MNIST's training split only: no labeled data." in alone
    assert "labeled holdout accuracy" not in alone


def model_bundle(accuracy: float, labeled_accuracy=None, lineage=(), holdout=None) -> dict:
    """A small bundle as the training flow publishes it, with the labeled keys."""
    from model.config import preset
    from model.network import init_params

    config = preset("default")
    data = {"source_sha256": {"train-images-idx3-ubyte": "ab" * 32}}
    if lineage:
        data["labeled_holdout"] = holdout
    return {
        "params": init_params(config, np.random.default_rng(0)),
        "config": config.to_dict(),
        "metrics": {
            "test_accuracy": accuracy, "labeled_holdout_accuracy": labeled_accuracy,
            "labeled_rows": sum(d["accepted"] - d["held_out"] for d in lineage),
            "labeled": {d["source"]: labeled_accuracy for d in lineage},
        },
        "fingerprint": "fp", "created": "2026-12-01T00:00:00+00:00", "data": data,
        "labeled_data": list(lineage),
    }  # fmt: skip


def lineage_of(*names: str) -> list[dict]:
    return [
        {"source": f"/in/{n}", "sha256": n[0] * 64, "rows": 10, "accepted": 9, "rejected": 1,
         "held_out": 2}
        for n in names
    ]  # fmt: skip


def test_the_registry_checks_the_labeled_keys_and_reads_older_bundles(tmp_path):
    good = model_bundle(0.9, 0.5, lineage_of("a.csv"), 0.1)
    version = registry.publish(tmp_path, good, {})
    assert registry.load(tmp_path, version).bundle["labeled_data"] == good["labeled_data"]
    assert registry.list_versions(tmp_path)[0]["labeled_rows"] == 7
    older = {k: v for k, v in model_bundle(0.9).items() if k != "labeled_data"}
    older["metrics"] = {"test_accuracy": 0.9}
    registry.load(tmp_path, registry.publish(tmp_path, older, {}))  # no labeled keys: fine
    for change, problem in (
        ({"rows": 11}, "'labeled_data[0]': accepted + rejected is not rows"),
        ({"sha256": "xyz"}, "'labeled_data[0]'.sha256 is missing or not a SHA-256"),
        ({"held_out": -1}, "'labeled_data[0]'.held_out is -1, not a count"),
    ):
        bad = model_bundle(0.9, 0.5, [{**lineage_of("a.csv")[0], **change}], 0.1)
        with pytest.raises(registry.ModelError, match=re.escape(problem)):
            registry.load(tmp_path, registry.publish(tmp_path, bad, {}))
    bad = model_bundle(0.9, 1.5, lineage_of("a.csv"), 0.1)
    with pytest.raises(registry.ModelError, match="'labeled_holdout_accuracy' is 1.5"):
        registry.load(tmp_path, registry.publish(tmp_path, bad, {}))


def test_the_labeled_gate_without_prefect(tmp_path):
    first = registry.publish(tmp_path, model_bundle(0.9, 0.40, lineage_of("a.csv"), 0.1), {})
    registry.promote_if_not_worse(tmp_path, first)
    better = registry.publish(tmp_path, model_bundle(0.8, 0.60, lineage_of("a.csv"), 0.1), {})
    by_mnist = registry.promote_if_not_worse(tmp_path, better)
    assert not by_mnist["promoted"] and by_mnist["gate"] == "mnist"
    assert by_mnist["reason"] == (
        f"test accuracy 0.8000 is lower than champion {first}'s 0.9000 (MNIST gate, tolerance "
        "0.0); labeled holdout accuracy 0.6000, champion's 0.4000; kept but not promoted"
    )
    by_labeled = registry.promote_if_not_worse(tmp_path, better, gate="labeled")
    assert by_labeled["promoted"] and registry.champion_version(tmp_path) == better
    assert by_labeled["reason"] == (
        f"labeled holdout accuracy 0.6000 is not lower than champion {first}'s 0.4000 "
        "(labeled gate, tolerance 0.0); test accuracy 0.8000, champion's 0.9000"
    )
    for other in (lineage_of("a.csv", "b.csv"), lineage_of("b.csv")):
        elsewhere = registry.publish(tmp_path, model_bundle(0.95, 0.99, other, 0.1), {})
        refused = registry.promote_if_not_worse(tmp_path, elsewhere, gate="labeled")
        assert (
            not refused["promoted"]
            and "not measured on the same labeled holdout" in (refused["reason"])
        )
    fraction = registry.publish(tmp_path, model_bundle(0.95, 0.99, lineage_of("a.csv"), 0.2), {})
    assert not registry.promote_if_not_worse(tmp_path, fraction, gate="labeled")["promoted"]
    alone = registry.publish(tmp_path, model_bundle(0.95), {})
    refused = registry.promote_if_not_worse(tmp_path, alone, gate="labeled")
    assert not refused["promoted"] and "has no labeled holdout accuracy" in refused["reason"]
    assert registry.champion_version(tmp_path) == better


@pytest.mark.e2e  # a fresh interpreter
def test_a_conversion_step_reaches_no_model_code():
    """Its cache key digests core/ and tasks/ only (tasks.labeled.LABELED), so that an edit
    in model/ does not convert every labeled file again: it must not import model/."""
    import subprocess
    import sys

    from tests.support import REPO

    code = "import sys, tasks.labeled; print(sorted(m for m in sys.modules if m[:5] == 'model'))"
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_bad_fractions_and_gates_are_usage_errors(tmp_path):
    for flags, problem in (
        (["--labeled-holdout", "1.5"], "argument --labeled-holdout: '1.5' is not a fraction"),
        (["--max-reject-fraction", "x"], "argument --max-reject-fraction: 'x' is not a fraction"),
        (["--promote-on", "both"], "argument --promote-on: invalid choice: 'both'"),
    ):
        done = run_cli("train", "--artifacts", str(tmp_path), *flags)
        assert done.returncode == 2
        assert problem in done.stderr


# ----------------------------------------------------------------------------- end to end


@pytest.fixture
def inbox(tmp_path: Path) -> Path:
    """inbox/a.csv (60 digits, one MNIST test image, one bad row) and inbox/b.parquet (40)."""
    folder = tmp_path / "inbox"
    write_csv(folder / "a.csv", labeled_rows(60, seed=5), leaked=[4], bad=1)
    folder.mkdir(exist_ok=True)
    write_parquet(folder / "b.parquet", labeled_rows(40, seed=6))
    return folder


def test_labeled_files_are_learned_from_accounted_for_and_cached(
    prefect_api, mirror, artifacts, inbox
):
    """Every flag, the rejects beside the run, the leakage guard, the lineage everywhere;
    then MNIST_LABELED gives the same run, all Cached; a new file converts alone; a
    renamed one is not converted again."""
    first = train(
        artifacts, mirror, "--labeled", str(inbox / "*.csv"), "--labeled", str(inbox / "b.parquet"),
        "--max-reject-fraction", "0.05", "--labeled-holdout", "0.25",
    )  # fmt: skip
    assert first.returncode == 0, first.stderr
    steps = states(first.stdout)
    assert {"convert labeled a.csv", "convert labeled b.parquet"} <= set(steps)
    assert set(steps.values()) == {"Completed"}, steps

    (run_dir,) = (artifacts / "training").iterdir()
    rejects = run_dir / "rejects" / "a.rejects.csv"
    assert f"rejects: {rejects}" in first.stdout
    rows = read_csv(rejects)
    assert list(rows[0]) == ["ImageId", "Line", "Reason"]
    # Line counts the header: data row 61 is line 62.
    assert rows == [
        {"ImageId": "61", "Line": "62", "Reason": "identical to MNIST test image 4"},
        {"ImageId": "62", "Line": "63", "Reason": OUT_OF_RANGE},
    ]
    assert not (run_dir / "rejects" / "b.rejects.csv").exists()

    version_dir = artifacts / "models" / registry.champion_version(artifacts / "models")
    manifest = json.loads((version_dir / "manifest.json").read_text())
    lineage = {Path(d["source"]).name: d for d in manifest["labeled_data"]}
    assert set(lineage) == {"a.csv", "b.parquet"}
    a, b = lineage["a.csv"], lineage["b.parquet"]
    assert (a["rows"], a["accepted"], a["rejected"]) == (62, 60, 2)
    assert (b["rows"], b["accepted"], b["rejected"]) == (40, 40, 0)
    assert set(a) == {"source", "sha256", "rows", "accepted", "rejected", "held_out"}
    assert 0 < a["held_out"] < 60 and 0 < b["held_out"] < 40
    loaded = registry.load(artifacts / "models")
    assert loaded.bundle["labeled_data"] == manifest["labeled_data"]

    metrics = json.loads((version_dir / "metrics.json").read_text())
    trained = a["accepted"] - a["held_out"] + b["accepted"] - b["held_out"]
    assert metrics["labeled_rows"] == trained
    assert set(metrics["labeled"]) == {a["source"], b["source"]}
    assert 0 <= metrics["labeled_holdout_accuracy"] <= 1
    assert f"labeled rows trained on {trained}, labeled holdout accuracy " in first.stdout
    assert (
        f"labeled {a['source']}: 62 rows, 60 accepted, 2 rejected (1 identical to an MNIST "
        f"test image), {a['held_out']} held out" in first.stdout
    )

    report = (version_dir / "report.md").read_text()
    assert "## Data" in report and "1 row(s) identical to an MNIST test image rejected" in report

    listing = run_cli("models", "list", "--artifacts", str(artifacts))
    assert re.search(rf"\* {version_dir.name} .* {trained}$", listing.stdout, re.M), listing.stdout

    # The same inbox from the environment: the same run, every step Cached.
    env = {"MNIST_LABELED": f"{inbox / '*.csv'} {inbox / 'b.parquet'}"}
    again = train(
        artifacts, mirror, "--max-reject-fraction", "0.05", "--labeled-holdout", "0.25", env=env
    )
    assert again.returncode == 0, again.stderr
    assert set(states(again.stdout).values()) == {"Cached"}, again.stdout

    # One new file: only it is converted, then the model steps run.
    write_csv(inbox / "c.csv", labeled_rows(30, seed=8))
    env = {"MNIST_LABELED": f"{inbox / '*.csv'} {inbox / 'b.parquet'}"}
    grown = train(
        artifacts, mirror, "--max-reject-fraction", "0.05", "--labeled-holdout", "0.25", env=env
    )
    assert grown.returncode == 0, grown.stderr
    steps = states(grown.stdout)
    assert steps.pop("convert labeled c.csv") == "Completed"
    model_steps = ("train", "evaluate", "persist", "promote")
    assert {steps.pop(s) for s in model_steps} == {"Completed"}, grown.stdout
    assert set(steps.values()) == {"Cached"}, steps  # downloads, MNIST and a, b conversions

    # A renamed file is the same data: not parsed again, the same run.
    (inbox / "c.csv").rename(inbox / "z.csv")
    renamed = train(
        artifacts, mirror, "--max-reject-fraction", "0.05", "--labeled-holdout", "0.25", env=env
    )
    assert renamed.returncode == 0, renamed.stderr
    steps = states(renamed.stdout)
    assert steps["convert labeled z.csv"] == "Cached" and set(steps.values()) == {"Cached"}


def test_the_run_publishes_its_rejects_as_an_artifact(prefect_api, mirror, artifacts, inbox):
    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    result = run_flow(artifacts, mirror, labeled=[str(inbox / "a.csv")], max_reject_fraction=0.05)
    (rejects,) = result["rejects"]
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["mnist-training-rejects"]))
        )
    reports = [a.data for a in found if rejects in a.data]
    assert reports, "no mnist-training-rejects artifact names the run's rejects file"
    assert "identical to MNIST test image 4" in reports[0] and OUT_OF_RANGE in reports[0]


def test_an_entry_that_matches_nothing_is_one_line_before_anything_runs(
    prefect_api, mirror, artifacts, tmp_path
):
    empty = tmp_path / "empty" / "*.csv"
    done = train(artifacts, mirror, "--labeled", str(empty))
    assert done.returncode == 2
    assert done.stderr.strip() == f"mnist-pipeline train: error: {empty}: no file matches"
    assert not artifacts.exists()
    # MNIST_LABELED's entries alike.
    done = train(artifacts, mirror, env={"MNIST_LABELED": str(empty)})
    assert done.returncode == 2 and "no file matches" in done.stderr
    assert not artifacts.exists()


def test_a_file_over_the_reject_limit_fails_the_run_in_one_line(
    prefect_api, mirror, artifacts, tmp_path
):
    bad = write_csv(tmp_path / "inbox" / "shift1.csv", labeled_rows(45, seed=9), bad=5)
    done = train(artifacts, mirror, "--labeled", str(bad))
    assert done.returncode == 1, done.stdout + done.stderr
    (run_dir,) = (artifacts / "training").iterdir()
    rejects = run_dir / "rejects" / "shift1.rejects.csv"
    assert error_line(done) == (
        f"mnist-pipeline train: error: {bad}: 5 of 50 rows rejected (10%), over the limit "
        f"of 1% (--max-reject-fraction); see {rejects}"
    )
    assert [r["Reason"] for r in read_csv(rejects)] == [OUT_OF_RANGE] * 5
    assert not list((artifacts / "data" / "labeled").glob("*.parquet")), "nothing converted"
    assert not (artifacts / "models").exists()
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName

    with get_client(sync_client=True) as client:
        (run,) = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                name=FlowRunFilterName(any_=[f"train-default-{run_dir.name[:8]}"])
            )
        )
    assert run.state.is_failed()


def test_mnist_test_images_are_refused_as_labeled_data(prefect_api, mirror, artifacts, tmp_path):
    """The leakage guard: a file of nothing but MNIST test images is refused whole."""
    leaked = write_csv(tmp_path / "leaked.csv", [], leaked=list(range(10)))
    done = train(artifacts, mirror, "--labeled", str(leaked))
    assert done.returncode == 1
    assert "10 of 10 rows rejected (100%)" in error_line(done)
    (rejects,) = (artifacts / "training").glob("*/rejects/leaked.rejects.csv")
    assert [r["Reason"] for r in read_csv(rejects)] == [
        f"identical to MNIST test image {i}" for i in range(10)
    ]


def shifted_rows(n: int, seed: int) -> list[list[int]]:
    """``n`` rows of new digits moved 4 pixels right and down: a model of the synthetic
    MNIST alone reads almost none of them (issue 22's story, in small)."""
    images, labels = synthetic_digits(n, seed)
    images = np.roll(images, (4, 4), axis=(1, 2))
    return [[int(lab), *img.reshape(784).tolist()] for img, lab in zip(images, labels, strict=True)]


def holdout_accuracy(artifacts: Path, version: str, lineage: list[dict], holdout: float) -> float:
    """``version``'s accuracy on a run's labeled holdout, computed here, apart from the
    gate: each file's held-out rows, predicted by the model as loaded from the registry."""
    from core.labeled import holdout_data
    from model.predict import predict_proba_pixels

    params = registry.load(artifacts / "models", version).params
    right = total = 0
    for entry in lineage:
        path = artifacts / "data" / "labeled" / f"{entry['sha256']}.parquet"
        X, y = holdout_data({"path": str(path)}, holdout)
        right += int((predict_proba_pixels(params, X).argmax(axis=1) == y).sum())
        total += len(y)
    return right / total


def measured_figure(reason: str, champion: str) -> str:
    """The champion's figure in a labeled gate's reason, as measured on this run's holdout."""
    found = re.search(
        rf"champion {champion}'s (\d\.\d{{4}}) \(measured on this run's holdout; labeled gate",
        reason,
    )
    assert found, reason
    return found.group(1)


def closing_line(done) -> str:
    assert done.returncode == 0, done.stdout + done.stderr
    (found,) = [
        x for x in done.stdout.splitlines() if x.startswith(("promoted: ", "not promoted: "))
    ]
    return found


def test_the_labeled_gate_measures_the_champion_on_this_runs_holdout(
    prefect_api, mirror, artifacts, tmp_path
):
    """A champion of MNIST alone is measured on the run's holdout (it never saw a labeled
    row): a new model worse there is kept out, one better is promoted. A champion that
    trained on rows the run holds out (a smaller holdout share) cannot be compared:
    refused in one line, unless --force-promote. The same holdout: the recorded figure."""
    plain = write_csv(tmp_path / "in" / "plain.csv", labeled_rows(200, seed=5))
    shifted = write_csv(tmp_path / "in" / "shifted.csv", shifted_rows(200, seed=6))
    models = artifacts / "models"
    alone = run_flow(artifacts, mirror, epochs=2)
    assert alone["promotion"]["promoted"]
    first = alone["version"]

    # Lower: a model that barely learns (a tiny learning rate), on unshifted digits that
    # the champion reads well. Measured, compared, kept out.
    worse = run_flow(artifacts, mirror, labeled=[str(plain)], labeled_holdout=0.25, epochs=2,
                     learning_rate=1e-6, promote_on="labeled")  # fmt: skip
    decision, ours = worse["promotion"], worse["labeled_holdout_accuracy"]
    assert decision["gate"] == "labeled" and not decision["promoted"]
    assert registry.champion_version(models) == first
    theirs = measured_figure(decision["reason"], first)
    assert theirs == f"{holdout_accuracy(artifacts, first, worse['labeled_data'], 0.25):.4f}"
    assert ours < float(theirs), (ours, theirs)
    assert decision["reason"] == (
        f"labeled holdout accuracy {ours:.4f} is lower than champion {first}'s {theirs} "
        f"(measured on this run's holdout; labeled gate, tolerance 0.0); test accuracy "
        f"{worse['test_accuracy']:.4f}, champion's {alone['test_accuracy']:.4f}; kept but not "
        "promoted"
    )

    # Higher: shifted digits arrive, which the champion reads badly and the new model
    # learns. Through the CLI, whose closing line names both figures.
    line_ = closing_line(
        train(artifacts, mirror, "--labeled", str(shifted), "--labeled-holdout", "0.25",
              "--epochs", "2", "--promote-on", "labeled")
    )  # fmt: skip
    second = registry.champion_version(models)
    assert second != first, line_
    manifest = registry.read_manifest(models / second)
    ours = manifest["labeled_holdout_accuracy"]
    theirs = measured_figure(line_, first)
    assert theirs == f"{holdout_accuracy(artifacts, first, manifest['labeled_data'], 0.25):.4f}"
    assert ours > float(theirs) + 0.3, (ours, theirs)
    assert line_.startswith(
        f"promoted: {second} is the champion (labeled holdout accuracy {ours:.4f} is not "
        f"lower than champion {first}'s {theirs} (measured on this run's holdout; labeled gate"
    )

    # A larger holdout share than the champion's: it trained on rows this run holds out.
    line_ = closing_line(
        train(artifacts, mirror, "--labeled", str(shifted), "--labeled-holdout", "0.5",
              "--epochs", "2", "--promote-on", "labeled")
    )  # fmt: skip
    assert line_ == (
        f"not promoted: champion {second} kept (labeled gate: the champion was not measured "
        "on the same labeled holdout, and it learned from labeled rows that this run holds "
        "out (it held out 0.25 of each file's rows, this run 0.5), so the two cannot be "
        "compared; --force-promote promotes it anyway)"
    )
    assert registry.champion_version(models) == second

    forced = run_flow(artifacts, mirror, labeled=[str(shifted)], labeled_holdout=0.5, epochs=2,
                      promote_on="labeled", force_promote=True)  # fmt: skip
    assert forced["promotion"]["promoted"]
    assert registry.champion_version(models) == forced["version"]

    # The same files and share as the champion: its recorded figure, not measured again.
    same = run_flow(artifacts, mirror, labeled=[str(shifted)], labeled_holdout=0.5, epochs=2,
                    seed=3, promote_on="labeled")  # fmt: skip
    ours, theirs = same["labeled_holdout_accuracy"], forced["labeled_holdout_accuracy"]
    decision = same["promotion"]
    assert decision["promoted"] == (ours >= theirs)
    assert decision["reason"].startswith(
        f"labeled holdout accuracy {ours:.4f} is {'not ' if ours >= theirs else ''}lower than "
        f"champion {forced['version']}'s {theirs:.4f} (labeled gate, tolerance 0.0); test "
        f"accuracy {same['test_accuracy']:.4f}"
    )


def test_a_labeled_inbox_on_the_store(s3_bucket, prefect_api, mirror, artifacts, tmp_path):
    import s3fs

    local = write_csv(tmp_path / "a.csv", labeled_rows(30, seed=5), bad=0)
    fs = s3fs.S3FileSystem(skip_instance_cache=True, use_listings_cache=False)
    fs.put_file(str(local), f"{s3_bucket[5:]}/labeled/2026-12/a.csv")
    fs.put_file(str(write_parquet(tmp_path / "b.parquet", labeled_rows(20, seed=6))),
                f"{s3_bucket[5:]}/labeled/2026-12/b.parquet")  # fmt: skip
    done = train(artifacts, mirror, "--labeled", f"{s3_bucket}/labeled/2026-12/*")
    assert done.returncode == 0, done.stderr
    steps = states(done.stdout)
    assert steps["convert labeled a.csv"] == steps["convert labeled b.parquet"] == "Completed"
    lineage = registry.load(artifacts / "models").bundle["labeled_data"]
    assert sorted(d["source"] for d in lineage) == [
        f"{s3_bucket}/labeled/2026-12/a.csv",
        f"{s3_bucket}/labeled/2026-12/b.parquet",
    ]
    missing = train(artifacts, mirror, "--labeled", f"{s3_bucket}/labeled/2027-01/*.csv")
    assert missing.returncode == 2
    assert missing.stderr.strip().endswith(f"{s3_bucket}/labeled/2027-01/*.csv: no file matches")


def test_files_of_the_same_name_are_told_apart(prefect_api, mirror, artifacts, tmp_path):
    one = write_csv(tmp_path / "x" / "d.csv", labeled_rows(20, seed=5), bad=1)
    two = write_csv(tmp_path / "y" / "d.csv", labeled_rows(20, seed=6), bad=1)
    braces = write_csv(tmp_path / "z" / "scan{1}.csv", labeled_rows(20, seed=7))
    labeled = [str(one), str(two), str(braces)]
    result = run_flow(artifacts, mirror, labeled=labeled, max_reject_fraction=0.1)
    steps = flow_states(result)
    assert {"convert labeled d.csv", "convert labeled d.csv (2)"} <= set(steps)
    # Prefect formats a run name with the task's parameters: the braces are kept.
    assert steps["convert labeled scan{1}.csv"] == "Completed"
    names = sorted(Path(p).name for p in result["rejects"])
    assert names == ["d-2.rejects.csv", "d.rejects.csv"]
    # The same bytes twice are one file, learned from once.
    shutil.copy(one, tmp_path / "copy.csv")
    twice = run_flow(artifacts, mirror, labeled=[str(one), str(tmp_path / "copy.csv")],
                     max_reject_fraction=0.1)  # fmt: skip
    assert len(twice["labeled_data"]) == 1


def test_the_nightly_deployment_takes_a_labeled_parameter(prefect_api, mirror, tmp_path):
    """`serve --labeled` sets the nightly run's default; `prefect deployment run -p
    labeled=[...]` overrides it, against a real server and a real serve process."""
    import os
    import subprocess
    import sys
    import time

    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.exceptions import ObjectNotFound

    from flows.deployments import TRAINING
    from tests.support import REPO, forget_deployment, stop_process_group

    artifacts = tmp_path / "artifacts"
    inbox = write_csv(tmp_path / "inbox" / "a.csv", labeled_rows(30, seed=5)).parent
    other = write_csv(tmp_path / "other" / "b.csv", labeled_rows(30, seed=6))
    env = {**os.environ, "MNIST_CHECKSUMS_FILE": str(mirror[1])}
    with (tmp_path / "serve.log").open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cli.main", "serve", "--artifacts", str(artifacts),
             "--poll-seconds", "1", "--labeled", "inbox/*.csv"],
            cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        with get_client(sync_client=True) as client:
            while True:
                assert proc.poll() is None, (tmp_path / "serve.log").read_text()
                try:
                    nightly = client.read_deployment_by_name(TRAINING)
                    if nightly.parameters.get("labeled"):
                        break
                except ObjectNotFound:
                    pass
                assert time.monotonic() < deadline, (tmp_path / "serve.log").read_text()
                time.sleep(0.5)
        # Made absolute where serve runs: a run may start in another folder.
        assert nightly.parameters["labeled"] == [str(inbox / "*.csv")]

        params = {"labeled": [str(other)], "mirror": str(mirror[0]), "epochs": 1}
        done = subprocess.run(
            [sys.executable, "-m", "prefect", "deployment", "run", TRAINING,
             *(f"--param={k}={json.dumps(v)}" for k, v in params.items()), "--watch"],
            cwd=REPO, env={**os.environ, "COLUMNS": "250"}, capture_output=True, text=True,
            timeout=300,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        run_id = re.search(r"UUID: ([0-9a-f-]{36})", done.stdout).group(1)
        with get_client(sync_client=True) as client:
            runs = client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id]))
            )
        steps = {run.name: run.state.name for run in runs}
        assert steps["convert labeled b.csv"] == "Completed", steps
        assert "convert labeled a.csv" not in steps  # the parameter replaced the default
        lineage = registry.load(artifacts / "models").bundle["labeled_data"]
        assert [d["source"] for d in lineage] == [str(other)]
    finally:
        stop_process_group(proc)
        forget_deployment(TRAINING)
