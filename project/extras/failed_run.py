"""RemoveFailedRun: a run that fails before its first training step leaves nothing behind."""

import shutil
import time
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import Callback


class RemoveFailedRun(Callback):
    """On an exception before any training step of this process, removes the files this process made in the run
    folder: the whole folder for a new run, only the new files (config, events) for a resumed one; a file that
    was there before (results.json, rewritten or not) stays. Made here = not in the folder, with an older time,
    when the run was set up; no other process writes into it meanwhile (a resume locks the run: project.resume).

    Lightning creates the folder (an event file, config.yaml) before the data is loaded and the optimizer is
    built, so a mistake found there would otherwise leave a `version_N` that looks like a run. Once a step has
    been trained, everything stays: the events up to a crash are what one needs to understand it (but an empty
    event file that a full disk left: the test after fit opens one).
    """

    def __init__(self) -> None:
        self.started = time.time()
        self.trained = False
        self.before: set[Path] | None = None  # the run folder's files from before this process

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self.before is None and trainer.is_global_zero and run_folder(trainer):
            self.before = self.older_files(run_folder(trainer))

    def older_files(self, folder: Path) -> set[Path]:
        """The folder's files from before this process (a later failure may find some rewritten)."""
        return {path for path in folder.rglob("*") if path.is_file() and path.stat().st_mtime < self.started}

    def on_train_batch_end(self, *args, **kwargs) -> None:
        self.trained = True

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        folder = run_folder(trainer) if trainer.is_global_zero else None
        if folder is None:
            return
        self.before = self.older_files(folder) if self.before is None else self.before  # failed before setup
        made = [path for path in folder.rglob("*") if path.is_file() and path not in self.before]
        trainer.logger.finalize("failed")  # the event file closed (flushed) before it goes, or is found empty
        if self.trained:  # all stays, but an event file the disk had no room for (0 bytes: not even its header)
            made = [path for path in made if path.name.startswith("events.out.") and path.stat().st_size == 0]
        elif not self.before:
            shutil.rmtree(folder, ignore_errors=True)
        for path in made:
            path.unlink(missing_ok=True)


def run_folder(trainer: L.Trainer) -> Path | None:
    """The logger's folder: none without a logger, or under --fast_dev_run (Lightning's DummyLogger). The logger's
    log_dir, not trainer.log_dir: the latter waits for every process, and this runs on rank 0 only."""
    folder = getattr(trainer.logger, "log_dir", None) if trainer.logger is not None else None
    return Path(folder) if isinstance(folder, str) else None
