"""Command-line options built from a flow's signature: a flow's parameters are declared once.

The flow function says each parameter's name (the option's ``dest``), its default and its
type; this module adds what only a command line needs: the flag, its help and metavar,
and a parser where the annotation is not enough (``N|full``, ``128,64``). A flow
parameter with no ``Option`` is a programming error that ``add_flow_options`` names, so
a new parameter cannot be forgotten here.
"""

from __future__ import annotations

import argparse
import inspect
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from core.settings import (
    ENV_ARTIFACTS,
    ENV_CHECKSUMS,
    ENV_DASK_ADDRESS,
    ENV_LABELED,
    ENV_MIRROR,
    SettingsError,
    check_fraction,
)
from model.config import PRESETS


@dataclass(frozen=True)
class Option:
    """How one flow parameter appears on the command line."""

    flag: str | None  # None: a positional argument
    help: str | None = None
    metavar: str | None = None
    type: Callable[[str], Any] | None = None  # default: the annotation's int/float/str
    choices: tuple[str, ...] | None = None
    repeat: bool = False  # given once per value (--mirror A --mirror B), not A B

    def but(self, **changes: Any) -> Option:
        """This option with some fields changed (another command's wording)."""
        return replace(self, **changes)


def positive(text: str) -> int:
    """A whole number >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def layers(text: str) -> list[int]:
    """Comma-separated hidden layer widths, e.g. ``128,64``."""
    try:
        widths = [int(w) for w in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a comma-separated list of layer widths"
        ) from None
    if any(w < 1 for w in widths):
        raise argparse.ArgumentTypeError(f"{text!r}: layer widths must be at least 1")
    return widths


def batch_size(text: str) -> int:
    """A mini-batch size, or ``full`` (0, the flows' spelling of full batch)."""
    if text == "full":
        return 0
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number or 'full'") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1 (or 'full')")
    return value


def fraction(text: str) -> float:
    """A number from 0 to 1, e.g. ``0.01``."""
    try:
        return check_fraction("", float(text))
    except (ValueError, SettingsError):
        raise argparse.ArgumentTypeError(f"{text!r} is not a fraction from 0 to 1") from None


# Options that mean the same in every flow that has the parameter; a command passes its
# own Option for a parameter whose flag or wording differs.
COMMON: dict[str, Option] = {
    "preset": Option(
        "--preset",
        "seed: the notebook's setup, fixed; default: best 784-10-10; wide: best accuracy",
        choices=tuple(PRESETS),
    ),
    "mirror": Option(
        "--mirror",
        f"an MNIST mirror to use instead of the public ones: http(s)://…/, file:///…/ or a "
        f"directory; repeat to try several in order (env {ENV_MIRROR})",
        metavar="URL",
        repeat=True,
    ),
    "checksums_file": Option(
        "--checksums",
        f"sha256sum-style file of the IDX files' SHA-256, replacing MNIST's own (for other "
        f"data; env {ENV_CHECKSUMS})",
        metavar="FILE",
    ),
    "artifacts": Option(
        "--artifacts", f"output root (env {ENV_ARTIFACTS}, default ./artifacts)", metavar="DIR"
    ),
    "force": Option("--force", "ignore caches and recompute"),
    "labeled": Option(
        "--labeled",
        "your labeled digits, learned from beside MNIST: a CSV or Parquet file, a glob, or a "
        f"store URL or glob (s3://bucket/labeled/*.csv); repeat for several (env {ENV_LABELED})",
        metavar="PATH|GLOB|URL",
        repeat=True,
    ),
    "max_reject_fraction": Option(
        "--max-reject-fraction",
        "refuse a labeled file, and fail the run, when more than F of its rows are rejected "
        "(default 0.01)",
        metavar="F",
        type=fraction,
    ),
    "labeled_holdout": Option(
        "--labeled-holdout",
        "share of each labeled file's rows held out, by a hash of the row, to measure the "
        "model on your data (default 0.1)",
        metavar="F",
        type=fraction,
    ),
    "epochs": Option("--epochs", "passes over the training split"),
    "batch_size": Option(
        "--batch-size", "mini-batch size, or full", metavar="N|full", type=batch_size
    ),
    "promote_tolerance": Option(
        "--promote-tolerance",
        "promote if test accuracy >= champion's minus T (default 0)",
        metavar="T",
    ),
    "dask_address": Option(
        "--dask-address",
        f"run the tasks on this existing Dask cluster (env {ENV_DASK_ADDRESS}); its workers "
        "need the same artifacts path and PREFECT_API_URL",
        metavar="tcp://HOST:8786",
    ),
    "dask_local": Option(
        "--dask-local",
        "run the tasks on a local Dask cluster of N worker processes, started for the run",
        metavar="N",
        type=positive,
    ),
}

# Parameters that only one of them may be given for; True: one of them is required.
EXCLUSIVE: tuple[tuple[tuple[str, ...], bool], ...] = (
    (("output", "output_dir"), True),
    (("dask_address", "dask_local"), False),
)


def add_flow_options(
    parser: argparse.ArgumentParser,
    flow: Any,
    options: Mapping[str, Option],
) -> None:
    """Add one argument per parameter of ``flow`` (a Prefect flow), in signature order,
    and ``flow`` itself as the parsed arguments' ``flow``: the flow the command runs.

    Each takes its Option from ``options``, else from ``COMMON``.
    """
    parser.set_defaults(flow=flow)
    hints = typing.get_type_hints(flow.fn)
    groups: dict[tuple[str, ...], Any] = {}
    signature = inspect.signature(flow.fn).parameters
    for name in signature:
        members, required = next(((m, r) for m, r in EXCLUSIVE if name in m), ((name,), False))
        if members in groups:
            continue  # added with the group's first member
        target: Any = parser
        if len(members) > 1:  # its members in EXCLUSIVE's order: "one of --output --output-dir"
            target = groups[members] = parser.add_mutually_exclusive_group(required=required)
        for member in members:
            option = options.get(member) or COMMON.get(member)
            if option is None:
                raise TypeError(f"{flow.name}: parameter {member!r} has no command-line Option")
            _add(target, member, signature[member].default, hints[member], option)


def _add(target: Any, name: str, default: Any, hint: Any, option: Option) -> None:
    if hint is bool:
        target.add_argument(
            option.flag, action="store_true", dest=name, default=default, help=option.help
        )
        return
    kwargs: dict[str, Any] = {"help": option.help, "metavar": option.metavar}
    if option.choices is not None:
        kwargs["choices"] = option.choices
    if option.flag is None:
        target.add_argument(name, nargs="+", type=option.type or str, **kwargs)
        return
    kwargs["dest"], kwargs["default"] = name, default
    scalar, many = _scalar(hint)
    kwargs["type"] = option.type or scalar
    if option.repeat:
        kwargs["action"] = "append"
    elif many:
        kwargs["nargs"] = "+"
    target.add_argument(option.flag, **kwargs)


def _scalar(hint: Any) -> tuple[Any, bool]:
    """The type of one value of an annotation, and whether it is a list:
    ``int | None`` -> (int, False), ``list[float] | None`` -> (float, True)."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        kinds = [a for a in typing.get_args(hint) if a is not type(None)]
        hint = kinds[-1] if len(kinds) > 1 else kinds[0]  # str | list[str]: the list
    if typing.get_origin(hint) is list:
        (item,) = typing.get_args(hint)
        return (item if item in (int, float, str) else None), True
    return (hint if hint in (int, float, str) else None), False


def flow_arguments(args: argparse.Namespace, flow: Any) -> dict[str, Any]:
    """The flow's parameters as the command line gave them (by name, from ``args``)."""
    names = inspect.signature(flow.fn).parameters
    return {name: getattr(args, name) for name in names if hasattr(args, name)}
