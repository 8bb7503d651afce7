"""Remake the Prefect UI screenshots in docs/img/ (not part of `make test`).

    apt-get install -y chromium        # Debian's; once
    .venv/bin/python docs/make_ui_screenshots.py

It starts `mnist-pipeline stack` on a free loopback port with a temporary Prefect home and
artifacts root, trains (real MNIST from ../shared/mnist when it is there, else synthetic
digits), scores two CSV files (one with malformed rows), then has headless Chromium take
a screenshot of each artifact page (the training report, the scoring summary and the
rejects), saved with a 256-colour palette to keep each file small.
tests/test_ui_e2e.py checks the same things through the API, in `make test`.
"""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support import free_port, wait_healthy, write_mirror  # noqa: E402

MNIST = REPO.parent / "shared" / "mnist"
OUT = REPO / "docs" / "img"
# Artifact key -> (file, window size): the report is long (its plots come last); the
# summary is wide (narrower, the UI scrolls it sideways, hiding digits and accuracy).
SHOTS = {
    "mnist-training-report": ("ui-training-report.png", "1400,3700"),
    "mnist-scoring-summary": ("ui-scoring-summary.png", "2800,460"),
    "mnist-scoring-rejects": ("ui-scoring-rejects.png", "1400,620"),
}
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--hide-scrollbars", "--virtual-time-budget=20000",
]  # fmt: skip


def digits_csv(path: Path, images: np.ndarray, labels: np.ndarray, extra: list[str]) -> None:
    with open(path, "w") as f:
        f.write("label," + ",".join(f"pixel{k}" for k in range(784)) + "\n")
        for label, row in zip(labels, images.reshape(len(labels), 784), strict=True):
            f.write(f"{label}," + ",".join(map(str, row)) + "\n")
        f.writelines(line + "\n" for line in extra)


def digit_images(n: int) -> tuple[np.ndarray, np.ndarray]:
    if (MNIST / "t10k-images-idx3-ubyte.gz").exists():
        images = np.frombuffer(gzip.open(MNIST / "t10k-images-idx3-ubyte.gz").read()[16:], np.uint8)
        labels = np.frombuffer(gzip.open(MNIST / "t10k-labels-idx1-ubyte.gz").read()[8:], np.uint8)
        return images.reshape(-1, 784)[:n], labels[:n]
    from tests.support import synthetic_digits

    images, labels = synthetic_digits(n, seed=0)
    return images.reshape(n, 784), labels


def cli(*args: str, env: dict[str, str]) -> None:
    done = subprocess.run([sys.executable, "-m", "cli.main", *args], cwd=REPO, env=env)
    if done.returncode not in (0, 3):
        raise SystemExit(f"mnist-pipeline {args[0]} exited {done.returncode}")


def shrink(png: Path) -> None:
    """Rewrite a screenshot with a 256-colour palette, without dithering (the UI is flat
    colour and the plots few colours; dithering would blur the text): a third of the size."""
    from PIL import Image

    with Image.open(png) as shot:
        small = shot.convert("RGB").quantize(256, dither=Image.Dither.NONE)
    small.save(png, optimize=True)


def artifact_ids(api: str) -> dict[str, str]:
    request = urllib.request.Request(
        f"{api}/artifacts/filter", data=b"{}", headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request) as answer:
        return {a["key"]: a["id"] for a in json.load(answer) if a.get("key")}


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="ui-shots-") as tmp_name:
        tmp = Path(tmp_name)
        env = {
            **os.environ,
            "PREFECT_HOME": str(tmp / "prefect-home"),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "DO_NOT_TRACK": "1",
        }
        env.pop("PREFECT_API_URL", None)
        port = free_port()
        artifacts = tmp / "artifacts"
        stack = subprocess.Popen(
            [sys.executable, "-m", "cli.main", "stack", "--port", str(port),
             "--artifacts", str(artifacts)],
            cwd=REPO, env=env, start_new_session=True,
        )  # fmt: skip
        api = f"http://127.0.0.1:{port}/api"
        try:
            wait_healthy(f"{api}/health", timeout=180, proc=stack)
            run_env = {**env, "PREFECT_API_URL": api}
            if (MNIST / "train-images-idx3-ubyte.gz").exists():
                cli("train", "--mirror", str(MNIST), "--epochs", "5", "--artifacts",
                    str(artifacts), env=run_env)  # fmt: skip
            else:
                checksums = write_mirror(tmp / "mirror")
                cli("train", "--mirror", str(tmp / "mirror"), "--checksums", str(checksums),
                    "--epochs", "5", "--artifacts", str(artifacts), env=run_env)  # fmt: skip
            images, labels = digit_images(300)
            digits_csv(tmp / "digits.csv", images[:200], labels[:200], [])
            bad = ["3," + ",".join(["0"] * 783) + ",300", "7,1,2", ""]
            digits_csv(tmp / "bad_rows.csv", images[200:], labels[200:], bad)
            cli("score", str(tmp / "digits.csv"), str(tmp / "bad_rows.csv"),
                "--output-dir", str(tmp / "scored"), "--artifacts", str(artifacts),
                env=run_env)  # fmt: skip
            ids = artifact_ids(api)
            with urllib.request.urlopen(f"{api}/artifacts/{ids['mnist-training-report']}") as r:
                size = len(json.load(r)["data"].encode())
            print(f"training report artifact: {size / 1e3:.0f} kB")  # noqa: T201
            for key, (name, size) in SHOTS.items():
                url = f"http://127.0.0.1:{port}/artifacts/artifact/{ids[key]}"
                subprocess.run(
                    ["chromium", *CHROMIUM_FLAGS, f"--window-size={size}",
                     f"--user-data-dir={tmp / 'chromium'}",
                     f"--screenshot={OUT / name}", url],
                    check=True, capture_output=True, timeout=180,
                )  # fmt: skip
                shrink(OUT / name)
                print(f"{OUT / name}: {(OUT / name).stat().st_size / 1e3:.0f} kB, {url}")  # noqa: T201
        finally:
            os.killpg(stack.pid, signal.SIGTERM)
            try:
                stack.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(stack.pid, signal.SIGKILL)
            time.sleep(1)


if __name__ == "__main__":
    main()
