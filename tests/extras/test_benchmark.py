"""The benchmark runs end to end (on a small synthetic set here; its numbers are measured on 60k, see README)."""

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO
from tests.idx_files import write_dataset


@pytest.mark.slow
def test_benchmark_reports_all_three_approaches(tmp_path):
    data = write_dataset(tmp_path / "data", train=700, test=100)
    report = tmp_path / "report.json"
    done = subprocess.run(
        [sys.executable, "benchmarks/benchmark.py", "--models", "mlp", "--epochs", "2", "--data-dir", str(data),
         "--val-size", "100", "--batch-size", "50", "--target-acc", "0.5", "--json", str(report)],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    rows = json.loads(report.read_text())["rows"]
    assert [row["approach"] for row in rows] == ["lightning", "per_image", "tensors"]
    for row in rows:
        assert len(row["all_epoch_seconds"]) == 2 and row["epoch_seconds"] > 0
        assert row["samples_per_second"] > 0
        assert 0 <= row["final_val_acc"] <= 1
    lightning = rows[0]
    by = {row["approach"]: row["epoch_seconds"] for row in rows}
    assert lightning["speedup_over_per_image"] == round(by["per_image"] / by["lightning"], 2)
    assert "project" in done.stdout and "x faster than the per-image loop" in done.stdout


@pytest.mark.slow
def test_image_folder_benchmark_reports_both_pipelines(tmp_path):
    report = tmp_path / "report.json"
    done = subprocess.run(
        [sys.executable, "benchmarks/image_folder.py", "--train", "300", "--epochs", "2", "--batch-size", "50",
         "--workers", "0", "--json", str(report)],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads(report.read_text())
    assert len(result["template_epoch_seconds"]) == len(result["classic_epoch_seconds"]) == 2
    assert result["template_decode_seconds"] > 0
    later = result["classic_epoch_seconds"][1] / result["template_epoch_seconds"][1]
    assert result["speedup_after_first_epoch"] == round(later, 2)
    assert "decoding 330 images once" in done.stdout and "x faster per epoch" in done.stdout
