"""Settings: flags first, then environment variables, then defaults."""

from pathlib import Path

import pytest

from core.settings import DEFAULT_MIRRORS, MNIST_SHA256, Settings, SettingsError


def test_defaults(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    settings = Settings.from_env()
    assert settings.mirrors == DEFAULT_MIRRORS
    assert settings.artifacts == tmp_path / "artifacts"
    assert settings.checksums == MNIST_SHA256
    assert settings.retry_delays == (0.05, 0.05, 0.05)  # conftest shortens them


def test_environment_and_flags(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MNIST_MIRROR", "http://a/ mirror-dir")
    monkeypatch.setenv("MNIST_ARTIFACTS_DIR", "out")
    env = Settings.from_env()
    assert env.mirrors == ("http://a/", str(tmp_path / "mirror-dir"))
    assert env.artifacts == tmp_path / "out"
    flags = Settings.from_env(artifacts="elsewhere", mirror="file:///m/")
    assert flags.mirrors == ("file:///m/",) and flags.artifacts == tmp_path / "elsewhere"


def test_checksums_file(tmp_path):
    sums = tmp_path / "SHA256SUMS"
    sums.write_text(
        f"{'AB' * 32}  train-images-idx3-ubyte.gz\n\n{'cd' * 32} *t10k-labels-idx1-ubyte\n"
        f"{'01' * 32}  train-labels-idx1-ubyte\n{'23' * 32}  t10k-images-idx3-ubyte.gz\n"
    )
    settings = Settings.from_env(checksums_file=sums)
    assert settings.checksums == {
        "train-images-idx3-ubyte": "ab" * 32,
        "t10k-labels-idx1-ubyte": "cd" * 32,
        "train-labels-idx1-ubyte": "01" * 32,
        "t10k-images-idx3-ubyte": "23" * 32,
    }
    assert Path(settings.results_dir).name == ".prefect-results"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "cannot read it (No such file or directory)"),
        ("", "no checksum for train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-"),
        (f"{'a' * 64}  train-images-idx3-ubyte.gz\n", "no checksum for train-labels-idx1-ubyte"),
        ("abc  train-images-idx3-ubyte.gz\n", "line 1: expected '<64 hex digits>  <file name>'"),
        (f"{'a' * 64}\n", "line 1: expected"),
    ],
)
def test_a_bad_checksums_file_is_named_in_one_line(tmp_path, content, message):
    sums = tmp_path / "SHA256SUMS"
    if content is not None:
        sums.write_text(content)
    with pytest.raises(SettingsError, match="checksums file") as caught:
        Settings.from_env(checksums_file=sums)
    assert str(sums) in str(caught.value) and message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_bad_retry_delays_are_named(monkeypatch):
    monkeypatch.setenv("MNIST_RETRY_DELAYS", "2,soon")
    with pytest.raises(SettingsError, match="MNIST_RETRY_DELAYS='2,soon'"):
        Settings.from_env()


def test_prefect_defaults_leave_the_users_prefect_home_alone():
    # A PREFECT_HOME under the artifacts root hid ~/.prefect/profiles.toml, and with it
    # `prefect config set PREFECT_API_URL=...` and `prefect cloud login`.
    from core.settings import prefect_env_defaults

    defaults = prefect_env_defaults()
    assert "PREFECT_HOME" not in defaults and "PREFECT_API_URL" not in defaults
    assert defaults["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false"


def test_run_time_limits(monkeypatch):
    from core.settings import scoring_timeout, training_timeout

    monkeypatch.delenv("MNIST_TRAINING_TIMEOUT", raising=False)
    monkeypatch.delenv("MNIST_SCORING_TIMEOUT", raising=False)
    assert (training_timeout(), scoring_timeout()) == (3600.0, 21600.0)
    monkeypatch.setenv("MNIST_TRAINING_TIMEOUT", "90")
    monkeypatch.setenv("MNIST_SCORING_TIMEOUT", "0")  # no limit
    assert (training_timeout(), scoring_timeout()) == (90.0, None)


@pytest.mark.parametrize("value", ["soon", "-1", "inf", "nan"])
def test_a_bad_time_limit_is_named_in_one_line(monkeypatch, value):
    from core.settings import training_timeout

    monkeypatch.setenv("MNIST_TRAINING_TIMEOUT", value)
    with pytest.raises(SettingsError) as caught:
        training_timeout()
    assert str(caught.value) == (
        f"MNIST_TRAINING_TIMEOUT='{value}': expected seconds (0 for no limit), e.g. 3600"
    )


def test_schedule_timezone_flag_then_environment_then_utc(monkeypatch):
    from core.settings import schedule_timezone

    monkeypatch.delenv("MNIST_TIMEZONE", raising=False)
    assert schedule_timezone() == "UTC"
    monkeypatch.setenv("MNIST_TIMEZONE", "Europe/Paris")
    assert schedule_timezone() == "Europe/Paris"
    assert schedule_timezone("America/New_York") == "America/New_York"
    monkeypatch.setenv("MNIST_TIMEZONE", "Mars/Olympus")
    with pytest.raises(SettingsError, match=r"^unknown timezone 'Mars/Olympus' \(use an IANA"):
        schedule_timezone()


def test_dask_address_from_the_environment(monkeypatch):
    from core.settings import default_dask_address

    monkeypatch.delenv("MNIST_DASK_ADDRESS", raising=False)
    assert default_dask_address() is None
    monkeypatch.setenv("MNIST_DASK_ADDRESS", "tcp://sched:8786")
    assert default_dask_address() == "tcp://sched:8786"
