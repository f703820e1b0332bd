"""Fork-as-template: a net and a data module of your own, in your own package, chosen by a config file alone."""

import textwrap

import yaml

from project.classifier import ImageClassifier
from tests.conftest import FAST_RUN, results, run_folder, run_main

NET = '''
from torch import Tensor, nn


class TinyNet(nn.Module):
    """A linear classifier on 4x4-pooled images."""

    def __init__(self, width: int = 16, num_classes: int = 10) -> None:
        super().__init__()
        self.layers = nn.Sequential(nn.AvgPool2d(4), nn.Flatten(), nn.Linear(49, width), nn.ReLU(),
                                    nn.Linear(width, num_classes))

    def forward(self, images: Tensor) -> Tensor:
        return self.layers(images)
'''

DATA = '''
import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset


class NoiseDigits(L.LightningDataModule):
    """Random float images whose label is the brightest of ten image rows: a data module of one's own."""

    def __init__(self, count: int = 256, batch_size: int = 32) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.images = torch.rand(count, 1, 28, 28, generator=generator)
        self.labels = self.images[:, 0, :10].mean(dim=2).argmax(dim=1)
        self.batch_size = batch_size

    def _loader(self):
        return DataLoader(TensorDataset(self.images, self.labels), batch_size=self.batch_size)

    train_dataloader = val_dataloader = test_dataloader = _loader
'''


def write_package(root):
    package = root / "my_project"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "nets.py").write_text(textwrap.dedent(NET))
    (package / "data.py").write_text(textwrap.dedent(DATA))


def test_own_net_trains_by_config_alone(mnist_dir, tmp_path, monkeypatch):
    write_package(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))  # as PYTHONPATH would
    config = tmp_path / "tiny.yaml"
    config.write_text("model:\n  net:\n    class_path: my_project.nets.TinyNet\n    init_args:\n      width: 24\n")
    done = run_main(
        "--config",
        str(config),
        "--data.data_dir",
        str(mnist_dir),
        "--default_root_dir",
        str(tmp_path / "logs"),
        *FAST_RUN,
    )
    assert done.returncode == 0, done.stderr
    assert run_folder(tmp_path / "logs").parent.name == "mnist_tinynet"
    saved = yaml.safe_load((run_folder(tmp_path / "logs") / "config.yaml").read_text())
    assert saved["model"]["net"] == {
        "class_path": "my_project.nets.TinyNet",
        "init_args": {"width": 24, "num_classes": 10},
    }
    # ... and its checkpoint loads back without the CLI.
    model = ImageClassifier.load_from_checkpoint(results(tmp_path / "logs")["best_checkpoint"])
    assert type(model.net).__name__ == "TinyNet" and model.net.layers[2].out_features == 24


def test_own_data_module_by_config_alone(tmp_path, monkeypatch):
    write_package(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    config = tmp_path / "noise.yaml"
    config.write_text(
        "data:\n  class_path: my_project.data.NoiseDigits\n  init_args:\n    count: 128\n    batch_size: 32\n"
    )
    done = run_main(
        "--config",
        str(config),
        "--model.net",
        "MLP",
        "--default_root_dir",
        str(tmp_path / "logs"),
        "--max_epochs",
        "1",
        "--enable_progress_bar",
        "false",
    )
    assert done.returncode == 0, done.stderr
    summary = results(tmp_path / "logs")
    assert summary["global_step"] == 4  # 128 images in batches of 32
    assert "test/acc" in summary["metrics"]
