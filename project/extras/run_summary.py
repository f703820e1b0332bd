"""RunSummary: what a run achieved, written beside its logs (results.json) and into TensorBoard's HPARAMS tab."""

import json
import sys
import time
from argparse import Namespace
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities.rank_zero import rank_zero_only
from torch.utils.tensorboard.summary import hparams

from project.extras.atomic import write_atomically
from project.run.resume import best_checkpoint

# Metrics shown against the hyper-parameters in TensorBoard, so runs can be compared and sorted there.
HPARAM_METRICS = ("val/acc_best", "test/acc")


class RunSummary(Callback):
    """Writes `results.json` (metrics, best checkpoint, epochs, wall seconds) into the run folder."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.results: dict[str, Any] = {"metrics": {}}
        self.folder: Path | None = None
        self.trainer: L.Trainer | None = None
        self.fitted = False  # a fit ran in this process: the run's wall time is this process's
        self.test_started = self.started

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.trainer = trainer
        if trainer.fast_dev_run:  # a smoke test writes nothing (Lightning's loggers and checkpoints are off too)
            return
        folder = Path(trainer.log_dir or trainer.default_root_dir)  # on every process: a collective call
        if folder == self.folder:
            return
        self.folder = folder
        # One run, one folder: a resumed run, or a test of a run's checkpoint, adds to what the run wrote.
        path = folder / "results.json"
        if path.is_file():
            try:
                saved = json.loads(path.read_text())
                metrics = {**saved.get("metrics", {}), **self.results["metrics"]}
            except (ValueError, AttributeError, TypeError):  # damaged: kept aside, written anew
                saved, metrics = {}, self.results["metrics"]
                if trainer.is_global_zero:
                    path.replace(path.with_name("results.damaged.json"))
                    print(f"note: {path} cannot be read: moved to results.damaged.json, written anew", file=sys.stderr)
            self.results = {**saved, **self.results, "metrics": metrics}
        if trainer.is_global_zero and stage != "fit":
            print(f"run folder: {folder}", file=sys.stderr)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Once the fit's checks have passed: a fit that fails before its first step leaves no folder to name.
        if trainer.is_global_zero and self.folder is not None:
            print(f"run folder: {self.folder}", file=sys.stderr)

    def state_dict(self) -> dict[str, Any]:
        # The metrics so far, in every checkpoint of a fit: a run resumed with nothing left to train (stopped in
        # its last epoch's validation) logs none, and results.json takes them from here (load_state_dict).
        metrics = self.trainer.callback_metrics if self.trainer is not None else {}
        now = {k: float(v) for k, v in metrics.items() if v.numel() == 1}
        merged = {**self.results["metrics"], **now}  # those restored from the checkpoint it resumed from, too
        return {"metrics": {k: v for k, v in merged.items() if not k.startswith("test/")}}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.results["metrics"].update(state_dict.get("metrics", {}))

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        if trainer.state.fn != "fit":  # a test or predict of a checkpoint: its metrics at the checkpoint's step
            log_at_checkpoint_step(trainer, checkpoint)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        best = trainer.checkpoint_callback
        self.results["best_checkpoint"] = best_checkpoint(best) if isinstance(best, ModelCheckpoint) else None
        self.results["epochs"] = trainer.current_epoch
        self.results["global_step"] = trainer.global_step
        # Test results of an earlier fit of this run are not this fit's (and `--ckpt_path last` reads their absence
        # as a test still to do).
        self.results.pop("tested_checkpoint", None)
        self.results["metrics"] = {k: v for k, v in self.results["metrics"].items() if not k.startswith("test/")}
        self.fitted = True
        self._record(trainer)

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.test_started = time.perf_counter()

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.results["test_wall_seconds"] = round(time.perf_counter() - self.test_started, 2)
        self.results["tested_checkpoint"] = trainer.ckpt_path
        self._record(trainer)

    def _record(self, trainer: L.Trainer) -> None:
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
        self.results["metrics"].update(metrics)
        if self.fitted:  # a later test of the run (train.py test) keeps the fit's and adds test_wall_seconds
            self.results["wall_seconds"] = round(time.perf_counter() - self.started, 2)
        if trainer.is_global_zero and self.folder is not None:
            write_atomically(self.folder / "results.json", json.dumps(self.results, indent=2) + "\n")
        # After fit (a run that only fits, such as a tune.py trial, shows up too) and again after test.
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                step = self.results.get("global_step") or trainer.global_step  # a test of a checkpoint: its run's
                write_hparams(logger, _hparams(trainer, trainer.lightning_module), step)
            else:
                logger.log_hyperparams(_hparams(trainer, trainer.lightning_module))


@rank_zero_only  # process 0 writes the logs
def write_hparams(logger: TensorBoardLogger, params: dict[str, Any], step: int) -> None:
    """TensorBoard's HPARAMS summary: the hyper-parameters against every metric of HPARAM_METRICS, named all at
    once, also one not reached yet (test/acc after fit): TensorBoard takes the columns from the first summary of
    a run folder (and the first run's for all runs), so a later one could not add one. Their values are the
    run's own curves of those names, which the model logs; Lightning's log_hyperparams would name only the
    metrics it is given values of, and draw those again as points."""
    writer = logger.experiment.file_writer  # None only where this stage logged nothing and the file is closed
    for summary in hparams(_flat(params), dict.fromkeys(HPARAM_METRICS)) if writer else ():
        writer.add_summary(summary, step)


def _flat(params: Mapping, prefix: str = "") -> dict[str, Any]:
    """Nested options under one level of names (net/class_path, as Lightning logs them); TensorBoard shows a
    number, text or a truth value, so anything else as its text."""
    flat: dict[str, Any] = {}
    for key, value in params.items():
        value = vars(value) if isinstance(value, Namespace) else value
        if isinstance(value, Mapping):
            flat.update(_flat(value, f"{prefix}{key}/"))
        else:
            flat[f"{prefix}{key}"] = value if isinstance(value, bool | int | float | str | None) else str(value)
    return flat


def log_at_checkpoint_step(trainer: L.Trainer, checkpoint: dict) -> None:
    """Lightning logs a stage's metrics (and `epoch`) at fit_loop.epoch_loop._batches_that_stepped, which only a
    resumed fit restores: a test of a checkpoint would draw its points at step 0, at the start of the run's curves.
    A private attribute, so set here alone; tests/extras/test_pictures.py fails loudly if Lightning changes it."""
    fit = checkpoint.get("loops", {}).get("fit_loop", {}).get("epoch_loop.state_dict", {})
    if "_batches_that_stepped" in fit:
        trainer.fit_loop.epoch_loop._batches_that_stepped = fit["_batches_that_stepped"]


def _hparams(trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
    """The same merge of model and data hyper-parameters that Lightning logs at the start of a run."""
    datamodule = trainer.datamodule
    data_hparams = dict(datamodule.hparams_initial) if datamodule is not None else {}
    # Names with a leading underscore are Lightning's bookkeeping (how to rebuild the model), not settings.
    return {k: v for k, v in {**data_hparams, **pl_module.hparams_initial}.items() if not k.startswith("_")}
