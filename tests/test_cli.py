"""The command line's options come from the flows' signatures: same names, same defaults."""

from __future__ import annotations

import argparse
import inspect

import pytest
from prefect import flow

from cli.main import build_parser
from cli.options import add_flow_options, flow_arguments
from flows.ingest import ingest_flow
from flows.scoring import scoring_flow
from flows.sweep import sweep_flow
from flows.training import training_flow
from tests.conftest import run_cli

FLOWS = {"ingest": ingest_flow, "train": training_flow, "sweep": sweep_flow}


def _defaults(f) -> dict:
    return {n: p.default for n, p in inspect.signature(f.fn).parameters.items()}


@pytest.mark.parametrize("command", sorted(FLOWS))
def test_a_bare_command_runs_its_flow_with_the_flows_own_defaults(command):
    args = build_parser().parse_args([command])
    assert flow_arguments(args, FLOWS[command]) == _defaults(FLOWS[command])


def test_score_passes_every_parameter():
    args = build_parser().parse_args(["score", "a.csv", "b.csv", "--output-dir", "out"])
    expected = {**_defaults(scoring_flow), "inputs": ["a.csv", "b.csv"], "output_dir": "out"}
    assert flow_arguments(args, scoring_flow) == expected


def test_flags_map_to_the_flows_parameters():
    args = build_parser().parse_args(
        ["train", "--hidden", "256", "128", "--batch-size", "full", "--early-stopping", "3",
         "--mirror", "a", "--mirror", "b", "--checksums", "sums", "--force-promote",
         "--learning-rate", "0.05"]
    )  # fmt: skip
    given = flow_arguments(args, training_flow)
    assert given["hidden"] == [256, 128] and given["batch_size"] == 0
    assert given["early_stopping_patience"] == 3 and given["mirror"] == ["a", "b"]
    assert given["checksums_file"] == "sums" and given["force_promote"] is True
    assert given["learning_rate"] == 0.05
    sweep = flow_arguments(
        build_parser().parse_args(["sweep", "--hidden-grid", "10", "128,64", "--dask-local", "2"]),
        sweep_flow,
    )
    assert sweep["hidden"] == [[10], [128, 64]] and sweep["dask_local"] == 2


def test_a_flow_parameter_without_an_option_is_named():
    @flow
    def tiny(artifacts: str | None = None, new_knob: int = 3) -> None:
        """A flow that gained a parameter nobody gave a flag."""

    with pytest.raises(TypeError, match="parameter 'new_knob' has no command-line Option"):
        add_flow_options(argparse.ArgumentParser(), tiny, {})


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "--batch-size", "0"], "argument --batch-size: must be at least 1 (or 'full')"),
        (["sweep", "--dask-address", "tcp://x:1", "--dask-local", "2"],
         "argument --dask-local: not allowed with argument --dask-address"),
    ],
)  # fmt: skip
def test_bad_flags_exit_2_naming_the_flag(args, message, capsys):
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(args)
    assert exited.value.code == 2
    assert message in capsys.readouterr().err


def test_a_bad_flow_setting_stops_only_the_commands_that_run_that_flow(tmp_path, prefect_api):
    env = {"MNIST_TRAINING_TIMEOUT": "soon"}
    listing = run_cli("models", "list", "--artifacts", str(tmp_path), env=env)
    assert listing.returncode == 0, listing.stderr
    assert "no models yet" in listing.stdout
    train = run_cli("train", "--epochs", "1", "--artifacts", str(tmp_path), env=env)
    assert train.returncode == 2
    assert train.stderr.strip() == (
        "mnist-pipeline train: error: MNIST_TRAINING_TIMEOUT='soon': expected seconds "
        "(0 for no limit), e.g. 3600"
    )
