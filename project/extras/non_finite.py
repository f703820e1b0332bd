"""StopOnNonFiniteLoss: a NaN or infinite training loss caught at the first bad step with a reason."""

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from project.errors import UserError
from project.run.last_checkpoint import LastCheckpoint


class NonFiniteLossError(UserError):
    """The training loss became NaN or infinite."""


class StopOnNonFiniteLoss(Callback):
    """Stops training at the first NaN or Inf loss, before its backward pass can reach the weights.

    The check reads the loss back from the device, a synchronization per step on a GPU: `every_n_steps`
    spaces it out (the weights may then take a few bad steps before training stops).
    """

    def __init__(self, every_n_steps: int = 1) -> None:
        self.every_n_steps = max(1, every_n_steps)

    def on_before_backward(self, trainer: L.Trainer, pl_module: L.LightningModule, loss: torch.Tensor) -> None:
        if trainer.global_step % self.every_n_steps or torch.isfinite(loss).all():
            return
        last = next((c.best_model_path for c in trainer.checkpoint_callbacks if isinstance(c, LastCheckpoint)), "")
        last = last or "none written yet"
        raise NonFiniteLossError(
            f"the training loss became {loss.item()} at step {trainer.global_step} (epoch {trainer.current_epoch}); "
            "training stopped before the weights changed. Likely causes: a learning rate too high (lower "
            "--model.optimizer.lr), no gradient clipping (--gradient_clip_val 1.0), or broken input data. "
            f"Last good checkpoint: {last}"
        )
