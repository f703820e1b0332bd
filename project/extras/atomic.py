"""Writing into a run folder: whole files or none (text and checkpoints), and the run's TensorBoard writer."""

import hashlib
import os
import signal
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.plugins.io import TorchCheckpointIO

from project.errors import UserError
from project.files import write_atomically, write_beside
from project.run.signals import STOP_SIGNALS, Stopped

__all__ = ["AtomicCheckpointIO", "tensorboard", "write_atomically", "write_together"]

SIGNALS = (signal.SIGINT, *STOP_SIGNALS)  # what stops a process: Ctrl-C and the stop signals


CHECKSUM = "state_dict_sha256"  # the checkpoint's key for its weights' checksum


def state_dict_checksum(state_dict: dict[str, torch.Tensor]) -> str:
    """SHA-256 of the weights' names and bytes: a flipped bit inside a tensor, which loads without a word,
    shows as another checksum."""
    digest = hashlib.sha256()
    for name, tensor in sorted(state_dict.items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def write_together(files: dict[Path, bytes]) -> None:
    """Files that belong together (an export's), all written or none: each goes beside its target and to disk
    first, so a failure (a full disk) leaves every previous file as it was; then all are renamed in place, a stop
    signal meanwhile only noted and raised once the last one is (between two renames it would pair a new file with
    an old). Handlers, not a signal mask: a mask holds signals back from this thread only, and torch's threads
    would take them. From the main thread (Python's rule for signal handlers)."""
    temporary: dict[Path, Path] = {}
    try:
        for path, data in files.items():
            temporary[path] = write_beside(path, data)
        noted: list[int] = []
        handlers = {stop: signal.signal(stop, lambda signum, _: noted.append(signum)) for stop in SIGNALS}
        renamed = False
        try:
            for path, tmp in temporary.items():
                os.replace(tmp, path)
            renamed = True
        finally:
            for stop, handler in handlers.items():
                signal.signal(stop, handler)
            for signum in noted:
                try:
                    signal.raise_signal(signum)
                except Stopped as stop:  # project.stop_now's: the caller can say that the files are all new
                    stop.written = renamed
                    raise
    finally:
        for tmp in temporary.values():
            tmp.unlink(missing_ok=True)


def verify(checkpoint: dict[str, Any], path) -> dict[str, Any]:
    """The checkpoint, or a UserError naming it when its weights do not match the checksum written with them."""
    if CHECKSUM in checkpoint and checkpoint[CHECKSUM] != state_dict_checksum(checkpoint["state_dict"]):
        raise UserError(f"checkpoint {path} is damaged: its weights do not match the checksum written with them; "
                        "use another checkpoint of the run (checkpoints/) or train again")  # fmt: skip
    return checkpoint


def tensorboard(trainer: L.Trainer):
    """The SummaryWriter of the run's TensorBoard logger on process 0, or None (other loggers get no pictures)."""
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger) and trainer.is_global_zero:
            return logger.experiment
    return None


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes `<name>.partial` beside the target, flushes it to disk, then renames it over the target; writes a
    checksum of the weights into the checkpoint and checks it when Lightning loads one (--ckpt_path).

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
        if "state_dict" in checkpoint:  # checked when Lightning loads it (load_checkpoint)
            checkpoint = {**checkpoint, CHECKSUM: state_dict_checksum(checkpoint["state_dict"])}
        try:
            with open(partial, "wb") as file:
                torch.save(checkpoint, file)
                file.flush()
                os.fsync(file.fileno())  # the bytes reach the disk before the name points at them
            os.replace(partial, target)
        finally:
            partial.unlink(missing_ok=True)  # a full disk leaves no half file: the last good checkpoint stays
        directory = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(directory)  # and the rename itself survives a power cut
        finally:
            os.close(directory)

    def load_checkpoint(self, path, *args, **kwargs) -> dict[str, Any]:
        return verify(super().load_checkpoint(path, *args, **kwargs), path)
