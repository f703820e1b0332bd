"""ImageClassifier: the LightningModule that wraps any nn.Module mapping images to class scores."""

import math
import warnings
from typing import Any, Literal

import torch
from lightning import LightningModule
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn
from torch.nn import functional as F
from torchmetrics import MaxMetric, MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from project.data.contract import contract_of
from project.models import CNN, MLP
from project.optim import OneCycle, needs_monitor, parameter_groups, takes


class ImageClassifier(LightningModule):
    """Training of `net` for classification: loss, penalties, accuracy metrics, the optimizer and schedule chosen.
    The defaults are the default recipe's, but for the optimizer's own arguments (configs/base.yaml)."""

    def __init__(self, net: CNN | MLP | nn.Module, optimizer: OptimizerCallable = torch.optim.AdamW,
                 scheduler: LRSchedulerCallable | None = OneCycle, num_classes: int = 10,
                 loss: Literal["cross_entropy", "mse"] = "cross_entropy", label_smoothing: float = 0.14,
                 l1: float = 0.0, param_groups: list[dict[str, Any]] | None = None, exempt_bias_and_norm: bool = True,
                 compile: bool = False, channels_last: bool = True, eval_flip: bool = False,
                 contract: dict[str, Any] | None = None) -> None:  # fmt: skip
        """
        Args:
            net: the network, e.g. project.models.CNN or MLP.
            optimizer: called with the parameters, e.g. functools.partial(torch.optim.SGD, lr=0.1).
            scheduler: called with the optimizer; stepped per epoch, or per step where it takes total_steps.
            num_classes: number of classes the net predicts (linked from the data contract).
            loss: cross_entropy on the logits, or mse between the softmax probabilities and one-hot targets.
            label_smoothing: cross-entropy's label smoothing (0 = off).
            l1: coefficient of the L1 penalty l1 * sum(|w|), logged as train/l1 (L2 is the optimizer's weight_decay).
            param_groups: optimizer options per parameter name prefix, e.g. [{"prefix": "features", "lr": 0.01}].
            exempt_bias_and_norm: no weight decay on biases and normalization weights.
            compile: run the net through torch.compile (pays off on GPUs, after the compilation at the start).
            channels_last: channels-last memory order for conv weights and inputs (faster on GPUs and with oneDNN).
            eval_flip: average the scores of each image and its mirror image in evaluation, where it keeps its class.
            contract: what the data serves (project.data.DataContract as a dict), linked from the data module and
                kept in checkpoints: export, predict and the pictures read class names, shape and normalization here."""
        super().__init__()
        if not 0 <= label_smoothing <= 1:  # found now, not at the first training step
            raise ValueError(f"label_smoothing must be between 0 and 1, got {label_smoothing}")
        # Under the CLI the hyper-parameters are the config (class paths), so load_from_checkpoint rebuilds the net.
        # Built in Python they are objects, which a weights-only checkpoint cannot hold: left out, passed again.
        with warnings.catch_warnings():  # Lightning's UserWarning that a net object is saved anyway: intended
            warnings.simplefilter("ignore", UserWarning)
            self.save_hyperparameters()
        for name in ("net", "optimizer", "scheduler"):
            if not isinstance(self.hparams[name], dict | None):
                del self.hparams[name]
        self.net = net
        self.optimizer, self.scheduler = optimizer, scheduler
        # Separate metric objects per stage: each keeps its own running state on the device.
        self.train_acc = MulticlassAccuracy(num_classes, average="micro")
        self.val_acc = MulticlassAccuracy(num_classes, average="micro")
        self.test_acc = MulticlassAccuracy(num_classes, average="micro")
        self.val_loss, self.test_loss = MeanMetric(), MeanMetric()
        self.val_acc_best = MaxMetric()
        self._compiled_net: nn.Module | None = None
        self.mirror_at_eval = False  # set in setup() from eval_flip and the data contract

    def setup(self, stage: str) -> None:
        # Built in Python, not by the CLI: the contract is the data module's, where it has one.
        if self.hparams.contract is None and hasattr(self.trainer.datamodule, "contract"):
            self.hparams.contract = contract_of(self.trainer.datamodule)
        self.mirror_at_eval = self.hparams.eval_flip and bool((self.hparams.contract or {}).get("mirrorable"))

    def configure_model(self) -> None:
        # Runs once the module is on its device. The compiled net is kept outside the registered submodules
        # (object.__setattr__), so state_dict keys and checkpoints stay those of the plain net.
        if self.hparams.channels_last:
            self.net.to(memory_format=torch.channels_last)
        if self.hparams.compile and self._compiled_net is None:
            object.__setattr__(self, "_compiled_net", torch.compile(self.net))

    def criterion(self, logits: Tensor, labels: Tensor) -> Tensor:
        if self.hparams.loss == "mse":
            targets = F.one_hot(labels, logits.shape[1]).to(logits.dtype)
            return F.mse_loss(logits.softmax(dim=1), targets)
        return F.cross_entropy(logits, labels, label_smoothing=self.hparams.label_smoothing)

    def forward(self, images: Tensor) -> Tensor:
        if self.hparams.channels_last and images.ndim == 4:
            images = images.contiguous(memory_format=torch.channels_last)
        net = self.net if self._compiled_net is None else self._compiled_net
        if self.mirror_at_eval and not self.training:
            return (net(images) + net(images.flip(-1))) / 2
        return net(images)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        images, labels = batch
        logits = self(images)
        loss = self.criterion(logits, labels)
        penalty = None
        if self.hparams.l1 > 0:
            penalty = self.hparams.l1 * sum(p.abs().sum() for p in self.net.parameters())
            loss = loss + penalty
        # update(), not forward(): forward would also compute the accuracy of this batch alone, every step.
        self.train_acc.update(logits, labels)
        if self.logger_writes_this_step():
            self.log("train/loss", loss, prog_bar=True)
            if penalty is not None:
                self.log("train/l1", penalty)
        return loss

    def logger_writes_this_step(self) -> bool:
        """Whether Lightning hands this step's logged values to the logger (every log_every_n_steps steps): a
        self.log call on every step made an MLP epoch on Fashion-MNIST about 14% slower on a 2-core CPU, and values
        logged on other steps are never written. Lightning has no public test for it (its LearningRateMonitor uses a
        private one), so its rule is repeated here (a test fails, naming this, if it changes)."""
        try:
            trainer = self.trainer
        except RuntimeError:  # called by hand, outside a Trainer: log as usual
            return True
        every = trainer.log_every_n_steps
        return bool(trainer.fast_dev_run) or (every > 0 and (self.global_step + 1) % every == 0)

    def on_train_epoch_end(self) -> None:
        # Logged once per epoch rather than from every step: each self.log call costs Python time per step.
        self.log("train/acc", self.train_acc)

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self.evaluate(batch, "val", self.val_loss, self.val_acc)

    def on_validation_epoch_end(self) -> None:
        if not self.trainer.sanity_checking:  # the check before training is no validation epoch
            self.val_acc_best(self.val_acc.compute())
            self.log("val/acc_best", self.val_acc_best.compute(), sync_dist=True)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # A metric's state is not in the state_dict: the best so far is kept beside it, for a resumed run.
        if self.val_acc_best.update_called:
            checkpoint["val_acc_best"] = float(self.val_acc_best.compute())
        if self._trainer is not None and self.trainer.datamodule is not None:  # a checkpoint away from its run folder
            data = type(self.trainer.datamodule)
            checkpoint["datamodule_class_path"] = f"{data.__module__}.{data.__qualname__}"

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        return self.evaluate(batch, "test", self.test_loss, self.test_acc)  # for TestPictures: the logits

    def evaluate(self, batch: tuple[Tensor, Tensor], stage: str, loss: MeanMetric, acc: MulticlassAccuracy) -> Tensor:
        images, labels = batch
        logits = self(images)
        loss(self.criterion(logits, labels), len(labels))  # weighted: a mean over images, not over batches
        acc(logits, labels)
        self.log(f"{stage}/loss", loss, prog_bar=stage == "val")
        self.log(f"{stage}/acc", acc, prog_bar=stage == "val")
        return logits

    def predict_step(self, batch: Tensor | tuple[Tensor, ...], batch_idx: int) -> Tensor:
        """Class probabilities (N, classes) for a batch of normalized images (labels, if any, are ignored)."""
        images = batch[0] if isinstance(batch, (tuple, list)) else batch
        return self(images).softmax(dim=-1)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if "val_acc_best" in checkpoint:
            self.val_acc_best.update(torch.tensor(checkpoint["val_acc_best"], device=self.device))
        # Steps a resumed OneCycle/WarmupCosine schedule was planned for, checked in configure_optimizers.
        self.planned_steps = next((s.get("total_steps") for s in checkpoint.get("lr_schedulers", [])), None)

    def configure_optimizers(self):
        groups = parameter_groups(self.net, self.hparams.param_groups, self.hparams.exempt_bias_and_norm)
        optimizer = self.optimizer(groups)
        bad_lr = next((g["lr"] for g in optimizer.param_groups if float(g.get("lr", 1)) <= 0), None)
        if bad_lr is not None:
            raise ValueError(f"optimizer.lr must be above 0, got {bad_lr}")
        if self.scheduler is None:
            return optimizer
        if takes(self.scheduler, "total_steps"):
            # OneCycle, WarmupCosine: they need the number of optimizer steps, which only the Trainer knows
            # (it counts gradient accumulation), and step after each of them.
            if math.isinf(self.trainer.estimated_stepping_batches):
                raise ValueError("scheduler: the learning-rate schedule spans the whole run (OneCycle, warm-up + "
                                 "cosine), but the run has no end (max_epochs -1): give the Trainer max_epochs or "
                                 "max_steps, or another scheduler")  # fmt: skip
            total_steps = int(self.trainer.estimated_stepping_batches)
            if (planned := getattr(self, "planned_steps", None)) is not None and planned != total_steps:
                raise ValueError(f"scheduler: the checkpoint's learning-rate schedule was planned for {planned} steps, "
                                 f"this run has {total_steps}: a OneCycle or warm-up-cosine schedule cannot be "
                                 "stretched. Resume with the options the run started with (the same command: "
                                 "max_epochs, limit_train_batches, batch size, gradient accumulation)")  # fmt: skip
            scheduler = self.scheduler(optimizer, total_steps=total_steps)
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
        scheduler = self.scheduler(optimizer)
        monitor = needs_monitor(scheduler)  # ReduceLROnPlateau: stepped with a validation metric
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "monitor": monitor}}
