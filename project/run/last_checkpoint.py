"""`last.ckpt`, the checkpoint a crashed run resumes from: written after every epoch, and every N steps on request.

Lightning 2.6's `ModelCheckpoint(save_last=True)` rewrites last.ckpt only when a best-k checkpoint is saved at
the same step, so once validation accuracy stops improving, `last.ckpt` stops following the run (and a resume
would repeat epochs). A ModelCheckpoint without a monitor, named "last", saves at each epoch end instead.
"""

from lightning.pytorch.callbacks import ModelCheckpoint

LAST = "last"


class LastCheckpoint(ModelCheckpoint):
    """Overwrites <run folder>/checkpoints/last.ckpt at the end of every epoch (after its validation, if any): also
    of epochs without validation (--check_val_every_n_epoch 3) or with more than one (--val_check_interval 0.5),
    where Lightning's own choice would save after validations only."""

    def __init__(self) -> None:
        super().__init__(filename=LAST, monitor=None, save_top_k=1, enable_version_counter=False,
                         save_on_train_epoch_end=True)  # fmt: skip


class StepCheckpoint(ModelCheckpoint):
    """Overwrites the same last.ckpt every `every_n_steps` optimizer steps too (0: off, the default), for
    epochs too long to lose. A resume from the middle of an epoch trains on the rest of that epoch's batches in
    their order (the loader's state is in the checkpoint): the weights of a run that never stopped."""

    def __init__(self, every_n_steps: int = 0) -> None:
        if every_n_steps < 0:
            raise ValueError(f"every_n_steps must be 0 (off) or more, got {every_n_steps}")
        # every_n_epochs=0: the epoch ends are LastCheckpoint's (one callback cannot do both cadences).
        on = every_n_steps > 0
        super().__init__(
            filename=LAST,
            monitor=None,
            save_top_k=1 if on else 0,
            every_n_train_steps=every_n_steps,
            every_n_epochs=0,
            enable_version_counter=False,
        )
        self.every_n_steps = every_n_steps
