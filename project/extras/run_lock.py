"""RunLock: one process at a time trains in a run folder, so that two never write the same checkpoints."""

import fcntl
import os

import lightning as L
from lightning.pytorch.callbacks import Callback

from project.errors import UserError


class RunLock(Callback):
    """Locks the run folder while this process fits in it: a second process continuing the same run (a requeued job
    and a user's `--ckpt_path last`, say) stops with one line before it writes anything. The lock is the folder's
    own (flock), so no file is made, and it goes when the process ends, however it ends."""

    def __init__(self) -> None:
        self.folder: int | None = None  # the locked folder's descriptor

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit" or self.folder is not None or trainer.logger is None or not trainer.is_global_zero:
            return
        run = trainer.logger.log_dir
        folder = os.open(run, os.O_RDONLY)
        try:
            fcntl.flock(folder, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(folder)
            raise UserError(f"{run} is being continued by another process; wait for it to end, or leave out "
                            "--ckpt_path to start a new run") from None  # fmt: skip
        self.folder = folder

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit" and self.folder is not None:  # also where the process goes on (a caller in Python)
            os.close(self.folder)
            self.folder = None

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self.teardown(trainer, pl_module, "fit")
