"""Resume after a crash: `--ckpt_path last` continues the same run, bitwise, and checkpoints are never torn."""

import io
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from project.extras.atomic import AtomicCheckpointIO
from project.extras.random_state import RandomState
from project.run.cli import main
from tests.conftest import NARROW_CNN, REPO, read_events, results, run_cli, run_folder, run_main, scalars_by_step
from tests.idx_files import write_dataset
from tests.image_folders import write_image_folder

# Three short epochs of the default recipe (OneCycle, dropout, shuffling), its CNN narrowed: everything a resume
# must restore.
THREE_EPOCHS = (
    "--max_epochs 3 --data.batch_size 32 --data.val_size 200 --limit_test_batches 2 --log_every_n_steps 1 "
    "--enable_progress_bar false --enable_model_summary false --seed_everything 7"
).split() + NARROW_CNN


def start(*args: str, env: dict | None = None, script: str | None = None) -> subprocess.Popen:
    """train.py (or a script standing in for it) in the background."""
    command = [sys.executable, "-c", script, *args] if script else [sys.executable, str(REPO / "train.py"), *args]
    env = {**os.environ, **(env or {})}
    return subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)


def wait_for(path_found, process: subprocess.Popen, timeout: float = 120) -> Path:
    """Poll until path_found() returns a path; fail if the process ends first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if found := path_found():
            return found
        assert process.poll() is None, f"the run ended (exit {process.returncode}) first: {process.stderr.read()}"
        time.sleep(0.02)
    raise AssertionError("timed out")


@pytest.mark.slow
def test_sigkill_then_resume_equals_an_uninterrupted_run(tmp_path):
    data = write_dataset(tmp_path / "data" / "MNIST" / "raw", train=2200).parents[1]
    common = ["--data.data_dir", str(data), *THREE_EPOCHS]

    whole = run_main(*common, "--default_root_dir", str(tmp_path / "whole"))  # the process is not the point
    assert whole.returncode == 0, whole.stderr

    killed_root = tmp_path / "killed"
    process = start(*common, "--default_root_dir", str(killed_root))
    last = wait_for(lambda: next(killed_root.rglob("last.ckpt"), None), process)  # the first epoch's checkpoint
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert torch.load(last, weights_only=True)["epoch"] < 2, "killed too late to test a resume"

    resumed = run_main(*common, "--default_root_dir", str(killed_root), "--ckpt_path", "last")
    assert resumed.returncode == 0, resumed.stderr

    folder = run_folder(killed_root)  # one run folder: the resume continued in it
    assert folder == last.parents[1]
    weights = torch.load(folder / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    reference = torch.load(run_folder(tmp_path / "whole") / "checkpoints" / "last.ckpt", weights_only=True)
    assert weights.keys() == reference["state_dict"].keys()
    assert all(torch.equal(weights[k], reference["state_dict"][k]) for k in weights), "weights differ"
    ours, theirs = results(killed_root)["metrics"], results(tmp_path / "whole")["metrics"]
    assert ours["test/acc"] == theirs["test/acc"] and ours["test/loss"] == theirs["test/loss"]
    assert results(killed_root)["global_step"] == results(tmp_path / "whole")["global_step"]
    # The same TensorBoard run: the steps continue where the checkpoint left off, with the same values.
    continued = scalars_by_step(folder, "train/loss")
    assert continued == scalars_by_step(run_folder(tmp_path / "whole"), "train/loss")
    assert len(list(folder.glob("events.out.tfevents.*"))) >= 2  # written by both processes


# Stands in for train.py: the second write of last.ckpt stops half-way, as if the process died mid-save.
TORN_SAVE = """
import io, os, sys, time
import torch
real_save, writes = torch.save, []
def save(obj, file, *args, **kwargs):
    if str(getattr(file, "name", "")).endswith("last.ckpt.partial"):
        writes.append(1)
        if len(writes) == 2:
            buffer = io.BytesIO()
            real_save(obj, buffer)
            file.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
            file.flush()
            open(os.environ["MARKER"], "w").close()
            time.sleep(600)
    return real_save(obj, file, *args, **kwargs)
torch.save = save
from project.run.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_kill_during_a_save_leaves_the_previous_last_ckpt(mnist_dir, tmp_path):
    marker = tmp_path / "saving"
    args = ["--data.data_dir", str(mnist_dir), "--default_root_dir", str(tmp_path / "logs"), *THREE_EPOCHS]
    args += ["--limit_train_batches", "3", "--limit_val_batches", "1", "--max_epochs", "2"]
    # A wide fully connected layer: a checkpoint of about 1 MB, which torn in half reads as a zip archive without
    # its end (torch's reader fails otherwise, on the narrow net's 46 kB: a seek before the start of the file).
    args += ["--model.net.hidden", "512"]
    process = start(*args, script=TORN_SAVE, env={"MARKER": str(marker)})
    wait_for(lambda: marker.exists() and marker, process)
    process.send_signal(signal.SIGKILL)
    process.wait()

    checkpoints = next((tmp_path / "logs").rglob("checkpoints"))
    partial = checkpoints / "last.ckpt.partial"
    assert partial.exists(), "the kill did not land in the middle of writing last.ckpt"
    with pytest.raises(RuntimeError, match="zip archive"):  # the torn bytes really are unreadable ...
        torch.load(partial, weights_only=True)
    last = torch.load(checkpoints / "last.ckpt", weights_only=True)  # ... and last.ckpt is the epoch before
    assert (last["epoch"], last["global_step"]) == (0, 3)

    resumed = run_main(*args, "--ckpt_path", "last")
    assert resumed.returncode == 0, resumed.stderr
    assert results(tmp_path / "logs")["global_step"] == 6
    assert not partial.exists()  # replaced by the resumed run's own complete write

    # A OneCycle schedule is planned for the run's length: resuming into a longer run is refused, and the
    # refused attempt adds nothing to the run folder.
    files = sorted(p for p in (tmp_path / "logs").rglob("*"))
    longer = run_main(*args, "--max_epochs", "3", "--ckpt_path", str(checkpoints / "last.ckpt"))
    assert longer.returncode == 2
    refused = "error: --model.scheduler: the checkpoint's learning-rate schedule was planned for 6"
    assert longer.stderr.splitlines()[-1].startswith(refused)
    assert sorted(p for p in (tmp_path / "logs").rglob("*")) == files


def test_atomic_writer_keeps_the_old_file_when_a_write_fails(tmp_path, monkeypatch):
    target = tmp_path / "last.ckpt"
    writer = AtomicCheckpointIO()
    writer.save_checkpoint({"state_dict": {"w": torch.ones(3)}}, target)

    def fail_half_way(obj, file, *args, **kwargs):
        file.write(b"\x80\x02half a pickle")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", fail_half_way)
    with pytest.raises(OSError, match="disk full"):
        writer.save_checkpoint({"state_dict": {"w": torch.zeros(3)}}, target)
    monkeypatch.undo()
    assert torch.equal(torch.load(target, weights_only=True)["state_dict"]["w"], torch.ones(3))


def test_random_state_round_trips_through_a_weights_only_checkpoint():
    torch.manual_seed(1), np.random.seed(1), random.seed(1)
    buffer = io.BytesIO()
    torch.save(RandomState().state_dict(), buffer)
    expected = (torch.rand(3), np.random.rand(3), random.random())

    torch.manual_seed(2), np.random.seed(2), random.seed(2)  # what a fresh process does
    buffer.seek(0)
    RandomState().load_state_dict(torch.load(buffer, weights_only=True))
    again = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(expected[0], again[0]) and np.array_equal(expected[1], again[1]) and expected[2] == again[2]


@pytest.mark.slow
def test_a_finished_run_trains_longer_from_its_checkpoint_in_its_folder(mnist_dir, tmp_path):
    # A constant schedule, so that the resumed run may be longer than the first (OneCycle may not: tested below).
    # `--ckpt_path last` leaves a finished run alone (a new run starts); its checkpoint's path continues it.
    args = ["--data.data_dir", str(mnist_dir), "--default_root_dir", str(tmp_path / "logs"), *THREE_EPOCHS]
    args += ["--limit_train_batches", "3", "--limit_val_batches", "1", "--model.scheduler", "null"]
    assert run_main(*args, "--max_epochs", "1").returncode == 0
    last = run_folder(tmp_path / "logs") / "checkpoints" / "last.ckpt"
    done = run_main(*args, "--max_epochs", "2", "--ckpt_path", str(last))
    assert done.returncode == 0, done.stderr
    folder = run_folder(tmp_path / "logs")
    summary = results(tmp_path / "logs")
    assert folder.name == "version_0" and summary["global_step"] == 6 and "test/acc" in summary["metrics"]
    assert sorted(scalars_by_step(folder, "train/loss")) == list(range(6))  # one TensorBoard run, steps 0..5


def test_ckpt_path_last_without_a_run_starts_a_new_one(mnist_dir, tmp_path):
    args = ["--data.data_dir", str(mnist_dir), "--default_root_dir", str(tmp_path / "logs"), *THREE_EPOCHS]
    args += ["--limit_train_batches", "2", "--limit_val_batches", "1", "--max_epochs", "1"]
    done = run_main(*args, "--ckpt_path", "last")
    assert done.returncode == 0, done.stderr
    assert "--ckpt_path last: no unfinished run of this recipe (none under " in done.stderr
    assert run_folder(tmp_path / "logs").name == "version_0"


def test_step_checkpoints_add_saves_of_last_ckpt_every_n_steps(mnist_dir, tmp_path, monkeypatch):
    saved = []
    original = AtomicCheckpointIO.save_checkpoint

    def record(self, checkpoint, path, storage_options=None):
        original(self, checkpoint, path, storage_options)
        saved.append((Path(path).name, checkpoint["global_step"]))
        if saved[-1] == ("last.ckpt", 4):  # keep a mid-epoch one (epochs are 5 steps)
            shutil.copy(path, Path(path).with_name("mid.ckpt"))

    monkeypatch.setattr(AtomicCheckpointIO, "save_checkpoint", record)
    args = ["fit", "--data.data_dir", str(mnist_dir), "--default_root_dir", str(tmp_path / "logs"), *THREE_EPOCHS]
    args += ["--limit_train_batches", "5", "--limit_val_batches", "1", "--max_epochs", "2"]
    assert (
        main([*args, "--callbacks.step_checkpoint", "StepCheckpoint", "--callbacks.step_checkpoint.every_n_steps", "2"])
        == 0
    )
    # Steps 2 and 4, the end of epoch 0 (step 5), steps 6, 8 and 10, the end of epoch 1 (step 10 again, after
    # validation: the two callbacks do not know of each other).
    assert [step for name, step in saved if name == "last.ckpt"] == [2, 4, 5, 6, 8, 10, 10]
    assert all(name == "last.ckpt" or name.startswith("epoch=") for name, _ in saved)

    # A mid-epoch checkpoint resumes at its step, in its run folder, and the run ends where it was planned to.
    saved.clear()
    assert main([*args, "--ckpt_path", str(run_folder(tmp_path / "logs") / "checkpoints" / "mid.ckpt")]) == 0
    assert [step for name, step in saved if name == "last.ckpt"] == [5, 10]
    assert results(tmp_path / "logs")["global_step"] == 10


@pytest.mark.parametrize("signal_name", ["SIGUSR1", "SIGTERM"])
def test_a_preemption_signal_saves_the_step_and_exits_with_128_plus_the_signal(mnist_dir, tmp_path, signal_name):
    """The signal a cluster sends before stopping a job: last.ckpt of the run folder holds the step just
    finished, the process exits as the signal's (128 + its number: the run is not finished; 0 only where SLURM
    requeues the job), and --ckpt_path last goes on from that step to the planned end."""
    args = ["--data.data_dir", str(mnist_dir), "--default_root_dir", str(tmp_path / "logs"), *THREE_EPOCHS]
    args += ["--limit_train_batches", "4", "--limit_val_batches", "1", "--max_epochs", "2"]
    signal_at = ["--trainer.callbacks+=tests.slow_stages.SignalAt", "--trainer.callbacks.step", "2",
                 "--trainer.callbacks.signal", signal_name]  # fmt: skip
    previous = signal.getsignal(signal.SIGTERM)
    with pytest.raises(SystemExit) as stopped:
        main([*args, *signal_at])
    assert stopped.value.code == 128 + getattr(signal, signal_name)
    folder = run_folder(tmp_path / "logs")
    saved = torch.load(folder / "checkpoints" / "last.ckpt", weights_only=True)
    assert (saved["epoch"], saved["global_step"]) == (0, 2)  # mid-epoch: right after the signalled step
    assert not (folder / "results.json").exists()  # the run is not over
    assert signal.getsignal(signal.SIGTERM) is not previous  # kept until the process exits (tested under SLURM)
    signal.signal(signal.SIGTERM, previous)
    signal.signal(signal.SIGUSR1, signal.SIG_DFL)

    assert main([*args, "--ckpt_path", "last"]) == 0
    assert run_folder(tmp_path / "logs") == folder
    assert results(tmp_path / "logs")["global_step"] == 8
    assert scalars_by_step(folder, "train/loss").keys() == {0, 2, 3, 4, 5, 6, 7}  # step 1's point: see README


def test_one_run_one_folder_with_a_relative_logs_folder(mnist_dir, tmp_path, monkeypatch, recwarn):
    """As a user types it, in the folder where logs/ is: a run stopped after its first epoch, a newer run of
    another recipe beside it, then `--ckpt_path last`, `test` and `predict` of the run's checkpoint."""
    monkeypatch.chdir(tmp_path)
    common = [*THREE_EPOCHS, "--limit_train_batches", "3", "--limit_val_batches", "2", "--max_epochs", "2"]
    stop_after_epoch = ["--trainer.callbacks+=tests.slow_stages.SignalAt", "--trainer.callbacks.step", "3"]
    previous = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGUSR1)
    with pytest.raises(SystemExit):
        main(["--data.data_dir", str(mnist_dir), *common, *stop_after_epoch])
    signal.signal(signal.SIGTERM, previous[0])
    signal.signal(signal.SIGUSR1, previous[1])
    other = ["--model.net.dropout", "0.5", "--max_epochs", "1"]  # the same net, another recipe, newer
    assert main(["--data.data_dir", str(mnist_dir), *common, *other]) == 0

    assert main(["--data.data_dir", str(mnist_dir), *common, "--ckpt_path", "last"]) == 0
    run = Path("logs/mnist_cnn/version_0")
    summary = json.loads((run / "results.json").read_text())
    assert summary["global_step"] == 6
    assert summary["best_checkpoint"].startswith(str(run / "checkpoints" / "epoch="))  # relative, as started
    assert len(list((run / "checkpoints").glob("epoch=*.ckpt"))) == 1  # one best checkpoint, the stale one gone
    assert not [w for w in recwarn if "dirpath" in str(w.message)]
    # It goes on in its own folder: Lightning's warning that the checkpoint folder is not empty is not for it.
    assert not [w for w in recwarn if "exists and is not empty" in str(w.message)]

    # test and predict of the run's checkpoint: its data options from config.yaml, its folder, no new version.
    checkpoint = str(run / "checkpoints" / "last.ckpt")
    assert main(["test", "--ckpt_path", checkpoint, "--limit_test_batches", "2"]) == 0
    assert main(["predict", "--ckpt_path", checkpoint, "--limit_predict_batches", "1"]) == 0
    assert sorted(p.name for p in run.parent.iterdir()) == ["version_0", "version_1"]
    assert (run / "predictions.csv").exists()
    summary = json.loads((run / "results.json").read_text())
    assert {"val/acc_best", "test/acc"} <= summary["metrics"].keys() and summary["tested_checkpoint"] == checkpoint
    _, experiment = read_events(run)  # the fit's HPARAMS summary, which TensorBoard shows, names test/acc too
    assert {"val/acc_best", "test/acc"} <= {m.name.tag for m in experiment.metric_infos}


@pytest.mark.parametrize("named", ["absolute", "moved, from inside logs/"])
def test_a_resume_under_another_name_of_its_folder_keeps_its_best_checkpoint(mnist_dir, tmp_path, monkeypatch,
                                                                             recwarn, named):  # fmt: skip
    """A run saved as logs/... resumed as /home/me/logs/..., or moved and resumed from another directory: the best
    score and the kept best checkpoint carry on (Lightning keeps them only under the folder's saved name; it took
    the best from the resumed epochs alone and kept a second best file)."""
    monkeypatch.chdir(tmp_path)
    common = [*THREE_EPOCHS, "--limit_train_batches", "3", "--limit_val_batches", "2", "--max_epochs", "3"]
    previous = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGUSR1)
    with pytest.raises(SystemExit):  # stopped in its second epoch: the first epoch's best checkpoint is kept
        main(["--data.data_dir", str(mnist_dir), *common, "--trainer.callbacks+=tests.slow_stages.SignalAt",
              "--trainer.callbacks.step", "4"])  # fmt: skip
    signal.signal(signal.SIGTERM, previous[0])
    signal.signal(signal.SIGUSR1, previous[1])
    last = Path("logs/mnist_cnn/version_0/checkpoints/last.ckpt")
    if named == "absolute":
        last = last.resolve()
    else:
        shutil.move("logs", "moved/logs")
        monkeypatch.chdir("moved/logs")
        last = last.relative_to("logs")
    assert main(["--data.data_dir", str(mnist_dir), *common, "--ckpt_path", str(last)]) == 0

    assert not [w for w in recwarn if "dirpath" in str(w.message)]
    best = list(last.parent.glob("epoch=*.ckpt"))
    assert len(best) == 1  # the stale best deleted (or none better saved): not one per side of the stop
    accuracy = list(scalars_by_step(last.parents[1], "val/acc").values())  # each epoch's, one before the stop
    assert len(accuracy) == 3
    epoch = accuracy.index(max(accuracy))  # the first of equals: a later one must beat it
    assert best[0].name == f"epoch={epoch}-val_acc={accuracy[epoch]:.4f}.ckpt"
    assert Path(json.loads((last.parents[1] / "results.json").read_text())["best_checkpoint"]) == best[0]
    recwarn.clear()
    assert main(["test", "--ckpt_path", str(last), "--limit_test_batches", "1"]) == 0  # a later test of it too
    assert not [w for w in recwarn if "dirpath" in str(w.message)]


def test_saved_checkpoint_paths_move_to_the_folder_only_where_their_files_are(tmp_path):
    """in_its_folder_now: a run's best checkpoints, saved under another name of its folder, are found under the new
    one; where the folder named now does not hold them (a checkpoint folder really elsewhere), the state is left to
    Lightning's own rule (it tested a best checkpoint that was not there)."""
    from types import SimpleNamespace

    from project.run.cli import in_its_folder_now

    now = tmp_path / "run" / "checkpoints"
    now.mkdir(parents=True)
    (now / "epoch=0.ckpt").touch()
    loaded = []
    for saved, expected in (("logs/run/checkpoints", str(now / "epoch=0.ckpt")), ("elsewhere", "elsewhere/x.ckpt")):
        best = f"{saved}/epoch=0.ckpt" if saved.startswith("logs") else "elsewhere/x.ckpt"
        state = {"dirpath": saved, "best_model_path": best, "best_k_models": {best: 0.5}, "best_model_score": 0.5}
        in_its_folder_now(SimpleNamespace(dirpath=str(now)), loaded.append, state)
        assert loaded[-1]["best_model_path"] == expected and list(loaded[-1]["best_k_models"]) == [expected]


def test_a_resume_is_still_warned_of_a_checkpoint_folder_that_is_not_its_own(mnist_dir, tmp_path, recwarn):
    """Lightning's warning that a checkpoint folder is not empty is left out for the resumed run's own folder only:
    a fork's dirpath shared by two runs, holding the other run's best checkpoint, is still named."""
    shared = tmp_path / "shared"
    args = ["--data.data_dir", str(mnist_dir), "--default_root_dir", str(tmp_path / "logs"), *THREE_EPOCHS,
            "--limit_train_batches", "2", "--limit_val_batches", "1", "--max_epochs", "1", "--limit_test_batches", "1",
            "--callbacks.best_checkpoint.dirpath", str(shared)]  # fmt: skip
    previous = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGUSR1)
    with pytest.raises(SystemExit):  # stopped after its first step: last.ckpt in its own folder, nothing in shared/
        main([*args, "--trainer.callbacks+=tests.slow_stages.SignalAt", "--trainer.callbacks.step", "1"])
    signal.signal(signal.SIGTERM, previous[0])
    signal.signal(signal.SIGUSR1, previous[1])
    assert main([*args, "--model.net.dropout", "0.5"]) == 0  # another run: its best checkpoint into shared/
    assert not [w for w in recwarn if "exists and is not empty" in str(w.message)]

    assert main([*args, "--ckpt_path", "last"]) == 0  # the first run goes on
    warned = [str(w.message) for w in recwarn if "exists and is not empty" in str(w.message)]
    assert warned and all(str(shared) in message for message in warned), warned


@pytest.mark.slow
def test_a_signal_to_one_ddp_process_stops_all_at_the_same_step(mnist_dir, tmp_path):
    """Two CPU processes; only rank 1 is signalled: both save and stop after the same step, the launch exits with
    SIGTERM's status (143: unfinished), and the resumed run ends at the planned step count."""
    args = ["--data.data_dir", str(mnist_dir), "--default_root_dir", str(tmp_path / "logs"), *THREE_EPOCHS,
            "--limit_train_batches", "4", "--limit_val_batches", "1", "--max_epochs", "2",
            "--accelerator", "cpu", "--devices", "2", "--strategy", "ddp"]  # fmt: skip
    signal_rank_1 = ["--trainer.callbacks+=tests.slow_stages.SignalAt", "--trainer.callbacks.step", "2",
                     "--trainer.callbacks.rank", "1"]  # fmt: skip
    stopped = run_cli(*args, *signal_rank_1)
    assert stopped.returncode == 143, stopped.stderr
    assert "a signal to another process: saved" in stopped.stderr
    folder = run_folder(tmp_path / "logs")
    assert torch.load(folder / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 2
    resumed = run_cli(*args, "--ckpt_path", "last")
    assert resumed.returncode == 0, resumed.stderr
    assert results(tmp_path / "logs")["global_step"] == 8  # 4 steps an epoch (limit_train_batches), 2 epochs


@pytest.mark.parametrize("validation", [["--check_val_every_n_epoch", "2"], ["--val_check_interval", "0.5"]])
def test_last_ckpt_follows_every_epoch_end_whatever_the_validation_cadence(mnist_dir, tmp_path, validation):
    """An epoch without validation (--check_val_every_n_epoch 2), or with two (--val_check_interval 0.5): last.ckpt
    is the epoch's end all the same (Lightning's own choice saved after validations only: none after epoch 0 with
    the first, and mid-epoch ones with the second). Killed in epoch 1, the run goes on from the end of epoch 0."""
    args = ["--data.data_dir", str(mnist_dir), "--default_root_dir", str(tmp_path / "logs"), "--max_epochs", "3",
            "--limit_train_batches", "4", "--limit_val_batches", "1", "--limit_test_batches", "1", "--data.batch_size",
            "32", "--data.val_size", "100", "--enable_progress_bar", "false", "--model.scheduler", "null",
            *NARROW_CNN, *validation]  # fmt: skip
    kill = ["--trainer.callbacks+=tests.slow_stages.SignalAt", "--trainer.callbacks.step", "7",
            "--trainer.callbacks.signal", "SIGKILL"]  # fmt: skip
    assert run_cli(*args, *kill).returncode == -signal.SIGKILL
    last = torch.load(run_folder(tmp_path / "logs") / "checkpoints" / "last.ckpt", weights_only=True)
    assert (last["epoch"], last["global_step"]) == (0, 4)  # the end of epoch 0
    resumed = run_cli(*args, "--ckpt_path", "last")
    assert resumed.returncode == 0, resumed.stderr
    assert results(tmp_path / "logs")["global_step"] == 12


SLOW = pytest.mark.slow


@pytest.mark.parametrize(
    "data, stop, step, options",
    [
        ("mnist", "ctrl_c", 5, []),
        pytest.param("image_folder", "ctrl_c", 5, [], marks=SLOW),
        pytest.param("mnist", "crash_after_a_step_checkpoint", 5, [], marks=SLOW),
        pytest.param("mnist", "ctrl_c", 23, [], marks=SLOW, id="in the second epoch"),
        pytest.param("mnist", "ctrl_c", 5, ["--config", "configs/schedules/constant.yaml"], marks=SLOW,
                     id="a schedule that asks no step count"),
        pytest.param("mnist", "ctrl_c", 5, ["--data.num_workers", "2"], marks=SLOW, id="worker processes"),
    ],
)  # fmt: skip
def test_a_mid_epoch_stop_then_resume_equals_an_uninterrupted_run(mnist_dir, tmp_path, capsys, recwarn, data, stop,
                                                                  step, options):  # fmt: skip
    """Ctrl-C in the middle of an epoch saves last.ckpt after that step (a step checkpoint saves it every N steps);
    `--ckpt_path last` trains the rest of that epoch's batches in the order they had (the loader's state is in the
    checkpoint): bitwise the weights of the run that never stopped, on MNIST's data module and on a picture folder,
    with Lightning's "not resumable" warning gone and the progress bar of the epoch as it was."""
    source = ["--data.data_dir", str(mnist_dir)]
    if data == "image_folder":
        pictures = write_image_folder(tmp_path / "pics", per_class=150)  # 13 steps an epoch
        source = ["--data", "ImageFolderDataModule", "--data.data_dir", str(pictures)]
    args = [*source, *THREE_EPOCHS, "--max_epochs", "2", "--data.val_size", "40", "--limit_val_batches", "1", *options]
    assert main([*args, "--default_root_dir", str(tmp_path / "whole")]) == 0
    stopped = ["--default_root_dir", str(tmp_path / "stopped")]
    if stop == "ctrl_c":
        with pytest.raises(SystemExit) as stopping:
            main([*args, *stopped, "--trainer.callbacks+=tests.slow_stages.SignalAt", "--trainer.callbacks.step",
                  str(step), "--trainer.callbacks.signal", "SIGINT"])  # fmt: skip
        assert stopping.value.code == 128 + signal.SIGINT
    else:
        assert main([*args, *stopped, "--callbacks.step_checkpoint", "StepCheckpoint",
                     "--callbacks.step_checkpoint.every_n_steps", "5", "--trainer.callbacks+=tests.slow_stages.FailAt",
                     "--trainer.callbacks.step", "7"]) == 2  # fmt: skip
    folder = run_folder(tmp_path / "stopped")
    saved = torch.load(folder / "checkpoints" / "last.ckpt", weights_only=True)
    epoch, done = divmod(step, 18 if data == "mnist" else 13)  # the epoch, and its batches done
    assert (saved["epoch"], saved["global_step"]) == (epoch, step) and done  # in the middle of an epoch
    capsys.readouterr()
    recwarn.clear()
    assert main([*args, *stopped, "--ckpt_path", "last", "--enable_progress_bar", "true"]) == 0
    assert not [w for w in recwarn if "not resumable" in str(w.message)]  # Lightning's warning
    bar = "".join(capsys.readouterr()).replace("\r", "\n")  # the bar goes to stdout
    assert re.search(rf"^Epoch {epoch}: .* {done + 1}/1[38] ", bar, re.M), bar
    assert not re.search(r"\d/\?.*v_num", bar), bar
    weights = torch.load(folder / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    reference = torch.load(run_folder(tmp_path / "whole") / "checkpoints" / "last.ckpt", weights_only=True)
    assert weights.keys() == reference["state_dict"].keys()
    assert all(torch.equal(weights[k], reference["state_dict"][k]) for k in weights), "weights differ"
