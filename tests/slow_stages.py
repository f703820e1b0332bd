"""Stand-ins that make a stage of a run last long enough for a test to send a signal in it, and say when it has
begun (a marker file named by $MARKER_DIR/<stage>). Given to train.py by class path: they change the timing of
a run, not its numbers."""

import os
import signal
import time
from pathlib import Path

from lightning.pytorch.callbacks import Callback

from project.data import MNISTDataModule
from project.extras.atomic import AtomicCheckpointIO


def mark(stage: str, seconds: float) -> None:
    """Create $MARKER_DIR/<stage> once, then take `seconds` (only in the first start of a job: a requeued job
    has SLURM_RESTART_COUNT set)."""
    folder = os.environ.get("MARKER_DIR")
    if folder and not os.environ.get("SLURM_RESTART_COUNT"):
        marker = Path(folder) / stage
        if not marker.exists():
            marker.touch()
            time.sleep(seconds)


class SlowValidation(MNISTDataModule):
    """Validation of the first training epoch takes 5 s longer."""

    def val_dataloader(self):
        return SlowFirstValidation(super().val_dataloader(), self.trainer)


class SlowFirstValidation:
    def __init__(self, loader, trainer) -> None:
        self.loader, self.trainer = loader, trainer

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        for batch in self.loader:
            # The fit's validation (not its sanity check, nor the start-up check's batch as the fit starts).
            if self.trainer.validating and not self.trainer.sanity_checking and self.trainer.current_epoch == 0:
                mark("validating", 5)
            yield batch


class SlowCheckpointIO(AtomicCheckpointIO):
    """The first checkpoint written after a training step takes 5 s longer."""

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        if checkpoint.get("global_step", 0) > 0:
            mark("saving", 5)
        super().save_checkpoint(checkpoint, path, storage_options)


class Paced(Callback):
    """Every training step takes `seconds` longer, asleep: a run that lasts as long on any machine, under any
    load, for a signal that comes by the clock (a SLURM time limit); and it leaves the cores to other work."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def on_train_batch_end(self, *args) -> None:
        time.sleep(self.seconds)


class SignalAt(Callback):
    """Sends `signal` to its own process after training step `step`, as a cluster would at that moment; with
    `rank`, only the process of that global rank gets it."""

    def __init__(self, step: int, signal: str = "SIGUSR1", rank: int | None = None) -> None:
        self.step, self.signal, self.rank = step, signal, rank

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_step == self.step and self.rank in (None, trainer.global_rank):
            os.kill(os.getpid(), getattr(signal, self.signal))


class FailAt(Callback):
    """Raises an error after training step `step`: a run that crashed, with what it saved before."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_step == self.step:
            raise RuntimeError(f"crashed after step {self.step}")
