"""CheckNetAgainstData: a fork's own net and data module held against the data contract before the first step, in
milliseconds: one batch of the data through the net on the run's device, each mistake one line naming the class."""

import contextlib
import random
import re

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities.model_helpers import is_overridden
from torch import Tensor, nn

from project.data.contract import DataContract
from project.errors import UserError
from project.run.options import own_parameters

KEEP_BATCH = "keep the batch dimension (x.flatten(1), not x.flatten())"  # the fix of a net that loses it


class CheckNetAgainstData(Callback):
    """The first batch of the stage's loader, moved as a step moves it (the data module's hooks: MNIST's
    normalization), must be (images, labels) of the contract's shape and classes; two of its images then go through
    the net in eval mode, whose scores must be (2, classes). The random generators are left as they were: a seeded
    run trains on the same numbers with the check as without it."""

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Before the sanity check's validation steps. A validation batch where there is one: a new training loader
        # would start worker processes, and take the place in its epoch that a resumed fit's own loader needs.
        validates = is_overridden("val_dataloader", trainer.datamodule, L.LightningDataModule)
        self.check(trainer, pl_module, "val_dataloader" if validates else "train_dataloader")

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn == "validate":  # not each validation of a fit
            self.check(trainer, pl_module, "val_dataloader")

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.check(trainer, pl_module, "test_dataloader")

    def check(self, trainer: L.Trainer, pl_module: L.LightningModule, loader: str) -> None:
        """Under DDP each process checks its own first batch; every process then ends with the first one's mistake,
        so that process 0, which names the mistakes of a run (project/run/errors.py), names one only another met."""
        mistake = None
        try:
            self.check_own_batch(trainer, pl_module, loader)
        except UserError as error:
            if trainer.world_size == 1:
                raise
            mistake = str(error)
        if trainer.world_size > 1:
            mistakes = [None] * trainer.world_size
            torch.distributed.all_gather_object(mistakes, mistake)
            if mistake := next(filter(None, mistakes), None):
                raise UserError(mistake)

    def check_own_batch(self, trainer: L.Trainer, pl_module: L.LightningModule, loader: str) -> None:
        data = trainer.datamodule
        if not isinstance(contract := getattr(data, "contract", None), DataContract):  # loaders given to fit()
            return
        net = pl_module.net if isinstance(getattr(pl_module, "net", None), nn.Module) else pl_module
        name, size, classes = type(data).__name__, tuple(contract.shape), len(contract.classes)
        with random_state_kept(trainer.strategy.root_device):  # an iterator draws its seed and order from them
            if (batch := next(iter(getattr(data, loader)()), None)) is None:
                return
            hooks = data if is_overridden("on_before_batch_transfer", data) else pl_module  # Lightning's choice
            batch = hooks.on_before_batch_transfer(trainer.precision_plugin.convert_input(batch), 0)
            batch = trainer.strategy.batch_to_device(batch)  # and on_after_batch_transfer: normalization
        if not (isinstance(batch, tuple | list) and len(batch) == 2 and all(isinstance(t, Tensor) for t in batch)):
            raise UserError(f"data module {name} serves batches that are {describe(batch)}; make its loaders return "
                            "(images, labels) pairs: float images (N, C, H, W), int64 class indices (N)")  # fmt: skip
        images, labels = batch
        if labels.dtype != torch.int64 or tuple(labels.shape) != (len(images),):
            raise UserError(f"data module {name} serves labels that are {describe(labels)} for {len(images)} images; "
                            "labels are class indices, one per image, int64: not one-hot rows or floats")  # fmt: skip
        if (bad := labels[(labels < 0) | (labels >= classes)]).numel():
            raise UserError(f"data module {name} serves label {bad[0].item()}; its contract has {classes} classes: "
                            f"number them 0..{classes - 1}, in the order of `contract.classes`")  # fmt: skip
        if tuple(images.shape[1:]) != size:
            raise UserError(f"data module {name} serves {shape(images.shape[1:])} images while its contract says "
                            f"{shape(size)}: make `contract.shape` match what its batches hold")  # fmt: skip
        images = images[:2]  # two: a fraction of a step's cost (batch norm in eval mode takes any number)
        if pl_module.hparams.get("channels_last"):  # in the memory order ImageClassifier.forward gives the net
            images = images.contiguous(memory_format=torch.channels_last)
        modes = {module: module.training for module in net.modules()}  # a frozen part may be in eval mode already
        try:
            with torch.no_grad(), trainer.precision_plugin.forward_context():
                scores = net.eval()(images)
        except Exception as error:
            fix = (f"{KEEP_BATCH} and size the layers from `input_shape` in its __init__ (the CLI links it from the "
                   f"data contract: {shape(size)})")  # fmt: skip
            if "view size is not compatible" in str(error):  # x.view(len(x), -1) on channels-last images
                fix = "flatten with x.flatten(1) or x.reshape(len(x), -1): the images are channels-last in memory"
            raise UserError(f"{type(net).__name__} failed on {describe(images)}: {type(error).__name__}: {error}; "
                            f"{fix}") from error  # fmt: skip
        finally:
            for module, training in modes.items():
                module.train(training)
        if not isinstance(scores, Tensor) or scores.ndim != 2 or len(scores) != len(images):
            raise UserError(f"{type(net).__name__} returns {describe(scores)} for {len(images)} images; a net returns "
                            f"(N, classes) scores, here {len(images)}x{classes}: {KEEP_BATCH} and return the scores "
                            "alone")  # fmt: skip
        if scores.shape[1] != classes:
            raise UserError(f"{type(net).__name__} returns {scores.shape[1]} scores per image; the data has "
                            f"{classes} classes: {class_count_fix(type(net))}")  # fmt: skip


def class_count_fix(net: type) -> str:
    """What to change where a net's scores are not one per class: the CLI fills `num_classes` alone, by that name."""
    takes = own_parameters(net)  # its parents' too, where it passes **kwargs on to them
    if "num_classes" in takes:
        return "it takes `num_classes`: size its last layer from it"
    count = r"(n|num|number_of)_?(classes|labels|outputs?)|classes|outputs?"  # n_classes, num_labels, classes, ...
    if other := next((name for name in takes if re.fullmatch(count, name)), None):
        return f"rename its `{other}` to `num_classes`, the name the CLI links from the data contract"
    return "take `num_classes` in its __init__ (the CLI links it from the data contract)"


@contextlib.contextmanager
def random_state_kept(device: torch.device):
    """Python's, NumPy's and torch's generators (the CPU's and the run's GPU's) as they were, after the block."""
    python, numpy = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
        try:
            yield
        finally:
            random.setstate(python)
            np.random.set_state(numpy)


def shape(size) -> str:
    return "x".join(map(str, size)) or "()"


def describe(thing) -> str:
    """What a batch or a net's output is: "a float32 tensor of shape 2x10", "a dict with keys 'image', 'label'"."""
    if isinstance(thing, Tensor):
        dtype = str(thing.dtype).removeprefix("torch.")
        return f"{'an' if dtype.startswith('int') else 'a'} {dtype} tensor of shape {shape(thing.shape)}"
    if isinstance(thing, dict):
        return f"a dict with keys {', '.join(map(repr, thing))}"
    if isinstance(thing, tuple | list):  # the first three items: a list of labels may be long
        return f"a {type(thing).__name__} of {len(thing)} ({', '.join(map(describe, thing[:3]))})"
    return f"a {type(thing).__name__}"
