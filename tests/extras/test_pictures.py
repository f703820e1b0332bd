"""TensorBoard pictures, read back from the event files with TensorBoard's own reader."""

import io

import pytest
import torch
from PIL import Image

from tests.conftest import FAST_TRAINER, FIGURES, read_events, results, run_folder, run_main


def picture(events: list) -> Image.Image:
    return Image.open(io.BytesIO(events[-1].encoded_image_string))


def test_default_pictures(mnist_dir, tmp_path):
    done = run_main("--data.data_dir", str(mnist_dir), "--default_root_dir", str(tmp_path), *FAST_TRAINER, *FIGURES,
                   "--limit_test_batches", "1.0")  # fmt: skip
    assert done.returncode == 0, done.stderr
    other: dict = {}
    scalars, _ = read_events(run_folder(tmp_path), other)
    images = other["images"]
    # The first training batch, 32 images of 28x28 in a grid of 8 per row (2 px padding): 4 rows.
    grid = picture(images["train/inputs"])
    assert grid.size == (8 * 30 + 2, 4 * 30 + 2)
    assert picture(images["test/confusion_matrix"]).size[0] > 300
    assert picture(images["test/worst_mistakes"]).size[0] > 300 or results(tmp_path)["metrics"]["test/acc"] == 1
    # Per-class accuracy: ten values in 0..1 whose mean, weighted by class counts (20 each here), is test/acc.
    per_class = [scalars[f"test/acc_class/{d} - {w}"][-1] for d, w in enumerate(
        ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"])]  # fmt: skip
    assert all(0 <= a <= 1 for a in per_class)
    assert sum(per_class) / 10 == pytest.approx(results(tmp_path)["metrics"]["test/acc"], abs=1e-6)
    assert len(scalars["lr-AdamW/default"]) == 3  # the learning rate of every step
    assert not other["histograms"] and "train/grad_norm" not in scalars  # optional ones are off by default


def test_optional_pictures_and_switching_off(mnist_dir, tmp_path):
    done = run_main("--data.data_dir", str(mnist_dir), "--default_root_dir", str(tmp_path), *FAST_TRAINER,
                   "--callbacks.histograms", "WeightHistograms", "--callbacks.grad_norm", "GradientNorm",
                   "--callbacks.graph", "ModelGraph", "--callbacks.input_grid", "null",
                   "--callbacks.test_pictures", "null")  # fmt: skip
    assert done.returncode == 0, done.stderr
    other: dict = {}
    scalars, _ = read_events(run_folder(tmp_path), other)
    assert "images" not in other
    assert {"weights/net.features.0.weight", "gradients/net.features.0.weight"} <= other["histograms"]
    assert len(scalars["train/grad_norm"]) == 3 and all(v > 0 for v in scalars["train/grad_norm"])
    assert other["graph"]


def test_the_hparams_summary_adds_no_point_at_step_0(trained):
    """TensorBoard's HPARAMS summary writes its metrics as points too: at the step they were reached, so that
    val/acc_best stays a curve over the epochs (not a dot at step 0 beside it)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    root, _ = trained
    steps = []
    for events in sorted(run_folder(root / "logs").glob("events.out.tfevents.*")):
        accumulator = EventAccumulator(str(events))
        accumulator.Reload()
        if "val/acc_best" in accumulator.Tags()["scalars"]:
            steps += [event.step for event in accumulator.Scalars("val/acc_best")]
    assert steps and 0 not in steps  # the fit of 3 steps validates after its last


def test_the_hparams_tab_shows_test_acc_after_fit_and_test(trained):
    """TensorBoard takes the columns of its HPARAMS tab from the first HPARAMS summary of a run folder (written
    after fit, before any test): it names test/acc too, and the session holds the test's value."""
    root, _ = trained
    scalars, experiment = read_events(run_folder(root / "logs"))
    assert [m.name.tag for m in experiment.metric_infos] == ["val/acc_best", "test/acc"]
    assert scalars["test/acc"] == [pytest.approx(results(root / "logs")["metrics"]["test/acc"])]
    assert {"net/class_path", "optimizer/class_path", "batch_size"} <= {h.name for h in experiment.hparam_infos}


def test_a_test_of_a_checkpoint_draws_its_points_at_the_checkpoints_step(trained, tmp_path):
    """`python train.py test --ckpt_path` into the run folder: test/acc, epoch and the HPARAMS summary at the step
    the checkpoint was taken, not at step 0 (where they would fold the run's curves)."""
    from lightning import Trainer
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    from tests.conftest import copy_of_run

    # project.extras.run_summary.log_at_checkpoint_step sets this private attribute: a Lightning that renames it
    # fails here, by name.
    loop = Trainer(logger=False, enable_checkpointing=False).fit_loop.epoch_loop
    assert isinstance(getattr(loop, "_batches_that_stepped", None), int), "log_at_checkpoint_step: Lightning changed"
    logs, best = copy_of_run(trained, tmp_path)
    run = run_folder(logs)
    before = set(run.glob("events.out.tfevents.*"))
    assert run_main("test", "--ckpt_path", best, "--limit_test_batches", "2").returncode == 0
    (added,) = set(run.glob("events.out.tfevents.*")) - before
    accumulator = EventAccumulator(str(added))
    accumulator.Reload()
    step = torch.load(best, weights_only=True)["loops"]["fit_loop"]["epoch_loop.state_dict"]["_batches_that_stepped"]
    for tag in ("test/acc", "epoch"):
        assert {event.step for event in accumulator.Scalars(tag)} == {step}, tag
    summaries = [
        e for e in EventFileLoader(str(added)).Load() if any(v.tag.startswith("_hparams_/") for v in e.summary.value)
    ]
    assert summaries and {event.step for event in summaries} == {step}
