"""Settings: flags first, then environment variables, then defaults."""

from pathlib import Path

from tasks.settings import DEFAULT_MIRRORS, MNIST_SHA256, Settings


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
    sums.write_text("ab  train-images-idx3-ubyte.gz\ncd *t10k-labels-idx1-ubyte\n")
    settings = Settings.from_env(checksums_file=sums)
    assert settings.checksums == {"train-images-idx3-ubyte": "ab", "t10k-labels-idx1-ubyte": "cd"}
    assert Path(settings.results_dir).name == ".prefect-results"
