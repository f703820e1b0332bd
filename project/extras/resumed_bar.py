"""ResumedEpochBar: a run resumed in the middle of an epoch shows that epoch's bar as the run did before it stopped
("Epoch 1: 12/29"), not "Training: 12/?". Lightning calls no epoch-start hook for an epoch it resumes, and that hook
is where its progress bar learns the epoch's number and length."""

import lightning as L
from lightning.pytorch.callbacks import Callback, TQDMProgressBar


class ResumedEpochBar(Callback):
    """Gives Lightning's TQDM bar the epoch-start call it missed, at the resumed epoch's first batch."""

    resumed = False

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.resumed = trainer.fit_loop.epoch_loop.batch_progress.current.ready > 0  # batches of it done before

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        # Here, not in on_train_start: Lightning makes its bar after the other callbacks' on_train_start.
        if self.resumed and isinstance(bar := trainer.progress_bar_callback, TQDMProgressBar):
            bar.on_train_epoch_start(trainer, pl_module)
            bar.train_progress_bar.n = bar.train_progress_bar.initial = batch_idx  # the rate: of this run's batches
        self.resumed = False
