"""Flows whose time limit is a setting, read when a run starts and never at import.

Prefect stops a run that outlives its flow's ``timeout_seconds`` (TimedOut, a Failed
state), and reads that attribute as the run starts (``prefect/flow_engine.py``). A
deployment run, from ``serve``, ``stack`` or a work-pool worker, imports its flow from
the entrypoint in a fresh process, so a limit given with ``with_options`` anywhere else
would not reach it. A ``TimedFlow`` asks ``core.settings`` whenever the attribute is
read: the process that runs the flow decides, and importing the flow reads nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prefect import Flow


class TimedFlow(Flow):
    """A flow whose ``timeout_seconds`` is ``limit()`` (seconds, None for no limit)."""

    def __init__(
        self, fn: Callable[..., Any], limit: Callable[[], float | None], **options: Any
    ) -> None:
        self._limit = limit
        super().__init__(fn, **options)

    @property
    def timeout_seconds(self) -> float | None:
        return self._limit()

    @timeout_seconds.setter
    def timeout_seconds(self, value: float | None) -> None:
        """``Flow.__init__`` sets None here (no ``timeout_seconds`` given): ``limit`` decides."""


def timed_flow(limit: Callable[[], float | None], **options: Any) -> Callable[..., TimedFlow]:
    """``@flow(**options)`` whose time limit is ``limit()``, read when a run starts."""
    return lambda fn: TimedFlow(fn, limit, **options)
