"""A fork's own net and data module held against the data contract before the first step: each mistake is the one
line the user sees, and the check leaves a seeded run's random numbers, so its weights, as they were."""

import random

import lightning as L
import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from project.classifier import ImageClassifier
from project.data import DataContract, MNISTDataModule
from project.errors import UserError
from project.extras.startup_check import CheckNetAgainstData
from project.models import MLP
from tests.conftest import FAST_RUN, run_main

CONTRACT = DataContract(tuple("abcdefghij"), (1, 8, 8), (0.5,), (0.25,))
IMAGES, LABELS = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(0)), torch.tensor([0, 3, 9, 2])


class Served(L.LightningDataModule):
    """Serves `batch` as the one batch of every split, under `contract`."""

    def __init__(self, batch, contract: DataContract = CONTRACT) -> None:
        super().__init__()
        self.batch, self.contract = batch, contract

    def train_dataloader(self):
        return DataLoader([self.batch], batch_size=None, collate_fn=lambda batch: batch)  # the batch as it is

    val_dataloader = test_dataloader = train_dataloader


class MyNet(nn.Module):
    """A linear layer from `inputs` pixels to `scores`, its output passed through `then`."""

    def __init__(self, scores: int = 10, inputs: int = 64, then=lambda scores: scores) -> None:
        super().__init__()
        self.layers, self.then = nn.Sequential(nn.Flatten(), nn.Linear(inputs, scores)), then

    def forward(self, images):
        return self.then(self.layers(images))


def line(net: nn.Module, batch, contract: DataContract = CONTRACT, stage: str = "fit") -> str:
    """The mistake the check raises, as a run with this net and a data module serving `batch` would meet it."""
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=[CheckNetAgainstData()])  # fmt: skip
    model = ImageClassifier(net, scheduler=None, num_classes=len(contract.classes))
    with pytest.raises(UserError) as raised:
        getattr(trainer, stage)(model, datamodule=Served(batch, contract))
    return str(raised.value)


def test_a_net_of_another_class_count_is_named_with_the_fix():
    assert line(MyNet(scores=7), (IMAGES, LABELS)) == (
        "MyNet returns 7 scores per image; the data has 10 classes: take `num_classes` in its __init__ (the CLI links "
        "it from the data contract)"
    )


def test_a_net_that_names_its_class_count_otherwise_or_ignores_it_is_told_which():
    class Labels(MyNet):
        def __init__(self, n_classes: int = 7) -> None:
            super().__init__(scores=n_classes)

    class Ignores(MyNet):
        def __init__(self, num_classes: int = 10) -> None:
            super().__init__(scores=7)

    assert line(Labels(), (IMAGES, LABELS)).endswith(
        "the data has 10 classes: rename its `n_classes` to `num_classes`, the name the CLI links from the data "
        "contract"
    )
    assert line(Ignores(), (IMAGES, LABELS)).endswith("it takes `num_classes`: size its last layer from it")

    class Dropouts(MyNet):  # names with "class" and "label" in them that are no class count
        def __init__(self, classifier_dropout: float = 0.1, label_smoothing: float = 0.0) -> None:
            super().__init__(scores=7)

    assert line(Dropouts(), (IMAGES, LABELS)).endswith("take `num_classes` in its __init__ (the CLI links it from the "
                                                         "data contract)")  # fmt: skip


@pytest.mark.parametrize(
    ("then", "returned"),
    [
        (torch.flatten, "a float32 tensor of shape 20"),
        (lambda scores: scores[:1], "a float32 tensor of shape 1x10"),  # one row for the batch
        (lambda scores: (scores, scores), "a tuple of 2 (a float32 tensor of shape 2x10, a float32 tensor of "
                                          "shape 2x10)"),
    ],
    ids=["flattened", "another batch size", "a tuple"],
)  # fmt: skip
def test_scores_not_one_row_per_image_are_named(then, returned):
    assert line(MyNet(then=then), (IMAGES, LABELS)) == (
        f"MyNet returns {returned} for 2 images; a net returns (N, classes) scores, here 2x10: keep the batch "
        "dimension (x.flatten(1), not x.flatten()) and return the scores alone"
    )


def test_the_nets_own_error_names_it_and_the_shape_it_got():
    assert line(MyNet(inputs=784), (IMAGES, LABELS)) == (
        "MyNet failed on a float32 tensor of shape 2x1x8x8: RuntimeError: mat1 and mat2 shapes cannot be multiplied "
        "(2x64 and 784x10); keep the batch dimension (x.flatten(1), not x.flatten()) and size the layers from "
        "`input_shape` in its __init__ (the CLI links it from the data contract: 1x8x8)"
    )


class ViewNet(MyNet):
    """Flattens with x.view, which channels-last images (the default: --model.channels_last) do not allow."""

    def forward(self, images):
        return self.layers[1](images.view(len(images), -1))


def test_a_view_on_channels_last_images_gets_the_flatten_that_works():
    contract = DataContract(tuple("abcdefghij"), (3, 4, 4), (0.5,) * 3, (0.25,) * 3)
    images = torch.randn(4, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=[CheckNetAgainstData()])  # fmt: skip
    model = ImageClassifier(ViewNet(inputs=48), scheduler=None, num_classes=10)  # channels_last: the default
    with pytest.raises(UserError) as raised:
        trainer.fit(model, datamodule=Served((images, LABELS), contract))
    assert str(raised.value).startswith("ViewNet failed on a float32 tensor of shape 2x3x4x4: RuntimeError: view size")
    assert str(raised.value).endswith("; flatten with x.flatten(1) or x.reshape(len(x), -1): the images are "
                                      "channels-last in memory")  # fmt: skip


def test_batches_of_another_shape_than_the_contracts_name_both():
    contract = DataContract(tuple("abcdefghij"), (3, 28, 28), (0.5,) * 3, (0.25,) * 3)
    assert line(MyNet(), (torch.randn(4, 3, 32, 32), LABELS), contract) == (
        "data module Served serves 3x32x32 images while its contract says 3x28x28: make `contract.shape` match what "
        "its batches hold"
    )


@pytest.mark.parametrize(
    ("batch", "served"),
    [
        ({"image": IMAGES, "label": LABELS}, "batches that are a dict with keys 'image', 'label'"),
        ((IMAGES, LABELS, LABELS), "batches that are a tuple of 3 (a float32 tensor of shape 4x1x8x8, an int64 tensor "
                                   "of shape 4, an int64 tensor of shape 4)"),
        (IMAGES, "batches that are a float32 tensor of shape 4x1x8x8"),
    ],
    ids=["a dict", "a 3-tuple", "images alone"],
)  # fmt: skip
def test_batches_that_are_not_images_and_labels_are_named(batch, served):
    assert line(MyNet(), batch) == (
        f"data module Served serves {served}; make its loaders return (images, labels) pairs: float images "
        "(N, C, H, W), int64 class indices (N)"
    )


@pytest.mark.parametrize(
    ("labels", "served"),
    [
        (torch.eye(10)[LABELS], "a float32 tensor of shape 4x10"),  # one-hot rows
        (LABELS.int(), "an int32 tensor of shape 4"),  # cross-entropy takes int64 (or uint8) only
        (LABELS[:3], "an int64 tensor of shape 3"),
    ],
    ids=["one-hot", "int32", "fewer than the images"],
)
def test_labels_that_are_not_class_indices_are_named(labels, served):
    assert line(MyNet(), (IMAGES, labels)) == (
        f"data module Served serves labels that are {served} for 4 images; labels are class indices, one per image, "
        "int64: not one-hot rows or floats"
    )


def test_a_label_outside_the_contracts_classes_is_named():
    assert line(MyNet(), (IMAGES, LABELS + 1)) == (  # numbered from 1
        "data module Served serves label 10; its contract has 10 classes: number them 0..9, in the order of "
        "`contract.classes`"
    )


@pytest.mark.parametrize("stage", ["validate", "test"])
def test_validate_and_test_are_checked_too(stage):
    assert line(MyNet(scores=7), (IMAGES, LABELS), stage=stage).startswith("MyNet returns 7 scores per image")


SEVEN = """
import math
from torch import nn
from torch.utils.data import DataLoader

class Seven(nn.Module):
    '''Sized from the data's input shape, but with 7 classes of its own: it does not take num_classes.'''

    def __init__(self, input_shape: tuple[int, int, int] = (1, 28, 28)) -> None:
        super().__init__()
        self.layers = nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), 7))

    def forward(self, images):
        return self.layers(images)
"""
LATE = """
import lightning as L
from project.data import DataContract

class Late(L.LightningDataModule):
    '''A contract set in setup(): after the CLI has linked it into the model.'''

    def setup(self, stage: str) -> None:
        self.contract = DataContract(("a", "b"), (1, 8, 8), (0.5,), (0.25,))
"""


def test_a_run_of_a_seven_score_net_ends_with_its_line_and_leaves_no_run(mnist_dir, tmp_path, monkeypatch):
    (tmp_path / "seven_net.py").write_text(SEVEN)
    monkeypatch.syspath_prepend(str(tmp_path))
    done = run_main("--model.net", "seven_net.Seven", "--data.data_dir", str(mnist_dir), "--default_root_dir",
                    str(tmp_path / "logs"), *FAST_RUN)  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == (
        "error: Seven returns 7 scores per image; the data has 10 classes: take `num_classes` in its __init__ (the CLI "
        "links it from the data contract)"
    )
    assert not any(path.is_file() for path in (tmp_path / "logs").rglob("*"))


def test_a_contract_set_in_setup_is_named_as_too_late(tmp_path, monkeypatch):
    (tmp_path / "late_data.py").write_text(LATE)
    monkeypatch.syspath_prepend(str(tmp_path))
    done = run_main("--data", "late_data.Late", "--default_root_dir", str(tmp_path / "logs"), *FAST_RUN[:2])
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == (
        "error: data module Late does not meet the data contract: it needs a `contract` attribute, a "
        "project.data.DataContract(classes, shape, mean, std, mirrorable), and has none when it is built (set it in "
        "__init__, or as a property of __init__'s arguments: the CLI links it before setup() runs)"
    )


def generators() -> list:
    return [random.getstate(), np.random.get_state()[1].tolist(), torch.get_rng_state().tolist()]


class Watched(CheckNetAgainstData):
    """The check, with the generators and every module's train/eval mode compared before and after it."""

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        before = generators(), [m.training for m in pl_module.modules()]
        super().on_fit_start(trainer, pl_module)
        self.unchanged = before == (generators(), [m.training for m in pl_module.modules()])


def test_a_seeded_run_trains_the_same_weights_with_the_check_as_without(mnist_dir):
    """The check draws a shuffled order and augments its batch (global generators), and runs a net with dropout."""
    weights, watched = [], Watched()
    for callbacks in ([watched], []):
        L.seed_everything(0, verbose=False)
        model = ImageClassifier(MLP(hidden_sizes=[16], dropout=0.5), scheduler=None)
        model.net.layers[1].eval()  # a part frozen in eval mode stays so
        trainer = L.Trainer(accelerator="cpu", max_epochs=1, limit_train_batches=3, limit_val_batches=0,
                            logger=False, enable_checkpointing=False, enable_progress_bar=False,
                            enable_model_summary=False, callbacks=callbacks)  # fmt: skip
        trainer.fit(model, MNISTDataModule(data_dir=str(mnist_dir), batch_size=32, val_size=100, augment=True))
        weights.append(model.state_dict())
    assert watched.unchanged and weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][key], weights[1][key]) for key in weights[0])
