"""tune.py under faults caused for real: a worker killed outright, stop signals during a trial and between trials,
a full disk (a 16 MB tmpfs) at the start and inside a trial. Each asserts the exit status, the one line, no
traceback (Optuna logs none either), what is left on disk and in the study, and that the same command then
finishes the study. docs/reliability.md's "Faults" table lists them."""

import os
import signal
import subprocess
import sys
import time

import optuna
import pytest

import tune
from tests.conftest import FAST_RUN, REPO
from tests.faults.injectors import fill
from tests.faults.test_faults import default_ctrl_c, one_error_line
from tests.forkserver import forked

pytestmark = pytest.mark.slow  # each trains one to three tune.py trials in processes of their own

FAIL, RUNNING, WAITING = optuna.trial.TrialState.FAIL, optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.WAITING
COMPLETE = optuna.trial.TrialState.COMPLETE
AGAIN = "then run the same command again: the study goes on"  # a disk error's advice


def command(storage: str, out, mnist_dir) -> list[str]:
    """A 2-trial study of one-epoch MLP trials on the synthetic data: seconds a trial."""
    return [sys.executable, str(REPO / "tune.py"), "--trials", "2", "--storage", storage, "--out", str(out),
            "--net", "MLP", "--data.data_dir", str(mnist_dir), *FAST_RUN]  # fmt: skip


def at_step(step: int, stop: str) -> list[str]:
    """Sends `stop` to the worker itself after training step `step` of its first trial."""
    return ["--trainer.callbacks+=tests.slow_stages.SignalAt", "--trainer.callbacks.step", str(step),
            "--trainer.callbacks.signal", stop]  # fmt: skip


def tune_py(*args: str) -> subprocess.CompletedProcess:
    """`python tune.py ...` as a process of its own (forked: tests/forkserver.py); args as command() gives them,
    the interpreter first."""
    assert args[0] == sys.executable
    done = forked(list(args[1:]), REPO, dict(os.environ))
    assert "Traceback" not in done.stderr + done.stdout, done.stderr
    return done


def trials(storage: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name="mnist", storage=storage).trials


def finishes_the_study(args: list[str], storage: str, out) -> list[optuna.trial.FrozenTrial]:
    """The same command goes on: exit 0, two completed trials, none left running, best.yaml written."""
    done = tune_py(*args)
    assert done.returncode == 0, done.stderr
    assert f"wrote {out / 'best.yaml'}" in done.stdout
    study = trials(storage)
    assert [t.state for t in study].count(COMPLETE) == 2 and RUNNING not in [t.state for t in study]
    return study


def test_a_killed_workers_trial_is_failed_and_run_again_by_the_next_run(mnist_dir, tmp_path):
    storage, out = f"sqlite:///{tmp_path / 'study.db'}", tmp_path / "tune"
    args = command(storage, out, mnist_dir)
    killed = tune_py(*args, *at_step(1, "SIGKILL"))  # nothing runs in the worker after this
    assert killed.returncode == -signal.SIGKILL
    assert [t.state for t in trials(storage)] == [RUNNING]
    cut_short = trials(storage)[0].params

    # At once, not after Optuna's heartbeat grace (60 s): the worker ran on this machine and its process is gone.
    study = finishes_the_study(args, storage, out)
    assert study[0].state == FAIL and study[1].params == cut_short  # its values ran again, first
    before = (out / "best.yaml").read_bytes()
    again = tune_py(*args)  # the study is done: nothing runs, nothing changes
    assert again.returncode == 0 and len(trials(storage)) == len(study) and (out / "best.yaml").read_bytes() == before


@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used with Study.optimize")
def test_a_done_study_with_a_trial_of_a_worker_gone_elsewhere_gets_its_best_yaml(tmp_path, monkeypatch, capsys):
    """A worker on another machine died in a trial after the study reached its total: its trial is failed once its
    heartbeat is older than the grace period (3 heartbeats), and a run that finds the study done writes best.yaml."""
    monkeypatch.setattr(tune, "HEARTBEAT", 1)  # seconds: the grace period is 3 s, not 60 s
    storage, out = f"sqlite:///{tmp_path / 'study.db'}", tmp_path / "tune"
    study = tune.open_study("mnist", storage)
    for value in (0.5, 0.7):
        trial = study.ask()
        tune.trial_recipe(trial, "MLP")
        study.tell(trial, value)
    gone = study.ask()  # what the other worker did before it died: its trial, a heartbeat, who it was
    tune.trial_recipe(gone, "MLP")
    gone.set_user_attr("worker", {"machine": "another machine", "pid": os.getpid()})
    heartbeats = optuna.storages.RDBStorage(storage)  # the storage's public methods, as another worker's would
    heartbeats.record_heartbeat(
        heartbeats.get_trial_id_from_study_id_trial_number(heartbeats.get_study_id_from_name("mnist"), gone.number)
    )
    recorded = time.monotonic()
    args = ["--trials", "2", "--storage", storage, "--out", str(out), "--net", "MLP"]

    assert tune.main(args) == 0  # within the grace period: it may still be running
    assert "best.yaml is written by the worker that finishes" in capsys.readouterr().out
    assert trials(storage)[2].state == RUNNING and not (out / "best.yaml").exists()
    time.sleep(recorded + 5.5 - time.monotonic())  # over 3 s by the database's clock, which counts whole seconds
    assert tune.main(args) == 0
    assert f"wrote {out / 'best.yaml'}" in capsys.readouterr().out
    after = trials(storage)
    assert after[2].state == FAIL  # not running forever; its values wait for a study with a higher total
    assert after[3].state == WAITING and after[3].system_attrs["fixed_params"] == after[2].params


@pytest.mark.parametrize("stop", ["SIGHUP", "SIGUSR1", "SIGTERM"])
def test_a_stop_signal_during_a_tune_trial(stop, mnist_dir, tmp_path):
    storage, out = f"sqlite:///{tmp_path / 'study.db'}", tmp_path / "tune"
    args = command(storage, out, mnist_dir)
    stopped = tune_py(*args, *at_step(1, stop))
    assert stopped.returncode == 128 + getattr(signal, stop)
    assert "--ckpt_path" not in stopped.stderr  # the run's own advice: a trial runs again from its start
    assert stopped.stderr.strip().splitlines()[-1] == (
        f"stopped by {stop}: the trial cut short runs again first; `python tune.py` with the same options goes on "
        "(the study has 0 of 2 trials)"
    )
    study = trials(storage)
    assert [t.state for t in study] == [FAIL, WAITING]  # not running: queued again, first
    assert study[1].system_attrs["fixed_params"] == study[0].params
    if stop == "SIGHUP":  # the terminal closed: the same command goes on
        assert finishes_the_study(args, storage, out)[1].params == study[0].params


@pytest.mark.parametrize("stop", ["SIGINT", "SIGTERM"])
def test_a_stop_signal_between_tune_trials(stop, mnist_dir, tmp_path):
    """The signal as trial 0's training ends: that trial completes, the search stops before the next one, and
    nothing is marked cut short."""
    storage, out = f"sqlite:///{tmp_path / 'study.db'}", tmp_path / "tune"
    args = command(storage, out, mnist_dir)
    at_the_end = ["--trainer.callbacks+=tests.faults.injectors.SignalAtFitEnd", "--trainer.callbacks.signal", stop,
                  "--trainer.callbacks.only_in", "trial_0"]  # fmt: skip
    done = tune_py(*args, *at_the_end)
    assert done.returncode == 128 + getattr(signal, stop)
    said = "interrupted (Ctrl-C)" if stop == "SIGINT" else f"stopped by {stop}"
    last = done.stderr.strip().splitlines()[-1]
    assert last == f"{said}: `python tune.py` with the same options goes on (the study has 1 of 2 trials)", last
    assert [t.state for t in trials(storage)] == [COMPLETE]  # no trial cut short, none queued again
    assert not (out / "trial_1").exists()
    finishes_the_study(args, storage, out)


def test_tune_on_a_full_disk_at_the_start(mnist_dir, small_disk, tmp_path):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    fill(small_disk)
    done = tune_py(*command(storage, small_disk / "tune", mnist_dir))
    assert done.returncode == 2
    line = one_error_line(done.stderr)
    assert "No space left on device" in line and line.endswith(AGAIN)
    assert not [p for p in (small_disk / "tune").rglob("*")]  # no empty recipe.yaml, no trial folder
    assert [t.state for t in trials(storage)] == [FAIL, WAITING]  # its values run first once there is space

    # The study's database on the full disk: not left behind as an empty file.
    done = tune_py(*command(f"sqlite:///{small_disk / 'db' / 'study.db'}", tmp_path / "tune", mnist_dir))
    assert done.returncode == 2
    assert one_error_line(done.stderr).startswith("error: cannot write: database or disk is full; free space")
    assert not (small_disk / "db" / "study.db").exists()
    # One that was there is kept.
    (small_disk / "filler").unlink()
    existing = small_disk / "db" / "study.db"
    optuna.create_study(study_name="mnist", storage=f"sqlite:///{existing}")
    fill(small_disk)
    done = tune_py(*command(f"sqlite:///{existing}", tmp_path / "tune", mnist_dir))
    assert done.returncode == 2 and "database or disk is full" in one_error_line(done.stderr)
    assert existing.stat().st_size > 0 and optuna.load_study(study_name="mnist", storage=f"sqlite:///{existing}")


@pytest.mark.parametrize("small_disk", ["64m"], indirect=True)  # room for the cut-short trial's files and two
def test_tune_when_the_disk_fills_inside_a_trial(mnist_dir, small_disk):  # more of the widest net (5 MB a file)
    """The trial's files and the study's database on the disk that fills: the database cannot even record the
    trial failed; the next run finds its worker gone and runs its values again first."""
    storage, out = f"sqlite:///{small_disk / 'study.db'}", small_disk / "tune"
    args = command(storage, out, mnist_dir)
    filled = ["--trainer.callbacks+=tests.faults.injectors.FillDisk", "--trainer.callbacks.step", "1",
              "--trainer.callbacks.folder", str(small_disk)]  # fmt: skip
    done = tune_py(*args, *filled)
    assert done.returncode == 2
    line = one_error_line(done.stderr)
    assert line.startswith("error: cannot write") and line.endswith(AGAIN)
    assert not list(out.rglob("*.tmp")) and not list(out.rglob("*.partial"))  # nothing half-written
    assert all(p.stat().st_size > 0 for p in out.rglob("*") if p.is_file())
    cut_short = trials(storage)[0].params
    (small_disk / "filler").unlink()
    assert finishes_the_study(args, storage, out)[1].params == cut_short


@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used with Study.optimize")
def test_a_worker_killed_while_another_finishes_the_study_leaves_it_its_best_yaml(mnist_dir, tmp_path, capsys):
    """Two workers on one study, one killed outright in its trial (on this machine) while the other finishes the
    study's total: the survivor fails the dead worker's trial (not to run again: the total is reached) and writes
    best.yaml. It said that the worker finishing the last trial writes it, and that worker was gone."""
    import threading

    storage, out = f"sqlite:///{tmp_path / 'study.db'}", tmp_path / "tune"
    study = tune.open_study("mnist", storage)
    trial = study.ask()
    tune.trial_recipe(trial, "MLP")
    study.tell(trial, 0.5)
    doomed = subprocess.Popen(["sleep", "1"])  # the other worker: alive when the survivor starts, dead before it ends
    threading.Thread(target=doomed.wait, daemon=True).start()  # reaped at once, as its parent would
    gone = study.ask()
    tune.trial_recipe(gone, "MLP")
    gone.set_user_attr("worker", {**tune.this_worker(), "pid": doomed.pid})
    paced = ["--trainer.callbacks+=tests.slow_stages.Paced", "--trainer.callbacks.seconds", "0.5"]
    args = ["--trials", "2", "--storage", storage, "--out", str(out), "--net", "MLP", "--data.data_dir",
            str(mnist_dir), *FAST_RUN, *paced]  # fmt: skip
    assert tune.main(args) == 0
    assert doomed.poll() is not None  # it died while the survivor trained
    assert f"wrote {out / 'best.yaml'}" in capsys.readouterr().out
    assert [t.state for t in trials(storage)] == [COMPLETE, FAIL, COMPLETE]  # nothing left running or waiting


def test_a_database_server_that_never_answers_is_one_line_in_seconds_and_a_stop_ends_the_wait(mnist_dir, tmp_path):
    """A port that accepts connections and never answers (a socket that listens and never reads): one line after
    tune.CONNECT_SECONDS, not the driver's default of minutes; a SIGTERM while it waits (or before, while tune.py
    loads) ends tune.py then, with its own line and 143. Nothing is written (--out is not made)."""
    import socket

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        args = command(f"postgresql://user@127.0.0.1:{silent.getsockname()[1]}/study", tmp_path / "out", mnist_dir)
        started = time.monotonic()
        done = tune_py(*args)
        assert done.returncode == 2 and time.monotonic() - started < 30 + tune.CONNECT_SECONDS
        assert one_error_line(done.stderr) == ("error: --storage postgresql://...: cannot open the study's database "
                                               "(connection timeout expired); check the URL and that the database "
                                               "server runs")  # fmt: skip

        process = subprocess.Popen(args, cwd=REPO, stderr=subprocess.PIPE, text=True, preexec_fn=default_ctrl_c)
        time.sleep((time.monotonic() - started) * 0.8)  # most of a start: connecting (the imports take seconds)
        process.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        _, stderr = process.communicate(timeout=60)
    assert process.returncode == 143 and time.monotonic() - signalled <= tune.CONNECT_SECONDS + 10, stderr
    assert stderr.splitlines()[-1] == ("stopped by SIGTERM while opening the study's database (--storage "
                                       "postgresql://...); nothing was written")  # fmt: skip
    assert not (tmp_path / "out").exists()
