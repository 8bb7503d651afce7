"""core.report: the Markdown report shows what was trained and embeds its plots."""

from __future__ import annotations

import base64
import re

import numpy as np

from core import plots
from core.report import PLOT_TITLES, render_report
from model.config import preset

METRICS = {
    "test_accuracy": 0.9, "test_log_loss": 0.3, "validation_accuracy": 0.91,
    "train_seconds": 1.2, "n_test": 3,
    "per_class": {"0": {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 3}},
    "most_confused": [],
}  # fmt: skip
DECISION = {"promoted": True, "reason": "first model: no champion yet"}


def test_configuration_lists_the_resolved_config_the_data_and_the_code():
    config = preset("default", batch_size=None, hidden=(32, 16)).to_dict()
    provenance = {
        "preset": "default",
        "config": config,
        "source_sha256": {"train-images-idx3-ubyte": "ab" * 32},
        "code_digest": "cd" * 32,
    }
    report = render_report("v1", METRICS, DECISION, provenance)
    section = report.split("## Configuration", 1)[1].split("## ", 1)[0]
    rows = dict(re.findall(r"^\| ([^|]+?) \| ([^|]+?) \|$", section, re.M))
    assert rows["preset"] == "default"
    assert rows["hidden"] == "32, 16"
    assert rows["batch_size"] == "full"
    assert rows["epochs"] == str(config["epochs"])
    for key in ("learning_rate", "lr_schedule", "momentum", "seed", "validation_fraction"):
        assert key in rows
    assert rows["data train-images-idx3-ubyte"] == "ab" * 6
    assert rows["code digest"] == "cd" * 6


def test_plots_are_embedded_as_png_data_and_the_report_stays_small(tmp_path):
    rng = np.random.default_rng(0)
    plots.confusion_heatmap(rng.integers(0, 50, (10, 10)), tmp_path / "confusion_matrix.png")
    curve = [
        {"epoch": e, "train_loss": 1 / e, "val_loss": 1.1 / e, "train_accuracy": 1 - 1 / (e + 1),
         "val_accuracy": 1 - 1.1 / (e + 1)}
        for e in range(1, 6)
    ]  # fmt: skip
    plots.learning_curve(curve, tmp_path / "learning_curve.png")
    images = rng.random((12, 784))
    plots.misclassified_grid(images, [k % 10 for k in range(12)], [(k + 1) % 10 for k in range(12)],
                             tmp_path / "misclassified.png")  # fmt: skip
    report = render_report("v1", METRICS, DECISION, plots_dir=tmp_path)
    embedded = re.findall(r"!\[([^\]]+)\]\(data:image/png;base64,([A-Za-z0-9+/=]+)\)", report)
    assert [title for title, _ in embedded] == list(PLOT_TITLES.values())
    for _, data in embedded:
        assert base64.b64decode(data)[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(report.encode()) < 1_000_000, "a Prefect artifact must stay well under 1 MB"


def test_without_a_plots_folder_the_report_links_the_files():
    report = render_report("v1", METRICS, DECISION)
    assert "![confusion matrix](confusion_matrix.png)" in report
