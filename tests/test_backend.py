"""The CLI drops flow-run heartbeats only where nothing could read them."""

from __future__ import annotations

import pytest
from prefect.settings import PREFECT_API_URL, get_current_settings, temporary_settings

from flows.backend import HEARTBEAT_VARIABLES, in_process_backend


def _heartbeat_inside() -> int | None:
    with in_process_backend():
        return get_current_settings().flows.heartbeat_frequency


@pytest.fixture
def no_heartbeat_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in HEARTBEAT_VARIABLES:
        monkeypatch.delenv(variable, raising=False)


def test_embedded_server_runs_flows_without_heartbeats(no_heartbeat_env: None) -> None:
    with temporary_settings(updates={PREFECT_API_URL: None}):
        default = get_current_settings().flows.heartbeat_frequency
        assert default is not None  # Prefect's own default turns them on
        assert _heartbeat_inside() is None
        assert get_current_settings().flows.heartbeat_frequency == default  # restored


def test_a_real_server_keeps_heartbeats(no_heartbeat_env: None) -> None:
    with temporary_settings(updates={PREFECT_API_URL: "http://127.0.0.1:9/api"}):
        assert _heartbeat_inside() == get_current_settings().flows.heartbeat_frequency
        assert _heartbeat_inside() is not None


def test_a_users_heartbeat_setting_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PREFECT_FLOWS_HEARTBEAT_FREQUENCY", "60")
    with temporary_settings(updates={PREFECT_API_URL: None}):
        assert _heartbeat_inside() is not None


def test_the_heap_is_frozen_once_per_process():
    """Long-lived objects are moved out of the cyclic collector's reach, but only the
    first time: freezing again would pin the garbage of every later flow run."""
    import gc

    from flows import steps

    steps._heap_frozen = False
    try:
        before = gc.get_freeze_count()
        kept = [[] for _ in range(1000)]  # objects alive at the freeze
        steps.freeze_heap_once()
        frozen = gc.get_freeze_count()
        assert frozen >= before + len(kept)
        more = [[] for _ in range(1000)]
        steps.freeze_heap_once()
        assert gc.get_freeze_count() == frozen, "the second call froze nothing"
        assert more
    finally:
        steps._heap_frozen = True
