"""Faults that users and clusters cause, caused for real (a small tmpfs for a full disk, a read-only remount, real
signals, two runs at once, damaged files), not through mocks. Each asserts: no traceback, the documented exit
status, nothing lost, nothing stray. docs/reliability.md's "Faults" table lists them."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import optuna
import pytest
import torch
import yaml

import tune
from project.extras.export import main as export_main
from project.run import signals
from tests.conftest import (
    FAST_RUN,
    FAST_TRAINER,
    FIGURES,
    REPO,
    copy_of_run,
    read_events,
    results,
    run_cli,
    run_folder,
    run_main,
)
from tests.faults.injectors import fill
from tests.forkserver import forked

QUICK = [*FAST_TRAINER, "--max_epochs", "2"]  # 3 steps an epoch: steps 0-5, checkpoints after steps 3 and 6


def one_error_line(stderr: str) -> str:
    """The error line, asserted to be the last line and the only one, with no traceback anywhere."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert "Traceback" not in stderr and "Exception in thread" not in stderr, stderr
    assert [line for line in lines if line.startswith("error:")] == lines[-1:], lines
    return lines[-1]


def files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_disk_that_fills_mid_run_keeps_the_last_good_checkpoint(mnist_dir, small_disk):
    logs = small_disk / "logs"
    args = ["--data.data_dir", str(mnist_dir), "--default_root_dir", str(logs), *QUICK]
    filled = ["--trainer.callbacks+=tests.faults.injectors.FillDisk", "--trainer.callbacks.step", "4",
              "--trainer.callbacks.folder", str(small_disk)]  # fmt: skip
    done = run_cli(*args, *filled)  # a process of its own: TensorBoard's writer thread fails there too
    assert done.returncode == 2
    line = one_error_line(done.stderr)
    assert "No space left on device" in line and "--ckpt_path last" in line, line
    run = run_folder(logs)
    assert not list(run.rglob("*.partial")) and not list(run.rglob("*.tmp"))  # nothing half-written
    last = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)  # whole, from the epoch before
    assert last["global_step"] == 3
    (small_disk / "filler").unlink()  # space again: the same command goes on from there
    assert run_main(*args, "--ckpt_path", "last").returncode == 0
    assert results(logs)["global_step"] == 6 and run_folder(logs) == run


def test_a_run_folder_removed_mid_run_is_one_line_with_no_note_of_the_writer_thread(mnist_dir, tmp_path):
    """TensorBoard's writer thread meets the missing folder first; it hands its error to the run, so the one line
    is the run's, saying what happened, and the thread adds nothing on top."""
    args = ["--data.data_dir", str(mnist_dir), "--default_root_dir", str(tmp_path / "logs"), *QUICK]
    removal = ["--trainer.callbacks+=tests.faults.injectors.RemoveRunFolder", "--trainer.callbacks.step", "2"]
    done = run_cli(*args, *removal)
    assert done.returncode == 2 and "note:" not in done.stderr, done.stderr
    line = one_error_line(done.stderr)
    assert re.fullmatch(r"error: cannot use \S+/logs/mnist_cnn/version_0/\S+: its folder does not exist \(removed "
                        r"while in use\?\); run again \(with --ckpt_path last.*\)", line), line  # fmt: skip


def test_a_disk_that_fills_in_the_test_after_fit_leaves_no_empty_event_file(mnist_dir, small_disk):
    """The test opens an event file of its own; on a full disk it stays empty (no room for its header) and goes.
    Once there is room, `--ckpt_path last` tests the fitted run."""
    args = ["--data.data_dir", str(mnist_dir), "--default_root_dir", str(small_disk / "logs"), *QUICK, *FIGURES]
    filled = ["--trainer.callbacks+=tests.faults.injectors.FillDiskAtTest", "--trainer.callbacks.folder",
              str(small_disk)]  # fmt: skip
    done = run_cli(*args, *filled)
    assert done.returncode == 2
    assert one_error_line(done.stderr).startswith("error: cannot write: No space left on device; free space")
    run = run_folder(small_disk / "logs")
    assert [p.stat().st_size > 0 for p in run.glob("events.out.*")] == [True]  # the fit's events, not empty
    (small_disk / "filler").unlink()
    again = run_cli(*args, "--ckpt_path", "last")
    assert again.returncode == 0, again.stderr
    assert run_folder(small_disk / "logs") == run and "test/acc" in results(small_disk / "logs")["metrics"]


def test_a_full_disk_at_the_start_leaves_no_run_folder(mnist_dir, small_disk):
    fill(small_disk)
    logs = small_disk / "logs"
    done = run_cli("--data.data_dir", str(mnist_dir), "--default_root_dir", str(logs), *QUICK)
    assert done.returncode == 2
    assert "No space left on device" in one_error_line(done.stderr)
    assert not [p for p in logs.rglob("*") if p.is_file()]  # no run folder that looks like a run
    assert not list(logs.glob("*/version_*"))


def test_a_log_folder_that_turns_read_only_mid_run(mnist_dir, small_disk):
    logs = small_disk / "logs"
    remount = ["--trainer.callbacks+=tests.faults.injectors.RemountReadOnly", "--trainer.callbacks.step", "4",
               "--trainer.callbacks.mount", str(small_disk)]  # fmt: skip
    done = run_cli("--data.data_dir", str(mnist_dir), "--default_root_dir", str(logs), *QUICK, *remount)
    assert done.returncode == 2
    assert "Read-only file system" in one_error_line(done.stderr)
    last = torch.load(run_folder(logs) / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] == 3  # the last good one is kept


def test_test_of_a_checkpoint_whose_run_folder_is_read_only(mnist_dir, small_disk):
    logs = small_disk / "logs"
    assert run_main("--data.data_dir", str(mnist_dir), "--default_root_dir", str(logs), *QUICK).returncode == 0
    before = files(logs)
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    done = run_main("test", "--ckpt_path", results(logs)["best_checkpoint"])
    assert done.returncode == 2
    line = one_error_line(done.stderr)
    assert line.startswith(f"error: cannot write logs to {run_folder(logs)}"), line
    # Not "pass a writable --default_root_dir": a test (or resume) writes into the checkpoint's run, wherever that is.
    assert line.endswith("is not writable; make it writable (a resume or test writes into the run)"), line
    assert files(logs) == before


def test_export_on_a_full_disk_keeps_the_previous_export(trained, small_disk, tmp_path, capsys):
    """The disk has room for the new model.pt2 but not for its model.onnx: the previous pair stays, not a mix."""
    from project.extras.atomic import CHECKSUM, state_dict_checksum

    root, _ = trained
    checkpoint = results(root / "logs")["best_checkpoint"]
    out = small_disk / "export"
    assert export_main([checkpoint, "--out", str(out)]) == 0
    before = files(out)
    other = torch.load(checkpoint, weights_only=True)  # another checkpoint: other weights, so other exports
    other["state_dict"] = {k: v + 1 if v.is_floating_point() else v for k, v in other["state_dict"].items()}
    other[CHECKSUM] = state_dict_checksum(other["state_dict"])
    torch.save(other, tmp_path / "other.ckpt")
    filler = fill(small_disk)
    room = len(before["model.pt2"]) + len(before["model.onnx"]) // 2
    os.truncate(filler, filler.stat().st_size - room)
    capsys.readouterr()
    assert export_main([str(tmp_path / "other.ckpt"), "--out", str(out)]) == 2
    assert "No space left on device" in one_error_line(capsys.readouterr().err)
    assert files(out) == before  # all of the new export or none of it: the previous one as it was


def test_export_expands_home_and_variables_in_its_paths(trained, tmp_path, monkeypatch):
    root, _ = trained
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("WHERE", "exports")
    monkeypatch.chdir(tmp_path)
    assert export_main([results(root / "logs")["best_checkpoint"], "--out=~/$WHERE"]) == 0
    assert (home / "exports" / "model.pt2").is_file() and not (tmp_path / "~").exists()


def test_two_runs_started_into_one_log_folder_each_get_their_own(mnist_dir, tmp_path):
    args = ["--data.data_dir", str(mnist_dir), "--default_root_dir", str(tmp_path / "logs"), *QUICK]
    with ThreadPoolExecutor() as pool:  # two processes at once, as a job array's tasks start
        done = list(pool.map(lambda _: run_cli(*args), range(2)))
    assert [d.returncode for d in done] == [0, 0], [d.stderr for d in done]
    runs = sorted((tmp_path / "logs" / "mnist_cnn").iterdir())
    assert [r.name for r in runs] == ["version_0", "version_1"]
    for run in runs:
        assert (run / "config.yaml").is_file() and (run / "checkpoints" / "last.ckpt").is_file()
        assert (run / "results.json").is_file()


def test_home_and_variables_in_the_log_folder_give_one_run_folder_that_resume_finds(mnist_dir, tmp_path):
    home = tmp_path / "home dir"
    home.mkdir()
    env = {"HOME": str(home), "EXPERIMENT": "früh"}
    # `=` keeps the shell from expanding ~; YAML never does.
    args = [f"--data.data_dir={mnist_dir}", "--default_root_dir=~/runs/$EXPERIMENT", *QUICK]
    first = run_cli(*args, "--max_epochs", "1", env=env)
    assert first.returncode == 0, first.stderr
    run = home / "runs" / "früh" / "mnist_cnn" / "version_0"
    assert (run / "checkpoints" / "last.ckpt").is_file() and (run / "results.json").is_file()
    assert not (tmp_path / "~").exists() and not list(REPO.glob("~*"))
    resumed = run_cli(*args, "--ckpt_path", "last", "--model.scheduler", "null", env=env)
    # Another schedule is another recipe: a new run, not a resume (and not a crash).
    assert resumed.returncode == 0, resumed.stderr
    assert sorted(p.name for p in run.parent.iterdir()) == ["version_0", "version_1"]


@pytest.mark.parametrize("damage", ["model: [unclosed\n", "model: {net: 5}\n", "data: [1]\n", "[1, 2]\n"])
def test_a_damaged_config_yaml_in_one_run_does_not_stop_the_others_resume(mnist_dir, tmp_path, damage):
    """Not YAML, or YAML of another shape: that run is left out with a note."""
    logs = tmp_path / "logs"
    args = ["--data.data_dir", str(mnist_dir), "--default_root_dir", str(logs), *QUICK]
    stop = ["--trainer.callbacks+=tests.slow_stages.SignalAt", "--trainer.callbacks.step", "4",
            "--trainer.callbacks.signal", "SIGTERM"]  # fmt: skip
    assert run_cli(*args, *stop).returncode == 143  # version_0: stopped, saved at step 4
    assert run_main(*args).returncode == 0  # version_1: finished, then its config.yaml damaged
    (logs / "mnist_cnn" / "version_1" / "config.yaml").write_text(damage)
    done = run_main(*args, "--ckpt_path", "last")
    assert done.returncode == 0, done.stderr
    assert "version_1/config.yaml cannot be read; that run is left out" in done.stderr
    assert torch.load(logs / "mnist_cnn" / "version_0" / "checkpoints" / "last.ckpt")["global_step"] == 6


def flip_a_bit(checkpoint: str | Path) -> bytes:
    """One bit of one weight of a checkpoint flipped, inside the archive (it still loads); returns the good bytes."""
    good = Path(checkpoint).read_bytes()
    weight = torch.load(checkpoint, weights_only=True)["state_dict"]["net.classifier.5.weight"]
    data = bytearray(good)
    at = data.find(weight.numpy().tobytes())
    assert at > 0 and zipfile.is_zipfile(checkpoint)
    data[at + 5] ^= 0x10
    Path(checkpoint).write_bytes(bytes(data))
    return good


def test_a_last_ckpt_cut_short_names_the_checkpoints_beside_it_which_go_on(mnist_dir, tmp_path):
    """A job that always passes `--ckpt_path last` would fail on every requeue: the line names the run's other
    checkpoints, and `--ckpt_path` one of them goes on."""
    args = ["--data.data_dir", str(mnist_dir), "--default_root_dir", str(tmp_path / "logs"), *QUICK]
    stop = ["--trainer.callbacks+=tests.slow_stages.SignalAt", "--trainer.callbacks.step", "4",
            "--trainer.callbacks.signal", "SIGTERM"]  # fmt: skip
    assert run_cli(*args, *stop).returncode == 143
    checkpoints = run_folder(tmp_path / "logs") / "checkpoints"
    last, (best,) = checkpoints / "last.ckpt", [p for p in checkpoints.glob("epoch=*.ckpt")]
    last.write_bytes(last.read_bytes()[:5000])  # a copy cut short
    (checkpoints / "copying.ckpt").write_bytes(b"")  # another file that is no checkpoint: not named as a way on
    done = run_main(*args, "--ckpt_path", "last")
    assert done.returncode == 2
    line = one_error_line(done.stderr)
    assert "is not a PyTorch checkpoint, or one cut short or damaged" in line, line
    assert line.endswith(f"whole checkpoints beside it (a way on): {best}"), line
    again = run_main(*args, "--ckpt_path", str(best))
    assert again.returncode == 0, again.stderr
    assert results(tmp_path / "logs")["global_step"] == 6


def test_a_run_stopped_in_its_last_epochs_validation_has_its_metrics_after_the_resume(mnist_dir, tmp_path):
    """A stop signal in the last epoch's last step: the run saves once that epoch's validation is done, and the
    resume has nothing left to train. results.json still holds the training and validation metrics (kept in the
    checkpoint), not only the test's."""
    args = ["--data.data_dir", str(mnist_dir), "--default_root_dir", str(tmp_path / "logs"), *QUICK]
    stop = ["--trainer.callbacks+=tests.slow_stages.SignalAt", "--trainer.callbacks.step", "6",
            "--trainer.callbacks.signal", "SIGTERM"]  # fmt: skip
    assert run_cli(*args, *stop).returncode == 143
    assert run_cli(*args, "--ckpt_path", "last").returncode == 0
    metrics = results(tmp_path / "logs")["metrics"]
    assert {"train/acc", "val/acc", "val/acc_best", "val/loss", "test/acc"} <= set(metrics), metrics


def test_a_checkpoint_with_flipped_bytes_is_named_and_not_used(trained, tmp_path):
    logs, best = copy_of_run(trained, tmp_path)
    summary = (run_folder(logs) / "results.json").read_bytes()
    flip_a_bit(best)
    done = run_main("test", "--ckpt_path", best)
    assert done.returncode == 2
    assert one_error_line(done.stderr) == (
        f"error: checkpoint {best} is damaged: its weights do not match the checksum written with them; use "
        "another checkpoint of the run (checkpoints/) or train again"
    )
    assert (run_folder(logs) / "results.json").read_bytes() == summary  # not overwritten with wrong metrics


def test_ctrl_c_saves_the_step_exits_130_and_the_same_command_goes_on(mnist_dir, tmp_path):
    args = ["--data.data_dir", str(mnist_dir), "--default_root_dir", str(tmp_path / "logs"), *QUICK]
    ctrl_c = ["--trainer.callbacks+=tests.slow_stages.SignalAt", "--trainer.callbacks.step", "4",
              "--trainer.callbacks.signal", "SIGINT"]  # fmt: skip
    stopped = run_cli(*args, *ctrl_c)  # in the second epoch, after the first's validation
    assert stopped.returncode == 130 and "Traceback" not in stopped.stderr, stopped.stderr
    assert "Ctrl-C: saving last.ckpt after this step" in stopped.stderr
    assert "SIGINT: saved" in stopped.stderr
    assert "the same command with --ckpt_path last goes on from it" in stopped.stderr
    run = run_folder(tmp_path / "logs")
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 4
    assert not (run / "results.json").exists()  # not a finished run
    resumed = run_cli(*args, "--ckpt_path", "last")
    assert resumed.returncode == 0, resumed.stderr
    summary = results(tmp_path / "logs")
    assert summary["global_step"] == 6 and run_folder(tmp_path / "logs") == run
    scalars, _ = read_events(run)
    # The best validation accuracy of the whole run, not of the part after the resume.
    assert summary["metrics"]["val/acc_best"] == pytest.approx(max(scalars["val/acc"])) and len(scalars["val/acc"]) == 2


def test_an_unexpected_error_is_one_line_and_debug_shows_it(mnist_dir, tmp_path):
    (tmp_path / "broken_net.py").write_text(
        "from project.models import MLP\n\n"
        "class Broken(MLP):\n"
        "    def forward(self, images):\n"  # in training: the start-up check's forward (eval mode) passes
        "        if self.training:\n"
        "            raise RuntimeError('the net broke')\n"
        "        return super().forward(images)\n"
    )
    args = ["--model.net", "broken_net.Broken", "--data.data_dir", str(mnist_dir), "--default_root_dir",
            str(tmp_path / "logs"), *FAST_RUN]  # fmt: skip
    env = {"PYTHONPATH": str(tmp_path)}
    done = run_cli(*args, env=env)
    assert done.returncode == 2
    assert one_error_line(done.stderr) == (
        "error: RuntimeError: the net broke (not a mistake this template knows; --debug shows the traceback)"
    )
    assert "Traceback" in run_cli(*args, "--debug", env=env).stderr


def test_num_nodes_without_a_launcher_is_one_line_not_a_hang(mnist_dir, tmp_path):
    done = run_main("--num_nodes", "2", "--data.data_dir", str(mnist_dir), "--default_root_dir", str(tmp_path))
    assert done.returncode == 2
    assert one_error_line(done.stderr).startswith("error: --num_nodes 2: nothing starts the other machines")


def test_a_tune_trial_cut_short_is_failed_and_runs_again(mnist_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    common = ["--trials", "2", "--storage", storage, "--out", str(tmp_path / "tune"), "--net", "MLP",
              "--data.data_dir", str(mnist_dir), *QUICK[:-2], "--max_epochs", "1"]  # fmt: skip
    ctrl_c = ["--trainer.callbacks+=tests.slow_stages.SignalAt", "--trainer.callbacks.step", "1",
              "--trainer.callbacks.signal", "SIGINT"]  # fmt: skip
    previous = signal.getsignal(signal.SIGINT)
    assert tune.main([*common, *ctrl_c]) == 130
    signal.signal(signal.SIGINT, previous)
    study = optuna.load_study(study_name="mnist", storage=storage)
    states = [t.state for t in study.trials]
    assert states == [optuna.trial.TrialState.FAIL, optuna.trial.TrialState.WAITING]  # not RUNNING: queued again
    cut_short = study.trials[0].params

    assert tune.main(common) == 0
    study = optuna.load_study(study_name="mnist", storage=storage)
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == 2 and complete[0].params == cut_short  # its values ran again, first
    assert (tmp_path / "tune" / "best.yaml").is_file()


def test_tune_with_a_database_where_nothing_listens(tmp_path, capsys):
    port = 1  # nothing listens there
    assert tune.main(["--storage", f"postgresql://postgres@127.0.0.1:{port}/db", "--out", str(tmp_path / "t")]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert line.startswith("error: --storage postgresql://...: cannot open the study's database (")
    assert not (tmp_path / "t").exists()


def test_tune_with_no_trials_is_one_line_and_creates_nothing(tmp_path, capsys):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    assert tune.main(["--trials", "0", "--storage", storage, "--out", str(tmp_path / "t")]) == 2
    assert one_error_line(capsys.readouterr().err) == "error: --trials must be at least 1, got 0"
    assert not any(tmp_path.iterdir())


def test_tune_expands_home_and_variables_in_its_paths(mnist_dir, tmp_path, monkeypatch, capsys):
    """`--out ~/tuned` (the shell leaves `~` after `=`, and inside quotes), and a SQLite study in `~/$STUDIES`: the
    trials, best.yaml and the study's file go to the home folder, where train.py also looks; no folder named `~`
    or `$STUDIES` appears."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("STUDIES", "studies")
    monkeypatch.chdir(tmp_path)
    args = ["--trials", "1", "--net", "MLP", "--storage", "sqlite:///~/$STUDIES/study.db",
            "--out=~/tuned", "--data.data_dir", str(mnist_dir), *FAST_RUN]  # fmt: skip
    assert tune.main(args) == 0, capsys.readouterr().err
    assert (tmp_path / "home" / "tuned" / "best.yaml").is_file() and not (tmp_path / "~").exists()
    assert (tmp_path / "home" / "studies" / "study.db").is_file() and not list(tmp_path.glob("$*"))


@pytest.mark.parametrize(
    ("options", "line"),
    [
        (["--net", "cnn"], "argument --net: invalid choice: 'cnn' (choose from 'CNN', 'MLP'); `python tune.py --help` "
                           "lists the options"),  # argparse's usage text and its own error line
        (["--prune_after", "-1"], "--prune_after must be 0 or more (epochs), got -1"),  # Optuna's traceback
        (["--max_epochs", "0"], "--max_epochs 0 trains nothing; give 1 or more (to test a checkpoint: python train.py "
                                "test --ckpt_path FILE)"),  # KeyError: 'val/acc_best'
        (["--space", "{low: 0.1, high: 0.01}"], "has low 0.1 and high 0.01; it needs low <= high"),  # "another space"
        (["--space", "{low: 0, high: 0.1, log: true}"], "has low 0 and high 0.1; it needs low above 0 for a log range"),
    ],
)  # fmt: skip
def test_tune_mistakes_in_its_options_are_one_line(mnist_dir, tmp_path, capfd, options, line):
    if options[0] == "--space":
        (tmp_path / "space.yaml").write_text(f"model.optimizer.init_args.lr: {options[1]}\n")
        options = ["--space", str(tmp_path / "space.yaml")]
    args = ["--trials", "1", "--storage", f"sqlite:///{tmp_path / 'study.db'}", "--out", str(tmp_path / "t"),
            "--data.data_dir", str(mnist_dir), *FAST_RUN, *options]  # fmt: skip
    assert tune.main(args) == 2
    error = one_error_line(capfd.readouterr().err)
    assert error == f"error: {line}" or (options[0] == "--space" and error.endswith(line)), error


def test_tune_with_a_space_key_that_is_no_option_and_a_changed_space(mnist_dir, tmp_path, capfd):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    common = ["--storage", storage, "--out", str(tmp_path / "tune"), "--data.data_dir", str(mnist_dir), *QUICK]
    (tmp_path / "typo.yaml").write_text("model.optimizer.init_args.lrr: [0.1, 0.01]\n")
    assert tune.main([*common, "--trials", "3", "--space", str(tmp_path / "typo.yaml")]) == 2
    err = capfd.readouterr().err
    assert "Traceback" not in err and err.count("error:") == 1, err
    assert "lrr" in one_error_line(err)

    (tmp_path / "a.yaml").write_text("model.net.init_args.dropout: [0.0, 0.1]\nmodel.net.init_args.hidden: 16\n")
    (tmp_path / "b.yaml").write_text("model.net.init_args.dropout: {low: 0.0, high: 0.5}\n")
    args = [*common, "--study", "s", "--trials", "1"]
    assert tune.main([*args, "--space", str(tmp_path / "a.yaml")]) == 0
    capfd.readouterr()
    assert tune.main([*args, "--trials", "2", "--space", str(tmp_path / "b.yaml")]) == 2
    line = one_error_line(capfd.readouterr().err)
    assert line.startswith("error: the study 's' was searched over another space (")


def test_a_stop_signal_while_testing_after_fit_keeps_the_fit_and_the_same_command_tests_again(mnist_dir, tmp_path):
    args = ["--data.data_dir", str(mnist_dir), "--default_root_dir", str(tmp_path / "logs"), *QUICK]
    during_test = ["--trainer.callbacks+=tests.faults.injectors.SignalWhileEvaluating"]
    stopped = run_cli(*args, *during_test)
    assert stopped.returncode == 143 and "Traceback" not in stopped.stderr, stopped.stderr
    assert "SIGTERM: stopped testing (last.ckpt kept)" in stopped.stderr
    run = run_folder(tmp_path / "logs")
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 6  # the fit's
    again = run_cli(*args, "--ckpt_path", "last")
    assert again.returncode == 0, again.stderr
    assert "test/acc" in results(tmp_path / "logs")["metrics"] and run_folder(tmp_path / "logs") == run


@pytest.mark.parametrize(("stop", "when"), [("SIGUSR1", "at_exit"), ("SIGTERM", "at_exit"),
                                           ("SIGUSR1", "at_shutdown"), ("SIGHUP", "at_shutdown")])  # fmt: skip
def test_a_stop_signal_after_the_run_is_done_leaves_it_done(mnist_dir, tmp_path, stop, when):
    """A stop signal as train.py exits, its run done (a SLURM time limit that falls there): in an exit handler
    noted and dropped, later (Python has given the signals their default actions back) ignored; exit 0. The
    default action would kill the process (status -10 for SIGUSR1: a SLURM job marked FAILED)."""
    args = ["--data.data_dir", str(mnist_dir), "--default_root_dir", str(tmp_path / "logs"), *QUICK]
    at_exit = ["--trainer.callbacks+=tests.faults.injectors.SignalAfterTheRun", "--trainer.callbacks.signal", stop,
               "--trainer.callbacks.when", when]  # fmt: skip
    # At shutdown: a new interpreter, as a forked one ends without the modules' teardown (tests/forkserver.py).
    done = run_cli(*args, *at_exit, fresh=when == "at_shutdown")
    assert done.returncode == 0 and "Traceback" not in done.stderr, (done.returncode, done.stderr)
    lines = done.stderr.splitlines()
    if when == "at_shutdown":  # sent, not lost with an object never collected
        assert lines.pop() == "signalled at shutdown", lines[-3:]
    assert lines[-1].startswith("run folder: ")
    assert "test/acc" in results(tmp_path / "logs")["metrics"]


def test_a_stop_signal_between_fit_and_its_test_stops_the_test_and_the_same_command_tests_again(mnist_dir, tmp_path):
    """SIGUSR1 after the fit ended, before its test began: noted, and the test stops at its first batch as if the
    signal had come during it (SIGUSR1's default action killed the process there)."""
    args = ["--data", "tests.faults.injectors.SignalBeforeTheTest", "--data.data_dir", str(mnist_dir),
            "--default_root_dir", str(tmp_path / "logs"), *QUICK]  # fmt: skip
    stopped = run_cli(*args)
    assert stopped.returncode == 138 and "Traceback" not in stopped.stderr, (stopped.returncode, stopped.stderr)
    assert "SIGUSR1: stopped testing (last.ckpt kept)" in stopped.stderr
    again = run_cli(*args, "--ckpt_path", "last")
    assert again.returncode == 0, again.stderr
    assert "test/acc" in results(tmp_path / "logs")["metrics"]


def test_a_stop_signal_in_the_first_second_is_acted_on_once_the_run_is_built(mnist_dir, tmp_path):
    """SIGTERM while train.py still loads torch and Lightning: noted, then acted on at the first safe point (the
    first step), not a killed job."""
    import time

    args = ["--data.data_dir", str(mnist_dir), "--default_root_dir", str(tmp_path / "logs"), *QUICK]
    process = subprocess.Popen([sys.executable, str(REPO / "train.py"), *args], cwd=REPO, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    time.sleep(1.0)  # Python is up, the imports are not done
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 143 and "Traceback" not in stderr, stderr
    assert "SIGTERM: saved" in stderr and "at step 1;" in stderr
    resumed = run_cli(*args, "--ckpt_path", "last")
    assert resumed.returncode == 0, resumed.stderr
    assert results(tmp_path / "logs")["global_step"] == 6


def test_ctrl_c_while_testing_stops_after_the_batch_and_the_same_command_tests_again(mnist_dir, tmp_path):
    args = ["--data.data_dir", str(mnist_dir), "--default_root_dir", str(tmp_path / "logs"), *QUICK]
    during_test = ["--trainer.callbacks+=tests.faults.injectors.SignalWhileEvaluating", "--trainer.callbacks.signal",
                   "SIGINT"]  # fmt: skip
    stopped = run_cli(*args, *during_test)
    assert stopped.returncode == 130 and "Traceback" not in stopped.stderr, stopped.stderr
    assert "Ctrl-C: stopping the test after this batch" in stopped.stderr
    assert "SIGINT: stopped testing (last.ckpt kept)" in stopped.stderr
    assert "test/acc" not in results(tmp_path / "logs")["metrics"]  # the fit's results, no half test
    again = run_cli(*args, "--ckpt_path", "last")
    assert again.returncode == 0, again.stderr
    assert "test/acc" in results(tmp_path / "logs")["metrics"]


def test_a_stop_signal_with_preemption_off_is_one_line_and_exit_143(mnist_dir, tmp_path):
    """Without the preemption callback nothing saves on SIGTERM: the run stops where it is (not with exit 0, as
    Lightning's own handler ends it), keeps its epoch-end last.ckpt, and the same command goes on from there."""
    args = ["--data.data_dir", str(mnist_dir), "--default_root_dir", str(tmp_path / "logs"), *QUICK,
            "--callbacks.preemption", "null"]  # fmt: skip
    sigterm = ["--trainer.callbacks+=tests.slow_stages.SignalAt", "--trainer.callbacks.step", "4",
               "--trainer.callbacks.signal", "SIGTERM"]  # fmt: skip
    stopped = run_cli(*args, *sigterm)
    assert stopped.returncode == 143 and "Traceback" not in stopped.stderr, stopped.stderr
    assert "SIGTERM: stopped, nothing saved on it (--callbacks.preemption is off)" in stopped.stderr.splitlines()[-1]
    run = run_folder(tmp_path / "logs")
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 3  # the epoch end's
    resumed = run_cli(*args, "--ckpt_path", "last")
    assert resumed.returncode == 0, resumed.stderr
    assert results(tmp_path / "logs")["global_step"] == 6 and run_folder(tmp_path / "logs") == run


def default_ctrl_c() -> None:
    """In the child: Ctrl-C raises KeyboardInterrupt, also where the tests were started with SIGINT ignored."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize("stop", ["SIGINT", "SIGTERM"])
def test_a_stop_while_train_py_loads_is_one_line_and_leaves_nothing(mnist_dir, tmp_path, stop):
    """Ctrl-C while torch and Lightning load: one line, ended by SIGINT as a shell expects (130 there); SIGTERM
    then with preemption off: noted, then the run stops before it starts, 143. Neither leaves a run folder."""
    import time

    logs = tmp_path / "logs"
    args = ["--data.data_dir", str(mnist_dir), "--default_root_dir", str(logs), *QUICK, "--callbacks.preemption",
            "null"]  # fmt: skip
    process = subprocess.Popen([sys.executable, str(REPO / "train.py"), *args], cwd=REPO, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=default_ctrl_c)  # fmt: skip
    time.sleep(1.0)  # Python is up, the imports are not done
    process.send_signal(getattr(signal, stop))
    _, stderr = process.communicate(timeout=300)
    assert "Traceback" not in stderr, stderr
    last = stderr.strip().splitlines()[-1]
    if stop == "SIGINT":
        assert process.returncode == -signal.SIGINT and last == "interrupted (Ctrl-C)", stderr
    else:
        assert process.returncode == 143 and last.startswith("SIGTERM: stopped, nothing saved"), stderr
    assert not logs.exists() or not list(logs.iterdir())


def test_a_ctrl_c_while_the_libraries_load_is_held_until_they_are_loaded_and_a_second_acts_at_once():
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # Python's own, as train.py starts with
    done = []
    with pytest.raises(KeyboardInterrupt), signals.ctrl_c_held():
        signal.raise_signal(signal.SIGINT)
        done.append("the imports went on")
    with pytest.raises(KeyboardInterrupt), signals.ctrl_c_held():
        signal.raise_signal(signal.SIGINT)
        signal.raise_signal(signal.SIGINT)  # pressed again: the user insists
        done.append("not reached")
    assert done == ["the imports went on"] and signal.getsignal(signal.SIGINT) is signal.default_int_handler
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a background job's: left as it is
    with signals.ctrl_c_held():
        signal.raise_signal(signal.SIGINT)
    signal.signal(signal.SIGINT, previous)


def test_an_error_in_a_background_thread_is_one_line():
    """Any thread of an entry point: one line; none for TensorBoard's writer thread, which hands its error to the
    run, where it gets its line (the tmpfs tests and the removed run folder above)."""
    code = """import errno, threading
import project.run.signals
def fail(error): raise error
for error in (ZeroDivisionError("division by zero"), OSError(errno.ENOSPC, "No space left on device")):
    thread = threading.Thread(target=fail, args=(error,), name="worker")
    thread.start()
    thread.join()
"""
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stderr == (
        "note: worker stopped: ZeroDivisionError: division by zero\n"
        "note: worker stopped: OSError: [Errno 28] No space left on device\n"
    ), done.stderr


def test_ctrl_c_before_the_first_step_then_ckpt_path_last_starts_a_new_run_not_an_old_finished_one(mnist_dir, tmp_path):
    logs = tmp_path / "logs"
    args = ["--data.data_dir", str(mnist_dir), "--default_root_dir", str(logs), *QUICK]
    assert run_main(*args).returncode == 0  # an earlier, finished run of the recipe
    finished = files(logs)
    interrupt = ["--trainer.callbacks+=tests.faults.injectors.SignalBeforeTraining"]
    stopped = run_cli(*args, *interrupt)
    assert stopped.returncode == 130 and "Traceback" not in stopped.stderr, stopped.stderr
    last_line = stopped.stderr.strip().splitlines()[-1]
    assert "interrupted before the first training step: nothing was trained" in last_line, stopped.stderr
    assert files(logs) == finished  # the stopped run left nothing
    for epochs in ("2", "3"):  # the same command, and one with another length (no schedule error about the old run)
        again = run_main(*args, "--max_epochs", epochs, "--ckpt_path", "last")
        assert again.returncode == 0, again.stderr
        said = "--ckpt_path last: no unfinished run of this recipe (the newest, "
        assert said in again.stderr and ", is finished): a new run" in again.stderr
    runs = sorted(p.name for p in (logs / "mnist_cnn").iterdir())
    assert runs == ["version_0", "version_1", "version_2"]
    assert {k: v for k, v in files(logs).items() if k.startswith("mnist_cnn/version_0/")} == finished


@pytest.mark.parametrize(("stage", "stop"), [("predict", "SIGINT"), ("validate", "SIGTERM"), ("test", "SIGTERM")])
def test_a_stop_while_predicting_or_evaluating_a_checkpoint_ends_after_the_batch_and_writes_nothing(
    trained, tmp_path, stage, stop
):
    logs, best = copy_of_run(trained, tmp_path)
    before = files(logs)
    inject = ["--trainer.callbacks+=tests.faults.injectors.SignalWhileEvaluating", "--trainer.callbacks.signal", stop]
    done = run_cli(stage, "--ckpt_path", best, "--enable_progress_bar", "false", *inject)
    assert done.returncode == 128 + getattr(signal, stop) and "Traceback" not in done.stderr, done.stderr
    verb = {"predict": "predicting", "validate": "validating", "test": "testing"}[stage]
    said = f"{stop}: stopped {verb}, nothing of it written; run the same command again"
    assert done.stderr.strip().splitlines()[-1] == said, done.stderr
    assert files(logs) == before  # no predictions.csv, no results, no event file: nothing of the stopped stage


def lr_find(*args: str) -> subprocess.CompletedProcess:
    """`python -m project.extras.lr_find ARGS` as a process of its own (forked: tests/forkserver.py)."""
    return forked(["-m", "project.extras.lr_find", *args, "--enable_progress_bar", "false"], REPO, dict(os.environ))


@pytest.mark.parametrize("stop", ["SIGINT", "SIGTERM", "SIGHUP"])
def test_a_stop_during_lr_find_is_one_line_and_keeps_nothing(mnist_dir, tmp_path, stop):
    logs = tmp_path / "logs"
    data = ["--data", "tests.faults.injectors.FaultInTraining", "--data.signal", stop, "--data.data_dir",
            str(mnist_dir), "--data.batch_size", "32", "--data.val_size", "100"]  # fmt: skip
    done = lr_find(*data, "--default_root_dir", str(logs), "--num_training", "50")
    assert done.returncode == 128 + getattr(signal, stop) and "Traceback" not in done.stderr, done.stderr
    said = "interrupted (Ctrl-C):" if stop == "SIGINT" else f"{stop}: stopped,"
    assert done.stderr.strip().splitlines()[-1] == f"{said} no rate suggested, nothing kept"
    assert "suggested learning rate" not in done.stdout
    assert not [p for p in logs.rglob("*") if p.is_file()] and not list(logs.glob("*/version_*"))


def test_an_lr_find_range_cut_short_by_the_data_is_one_line_and_keeps_nothing(mnist_dir, tmp_path):
    """A range test over fewer steps than --num_training (the epochs ran out) would suggest a rate from the low end
    of the range only: one line saying how to give it its steps, no suggestion, no run folder."""
    logs = tmp_path / "logs"
    args = ["--data.data_dir", str(mnist_dir), "--data.val_size", "100", "--default_root_dir", str(logs)]
    done = lr_find(*args, "--max_epochs", "1", "--limit_train_batches", "3")
    assert done.returncode == 2 and "suggested learning rate" not in done.stdout
    assert one_error_line(done.stderr) == (
        "error: the range test ran 3 of its 100 steps: the training data ends there (--max_epochs 1); give "
        "--max_epochs 34 or more"
    )
    assert not any(logs.iterdir())
    enough = lr_find(*args, "--max_epochs", "5", "--limit_train_batches", "3", "--num_training", "15")
    assert enough.returncode == 0, enough.stderr


@pytest.mark.parametrize(
    ("options", "line"),
    [
        (["--model.optimizer.lr", "0"], "--model.optimizer.lr must be above 0, got 0.0"),  # was a generic line
        (["--num_training=5"], "--num_training takes a number of steps, 13 or more (default 100): a suggestion "
                               "leaves out the first 10 and needs 3 more"),  # was exit 0, "the loss never fell"
        (["--max_epochs", "0"], "--max_epochs 0 trains nothing; give 1 or more (to test a checkpoint: python train.py "
                                "test --ckpt_path FILE)"),
        (["test"], "lr_find takes no subcommand ('test'): it runs a range test of the fit that the same options "
                   "would run; leave it out"),
    ],
)  # fmt: skip
def test_lr_find_mistakes_are_one_line_and_keep_nothing(mnist_dir, tmp_path, options, line):
    logs = tmp_path / "logs"
    args = ["--data.data_dir", str(mnist_dir), "--data.val_size", "100", "--default_root_dir", str(logs)]
    done = lr_find(*options, *args, "--max_epochs", "3") if options[0] == "test" else lr_find(*args, *options)
    assert done.returncode == 2 and "suggested learning rate" not in done.stdout, done.stderr
    assert one_error_line(done.stderr) == f"error: {line}"
    assert not logs.exists() or not any(logs.iterdir())


def test_a_log_folder_that_turns_read_only_during_lr_find_is_one_line(mnist_dir, small_disk):
    logs = small_disk / "logs"
    data = ["--data", "tests.faults.injectors.FaultInTraining", "--data.remount", str(small_disk), "--data.at_batch",
            "3", "--data.data_dir", str(mnist_dir), "--data.batch_size", "32", "--data.val_size", "100"]  # fmt: skip
    done = lr_find(*data, "--default_root_dir", str(logs), "--num_training", "20")
    assert done.returncode == 2
    line = one_error_line(done.stderr)
    assert "Read-only file system" in line and "--ckpt_path" not in line, line


def test_a_run_folder_renamed_to_a_name_of_its_own_is_continued_in_place(mnist_dir, tmp_path):
    """A stopped run's folder moved and renamed (`mv logs/mnist_cnn/version_0 kept/first_try`), then resumed by its
    checkpoint's path: it goes on in first_try/. It went on in a new logs/mnist_cnn/version_0, the run split in two."""
    logs = tmp_path / "logs"
    args = ["--data.data_dir", str(mnist_dir), "--default_root_dir", str(logs), *QUICK]
    stop = ["--trainer.callbacks+=tests.slow_stages.SignalAt", "--trainer.callbacks.step", "4",
            "--trainer.callbacks.signal", "SIGTERM"]  # fmt: skip
    assert run_cli(*args, *stop).returncode == 143
    (tmp_path / "kept").mkdir()
    run = run_folder(logs).rename(tmp_path / "kept" / "first_try")
    # A relative path, from the folder that holds the run (its parent is then '.'; it failed with an IndexError).
    resumed = run_main(*args, "--ckpt_path", "first_try/checkpoints/last.ckpt", cwd=tmp_path / "kept")
    assert resumed.returncode == 0, resumed.stderr
    assert not logs.exists() or not list(logs.rglob("*.*")), sorted(logs.rglob("*"))  # nothing new under logs/
    summary = json.loads((run / "results.json").read_text())
    assert summary["global_step"] == 6 and "test/acc" in summary["metrics"]
    assert len(list(run.glob("events.out.tfevents.*"))) >= 2  # the first start's and the resume's, one run


def test_a_moved_run_folder_is_tested_again_and_a_failed_attempt_keeps_its_earlier_files(mnist_dir, tmp_path):
    """A run stopped in its test after fit, its folder moved, then `--ckpt_path last` from the new place: the best
    checkpoint is found where the folder now is. An attempt that fails (a damaged best checkpoint) removes only
    what it made itself, not the run's results.json or config.yaml."""
    stop = ["--trainer.callbacks+=tests.faults.injectors.SignalWhileEvaluating"]
    assert run_cli("--data.data_dir", str(mnist_dir), "--default_root_dir", str(tmp_path / "logs"), *QUICK,
                   *stop).returncode == 143  # fmt: skip
    (tmp_path / "logs").rename(tmp_path / "moved")
    run = run_folder(tmp_path / "moved")
    best = run / "checkpoints" / Path(results(tmp_path / "moved")["best_checkpoint"]).name
    args = ["--data.data_dir", str(mnist_dir), "--default_root_dir", str(tmp_path / "moved"), *QUICK]
    good = flip_a_bit(best)
    before = files(run)
    failed = run_main(*args, "--ckpt_path", "last")
    assert failed.returncode == 2 and "is damaged" in one_error_line(failed.stderr)
    summary = {k: v for k, v in results(tmp_path / "moved").items() if k != "wall_seconds"}
    assert summary["best_checkpoint"] == str(best)  # where it is now
    assert {k: v for k, v in files(run).items() if k != "results.json"} == {
        k: v for k, v in before.items() if k != "results.json"
    }  # nothing of the failed attempt left (its events), nothing of the run's lost
    best.write_bytes(good)
    again = run_main(*args, "--ckpt_path", "last")
    assert again.returncode == 0, again.stderr
    summary = results(tmp_path / "moved")
    assert "test/acc" in summary["metrics"] and summary["tested_checkpoint"] == str(best)


def test_a_runs_config_yaml_run_again_is_a_new_run_that_leaves_the_old_one_as_it_was(trained, tmp_path):
    """README: `python train.py --config logs/.../config.yaml` runs it again. config.yaml names no run folder (it
    used to pin the logger's version: the run again overwrote the old run's last.ckpt and results.json)."""
    logs, _ = copy_of_run(trained, tmp_path)
    run = run_folder(logs)
    before = files(run)
    assert yaml.safe_load((run / "config.yaml").read_text())["trainer"]["logger"] is None
    done = run_main("--config", str(run / "config.yaml"), "--default_root_dir", str(logs), "--seed_everything", "5")
    assert done.returncode == 0, done.stderr
    assert files(run) == before
    assert (run.parent / "version_1" / "results.json").is_file()


def test_a_damaged_results_json_is_kept_aside_and_written_anew_by_a_test(trained, tmp_path):
    logs, best = copy_of_run(trained, tmp_path)
    run = run_folder(logs)
    (run / "results.json").write_text('{"metrics": {"test/acc": 0.')  # cut short
    done = run_main("test", "--ckpt_path", best)
    assert done.returncode == 0, done.stderr
    assert f"note: {run / 'results.json'} cannot be read: moved to results.damaged.json, written anew" in done.stderr
    assert (run / "results.damaged.json").read_text() == '{"metrics": {"test/acc": 0.'  # nothing lost
    assert "test/acc" in results(logs)["metrics"]


def test_a_link_to_a_run_folder_tests_into_that_run(trained, tmp_path, monkeypatch):
    logs, best = copy_of_run(trained, tmp_path)
    run = run_folder(logs)
    (run.parent / "latest").symlink_to(run.name)
    (tmp_path / "here").mkdir()
    monkeypatch.chdir(tmp_path / "here")  # a relative logs/ here would catch a new run folder
    done = run_main("test", "--ckpt_path", str(run.parent / "latest" / "checkpoints" / Path(best).name))
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in run.parent.iterdir()) == ["latest", run.name] and not list(Path().iterdir())
    assert results(logs)["tested_checkpoint"].endswith(Path(best).name)


def test_test_of_a_checkpoint_needs_only_its_run_folder_writable(trained, small_disk):
    """The log folder of --default_root_dir (logs/ by default) read-only: a test writes into the checkpoint's run."""
    logs, best = copy_of_run(trained, small_disk.parent)
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    done = run_main("test", "--ckpt_path", best, "--default_root_dir", str(small_disk / "logs"))
    assert done.returncode == 0, done.stderr
    assert "test/acc" in results(logs)["metrics"]


@pytest.mark.slow
def test_two_processes_continuing_one_run_the_second_is_one_line(mnist_dir, tmp_path):
    """Two `--ckpt_path last` of one stopped run at once (a requeued job and a user, say): the second one is refused
    while the first trains, instead of both writing the same checkpoints."""

    args = ["--data.data_dir", str(mnist_dir), "--default_root_dir", str(tmp_path / "logs"), *QUICK]
    stop = ["--trainer.callbacks+=tests.slow_stages.SignalAt", "--trainer.callbacks.step", "4",
            "--trainer.callbacks.signal", "SIGTERM"]  # fmt: skip
    assert run_cli(*args, *stop).returncode == 143
    run = run_folder(tmp_path / "logs")
    paced = ["--trainer.callbacks+=tests.slow_stages.Paced", "--trainer.callbacks.seconds", "3"]
    first = subprocess.Popen([sys.executable, str(REPO / "train.py"), *args, *paced, "--ckpt_path", "last"], cwd=REPO,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    wait_until_locked(run)
    before = {path for path in run.rglob("*") if path.is_file()}
    second = run_main(*args, "--ckpt_path", "last")
    assert before <= {path for path in run.rglob("*") if path.is_file()}  # the second removed none of the first's
    _, stderr = first.communicate(timeout=300)
    assert first.returncode == 0, stderr
    assert second.returncode == 2
    assert one_error_line(second.stderr) == (
        f"error: {run} is being continued by another process; wait for it to end, or leave out --ckpt_path to start "
        "a new run"
    )
    assert results(tmp_path / "logs")["global_step"] == 6 and run_folder(tmp_path / "logs") == run


def wait_until_locked(run: Path) -> None:
    """Until a process holds the run folder's lock (project.resume.lock_run)."""
    import fcntl
    import time

    folder = os.open(run, os.O_RDONLY)
    try:
        for _ in range(600):
            try:
                fcntl.flock(folder, fcntl.LOCK_EX | fcntl.LOCK_NB)
                fcntl.flock(folder, fcntl.LOCK_UN)
                time.sleep(0.1)
            except OSError:
                return
    finally:
        os.close(folder)
    raise AssertionError(f"no process locked {run} in 60 s")


@pytest.mark.slow
def test_ckpt_path_last_of_a_new_run_that_is_still_training_is_refused(mnist_dir, tmp_path):
    """A new run trains (its first epoch saved), and the same command with `--ckpt_path last` starts beside it (a
    second job on the same folder, say): refused while the first trains, instead of both writing its checkpoints
    (a new run did not lock its folder: the second resumed into it, and one save failed with a generic line)."""
    import time

    args = ["--data.data_dir", str(mnist_dir), "--default_root_dir", str(tmp_path / "logs"), *QUICK]
    paced = ["--trainer.callbacks+=tests.slow_stages.Paced", "--trainer.callbacks.seconds", "2"]
    first = subprocess.Popen([sys.executable, str(REPO / "train.py"), *args, *paced], cwd=REPO,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.monotonic() + 120
    while not list((tmp_path / "logs").rglob("last.ckpt")):  # the first epoch's end: an unfinished run to resume
        assert time.monotonic() < deadline and first.poll() is None, first.communicate()[1]
        time.sleep(0.1)
    run = run_folder(tmp_path / "logs")
    wait_until_locked(run)
    second = run_main(*args, "--ckpt_path", "last")
    _, stderr = first.communicate(timeout=300)
    assert first.returncode == 0, stderr
    assert second.returncode == 2 and one_error_line(second.stderr).startswith(
        f"error: {run} is being continued by another process"
    )
    assert results(tmp_path / "logs")["global_step"] == 6 and run_folder(tmp_path / "logs") == run


def test_a_closed_terminal_sighup_saves_the_step_and_the_same_command_goes_on(mnist_dir, tmp_path):
    args = ["--data.data_dir", str(mnist_dir), "--default_root_dir", str(tmp_path / "logs"), *QUICK]
    hangup = ["--trainer.callbacks+=tests.slow_stages.SignalAt", "--trainer.callbacks.step", "4",
              "--trainer.callbacks.signal", "SIGHUP"]  # fmt: skip
    stopped = run_cli(*args, *hangup)
    assert stopped.returncode == 129 and "Traceback" not in stopped.stderr, stopped.stderr
    assert "SIGHUP: saved" in stopped.stderr and "at step 4;" in stopped.stderr
    resumed = run_cli(*args, "--ckpt_path", "last")
    assert resumed.returncode == 0, resumed.stderr
    assert results(tmp_path / "logs")["global_step"] == 6


def test_a_stop_signal_while_an_export_renames_its_files_waits_for_the_last(tmp_path, monkeypatch):
    """A real signal at the first rename (sent from inside it): the process stops only once every file is in
    place, so a new model.pt2 never sits beside an old model.onnx. torch's threads are running, as in an export."""
    import project.extras.atomic as atomic

    torch.ones(256, 256) @ torch.ones(256, 256)  # torch's worker threads exist, which a signal mask would miss
    files = {tmp_path / "model.pt2": b"new pt2", tmp_path / "model.onnx": b"new onnx"}
    for path in files:
        path.write_bytes(b"old")
    rename = os.replace

    def rename_then_signal(source, target) -> None:
        rename(source, target)
        if Path(target).name == "model.pt2":
            os.kill(os.getpid(), signal.SIGTERM)

    class Stop(Exception):
        pass

    def stop(signum, frame):
        raise Stop

    monkeypatch.setattr(atomic.os, "replace", rename_then_signal)
    previous = signal.signal(signal.SIGTERM, stop)
    try:
        with pytest.raises(Stop):
            atomic.write_together(files)
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert {path.read_bytes() for path in files} == {b"new pt2", b"new onnx"} and not list(tmp_path.glob("*.tmp"))


def test_an_export_stopped_by_a_signal_says_so_in_one_line(trained, tmp_path, monkeypatch, capsys):
    """SIGTERM while export loads torch, or SIGHUP (a closed terminal) during its renames: one line each, status
    128 + the signal; they ended it silently (the signals' default action), or after "wrote" with status 143."""
    import time

    import project.extras.atomic as atomic

    checkpoint, out = results(trained[0] / "logs")["best_checkpoint"], tmp_path / "out"
    process = subprocess.Popen([sys.executable, "-m", "project.extras.export", checkpoint, "--out", str(out)], cwd=REPO,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    time.sleep(0.3)  # Python is up, torch is not loaded yet
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 143 and "Traceback" not in stderr, stderr
    assert stderr.strip().splitlines()[-1] == f"SIGTERM: stopped, nothing written ({out} as it was); run the same " \
                                              "command again"  # fmt: skip
    assert not out.exists()

    rename = os.replace

    def rename_then_hang_up(source, target) -> None:
        rename(source, target)
        if Path(target).name == "model.pt2":
            os.kill(os.getpid(), signal.SIGHUP)

    monkeypatch.setattr(atomic.os, "replace", rename_then_hang_up)
    assert export_main([checkpoint, "--out", str(out)]) == 128 + signal.SIGHUP
    said = capsys.readouterr().err.strip().splitlines()[-1]
    assert said == f"SIGHUP: stopped, the new export in {out} is whole; run the same command again"
    assert {p.name for p in out.iterdir()} >= {"model.pt2", "preprocessing.json"}
    assert signal.getsignal(signal.SIGHUP) is not signals.stop_now  # the caller's handler back


def as_a_user(*args: str) -> subprocess.CompletedProcess:
    """`python train.py ARGS` without root's power to read any file (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
    dropped), as the user a file's permissions were set against: tests run as root here and in CI."""
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        pytest.skip("needs root and setpriv (util-linux): it drops root's power to read any file, to act as a user")
    caps = "-dac_override,-dac_read_search"
    command = ["setpriv", "--bounding-set", caps, "--inh-caps", caps, sys.executable, str(REPO / "train.py"), *args]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)


def test_a_checkpoint_or_data_this_user_may_not_read_is_named_as_such(trained, mnist_dir, tmp_path):
    logs, best = copy_of_run(trained, tmp_path)
    os.chmod(best, 0)
    done = as_a_user("test", "--ckpt_path", best)
    assert done.returncode == 2
    assert one_error_line(done.stderr) == (
        f"error: cannot use ({best}): Permission denied; give this user access to it, then run again"
    )
    images = next(mnist_dir.rglob("train-images-idx3-ubyte"))
    os.chmod(images, 0)
    done = as_a_user("--data.data_dir", str(mnist_dir), "--default_root_dir", str(tmp_path / "new"), *QUICK)
    assert done.returncode == 2
    assert one_error_line(done.stderr).startswith(f"error: cannot use ({images}): Permission denied; give this")
    assert not (tmp_path / "new").exists() or not list((tmp_path / "new").rglob("*.ckpt"))


def test_a_file_system_errors_line_names_its_path_as_text():
    """TensorBoard's event writer reports its file's path as bytes: the line showed b'/...'."""
    import errno

    from project.run.errors import explain_failure

    error = OSError(errno.EROFS, "Read-only file system", b"/runs/events.out.tfevents.1")
    assert explain_failure(error) == (
        "cannot write (/runs/events.out.tfevents.1): Read-only file system; free space or make the folder writable, "
        "then run again"
    )


def test_a_file_system_without_locks_still_trains(mnist_dir, tmp_path, monkeypatch):
    """flock fails with ENOLCK on some NFS and Lustre mounts: a new run goes on without its lock (it would have
    been refused as "being continued by another process"); only a lock another process holds refuses."""
    import errno
    import fcntl

    def no_locks(fd: int, operation: int) -> None:
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    done = run_main("--data.data_dir", str(mnist_dir), "--default_root_dir", str(tmp_path / "logs"), *QUICK)
    assert done.returncode == 0, done.stderr
    assert results(tmp_path / "logs")["global_step"] == 6
