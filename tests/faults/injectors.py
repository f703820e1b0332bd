"""Faults caused for real inside a run, given to train.py by class path (--trainer.callbacks+=...): a disk that
fills up, a file system that turns read-only, at a chosen training step."""

import atexit
import errno
import os
import signal as signal_module
import subprocess
import sys
from pathlib import Path

from lightning.pytorch.callbacks import Callback

from project.data import MNISTDataModule


def fill(folder: Path) -> Path:
    """Write one file into folder until its file system is full; returns the file (delete it to free the space)."""
    filler = folder / "filler"
    with open(filler, "wb") as file:
        try:
            while True:
                file.write(b"\0" * 65536)
                file.flush()
        except OSError as error:
            assert error.errno == errno.ENOSPC, error
    return filler


class FillDisk(Callback):
    """After training step `step`, fills the file system that holds `folder`."""

    def __init__(self, step: int, folder: str) -> None:
        self.step, self.folder = step, Path(folder)

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_step == self.step:
            fill(self.folder)


class FillDiskAtTest(Callback):
    """When the test starts (the test after fit, say), fills the file system that holds `folder`."""

    def __init__(self, folder: str) -> None:
        self.folder = Path(folder)

    def on_test_start(self, *args) -> None:
        fill(self.folder)


class RemountReadOnly(Callback):
    """After training step `step`, remounts the file system mounted at `mount` read-only (as a storage fault does)."""

    def __init__(self, step: int, mount: str) -> None:
        self.step, self.mount = step, mount

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_step == self.step:
            subprocess.run(["mount", "-o", "remount,ro", self.mount], check=True)


class SignalWhileEvaluating(Callback):
    """Sends `signal` to its own process after batch `batch` of a test, a prediction or a validation outside fit,
    as a cluster or a user would during that stage."""

    def __init__(self, batch: int = 0, signal: str = "SIGTERM") -> None:
        self.batch, self.signal = batch, signal

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if batch_idx == self.batch and trainer.state.fn != "fit":
            os.kill(os.getpid(), getattr(signal_module, self.signal))

    on_validation_batch_end = on_predict_batch_end = on_test_batch_end


class SignalBeforeTraining(Callback):
    """Sends `signal` to its own process as training starts, before the first step (as a Ctrl-C while the data
    loads): given before the template's callbacks, it runs before any of them takes the signal over."""

    def __init__(self, signal: str = "SIGINT") -> None:
        self.signal = signal

    def on_train_start(self, trainer, pl_module) -> None:
        os.kill(os.getpid(), getattr(signal_module, self.signal))


class FaultInTraining(MNISTDataModule):
    """MNIST whose training batch `at_batch` (counted over the process) sends `signal` to its own process, or
    remounts the file system mounted at `remount` read-only: for entry points that run with other callbacks than the
    run's (lr_find's range test)."""

    def __init__(self, at_batch: int = 5, signal: str | None = None, remount: str | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.at_batch, self.signal, self.remount, self.seen = at_batch, signal, remount, 0

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        if self.trainer.training:
            self.seen += 1
            if self.seen == self.at_batch and self.signal:
                os.kill(os.getpid(), getattr(signal_module, self.signal))
            if self.seen == self.at_batch and self.remount:
                subprocess.run(["mount", "-o", "remount,ro", self.remount], check=True)
        return super().on_after_batch_transfer(batch, dataloader_idx)


class SignalAtFitEnd(Callback):
    """Sends `signal` to its own process as a fit ends, in a run whose default_root_dir ends with `only_in` (one
    trial of a tune.py search: between that trial and the next)."""

    def __init__(self, signal: str = "SIGTERM", only_in: str = "") -> None:
        self.signal, self.only_in = signal, only_in

    def on_fit_end(self, trainer, pl_module) -> None:
        if str(trainer.default_root_dir).endswith(self.only_in):
            os.kill(os.getpid(), getattr(signal_module, self.signal))


class SignalAfterTheRun(Callback):
    """Sends `signal` to its own process once the run is done, as Python exits (a SLURM time limit that falls
    there): `when` "at_exit", from an exit handler registered at the test's end, after every stage's handlers are
    back; "at_shutdown", as Python clears its modules, after it has given the signals their default actions back."""

    def __init__(self, signal: str = "SIGUSR1", when: str = "at_exit") -> None:
        self.signal, self.when = signal, when

    def on_test_end(self, trainer, pl_module) -> None:
        if self.when == "at_exit":
            atexit.register(os.kill, os.getpid(), getattr(signal_module, self.signal))
        else:
            # Held by __main__ alone, whose globals Python clears as it shuts down (a module of the libraries' may
            # be kept alive past that, and its objects never collected).
            vars(sys.modules["__main__"]).setdefault("left_for_shutdown", []).append(
                SignalWhenCollected(getattr(signal_module, self.signal))
            )


class SignalWhenCollected:
    """Sends `signum` to its own process when it is collected, and says so on stderr (what it needs kept: the os
    module may be gone by then)."""

    def __init__(self, signum: int) -> None:
        self.kill, self.write, self.pid, self.signum = os.kill, os.write, os.getpid(), signum

    def __del__(self) -> None:
        self.write(2, b"signalled at shutdown\n")
        self.kill(self.pid, self.signum)


class SignalBeforeTheTest(MNISTDataModule):
    """Sends SIGUSR1 to its own process as the test after fit is set up (after the fit's handlers are given back,
    before the test's are installed), once: a marker file in default_root_dir says it was sent."""

    def setup(self, stage: str) -> None:
        sent = Path(self.trainer.default_root_dir) / "signalled_before_the_test"
        if stage == "test" and not sent.exists():
            sent.touch()
            os.kill(os.getpid(), signal_module.SIGUSR1)
        super().setup(stage)


class RemoveRunFolder(Callback):
    """After training step `step`, removes the run's folder (a user cleaning logs/ while a run writes into it)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_step == self.step:
            subprocess.run(["rm", "-r", trainer.log_dir], check=True)
