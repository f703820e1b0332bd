"""Writing into a run folder: whole files or none (text and checkpoints), and the run's TensorBoard writer."""

import os
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.plugins.io import TorchCheckpointIO


def write_atomically(path: Path, text: str) -> None:
    """Write then rename, so a reader never sees half a file (the temporary name is per process, so that two
    writers of the same file, e.g. two tune.py workers, do not write into each other's)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def tensorboard(trainer: L.Trainer):
    """The SummaryWriter of the run's TensorBoard logger on process 0, or None (other loggers get no pictures)."""
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger) and trainer.is_global_zero:
            return logger.experiment
    return None


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes `<name>.partial` beside the target, flushes it to disk, then renames it over the target.

    Lightning's own writer stages the file in the system's temporary folder and moves it: when that folder is
    on another file system (a tmpfs /tmp, a container), the move is a copy into the target, and a process killed
    during it leaves a truncated `last.ckpt`. A rename within one folder is atomic. Remote paths (s3://...) keep
    Lightning's writer.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any | None = None) -> None:
        if storage_options is not None or "file" not in get_filesystem(path).protocol:
            return super().save_checkpoint(checkpoint, path, storage_options)
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + ".partial")  # not *.ckpt: never taken for a checkpoint
        with open(partial, "wb") as file:
            torch.save(checkpoint, file)
            file.flush()
            os.fsync(file.fileno())  # the bytes reach the disk before the name points at them
        os.replace(partial, target)
        directory = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(directory)  # and the rename itself survives a power cut
        finally:
            os.close(directory)
