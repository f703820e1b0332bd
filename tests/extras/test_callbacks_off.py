"""No convention ties: switching off any callback of configs/train.yaml's registry leaves fit-then-test, resume
after a crash, `--ckpt_path last`, predict and export as they are (the run layer knows a finished run from
Lightning's own checkpoint, and writes last.ckpt itself)."""

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from project.extras.export import main as export
from project.run.cli import RunCLI
from tests.conftest import FAST_TRAINER, FIGURES, run_main

REGISTRY = yaml.safe_load(RunCLI.base_configs[-1].read_text())["callbacks"]
ON = [name for name, entry in REGISTRY.items() if entry]


@pytest.mark.slow
@pytest.mark.parametrize("name", ON)
def test_without_a_callback_a_run_fits_tests_resumes_knows_it_is_finished_predicts_exports(name, mnist_dir, tmp_path):
    logs = tmp_path / "logs"
    args = ["--data.data_dir", str(mnist_dir), "--default_root_dir", str(logs), *FAST_TRAINER, *FIGURES,
            "--max_epochs", "2", f"--callbacks.{name}", "null"]  # fmt: skip
    crash = ["--trainer.callbacks+=tests.slow_stages.FailAt", "--trainer.callbacks.step", "4"]  # in epoch 2 of 2
    crashed = run_main(*args, *crash)
    assert crashed.returncode == 2 and "crashed after step 4" in crashed.stderr
    run = logs / "mnist_cnn" / "version_0"
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 3  # epoch 1's end

    resumed = run_main(*args, "--ckpt_path", "last")  # goes on in the same folder, to the planned end, then tests
    assert resumed.returncode == 0, resumed.stderr
    assert f"run folder: {run}" in resumed.stderr and "test/acc" in resumed.stdout
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 6
    assert sorted(p.name for p in run.parent.iterdir()) == ["version_0"]

    before = {p: p.stat().st_mtime_ns for p in run.rglob("*")}
    again = run_main(*args, "--ckpt_path", "last")  # finished: a new run beside it, the old one untouched
    assert again.returncode == 0, again.stderr
    assert f"the newest, {run}, is finished" in again.stderr and "version_1" in again.stderr
    assert {p: p.stat().st_mtime_ns for p in run.rglob("*")} == before

    photo = tmp_path / "seven.png"  # predict on a photo of one's own, with the same callback off
    Image.fromarray(np.eye(28, dtype=np.uint8) * 255).save(photo)
    ckpt = run / "checkpoints" / "last.ckpt"
    predicted = run_main("predict", "--ckpt_path", str(ckpt), "--data.predict_path", str(photo), f"--callbacks.{name}",
                         "null")  # fmt: skip
    assert predicted.returncode == 0, predicted.stderr
    table = run / "predictions.csv"  # the prediction table's file: where it is off, nothing else writes one
    assert table.is_file() == (name != "prediction_table")
    assert not table.is_file() or table.read_text().splitlines()[1].startswith(f"{photo},")
    assert export([str(ckpt), "--out", str(tmp_path / "export")]) == 0
    assert {p.name for p in (tmp_path / "export").iterdir()} >= {"model.pt2", "model.onnx"}
