"""Fork-as-template: a folder of one's own RGB, non-square pictures of 3 classes and a net of one's own, chosen by a
config file alone (no shape or class count written anywhere): train, test, predict on files, export, resume."""

import csv
import io
import textwrap
from pathlib import Path

import numpy as np
import torch
import yaml
from PIL import Image

from project.classifier import ImageClassifier
from project.extras.export import main as export_main
from tests.conftest import read_events, results, run_folder, run_main
from tests.image_folders import CLASSES, write_image_folder

NET = '''
import math

from torch import Tensor, nn


class TinyNet(nn.Module):
    """One conv and a linear layer, sized by the data contract (input_shape, num_classes are linked)."""

    def __init__(self, width: int = 8, input_shape: tuple[int, int, int] = (1, 28, 28), num_classes: int = 10):
        super().__init__()
        if width < 1:
            raise ValueError(f"width must be at least 1, got {width}")
        channels, height, wide = input_shape
        self.layers = nn.Sequential(nn.Conv2d(channels, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                    nn.Flatten(), nn.Linear(width * (height // 2) * (wide // 2), num_classes))

    def forward(self, images: Tensor) -> Tensor:
        return self.layers(images)
'''

DATA = '''
import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset

from project.data import DataContract


class Stripes(L.LightningDataModule):
    """Two-channel 8x12 noise whose label is the brightest of four rows: a data module of one's own."""

    def __init__(self, count: int = 256, batch_size: int = 32) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.images = torch.rand(count, 2, 8, 12, generator=generator)
        self.labels = self.images[:, 0, :4].mean(dim=2).argmax(dim=1)
        self.batch_size = batch_size
        self.contract = DataContract(("top", "second", "third", "fourth"), (2, 8, 12), (0.5, 0.5), (0.29, 0.29))

    def _loader(self):
        return DataLoader(TensorDataset(self.images, self.labels), batch_size=self.batch_size)

    train_dataloader = val_dataloader = test_dataloader = _loader
'''
QUICK = "--max_epochs 1 --enable_progress_bar false --enable_model_summary false --log_every_n_steps 1".split()


def write_package(root):
    package = root / "my_project"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "nets.py").write_text(textwrap.dedent(NET))
    (package / "data.py").write_text(textwrap.dedent(DATA))


def test_own_pictures_and_net_by_config_alone(tmp_path, monkeypatch):
    write_package(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))  # as PYTHONPATH would
    pictures = write_image_folder(tmp_path / "my pictures", per_class=24, size=(24, 20))  # width 24, height 20
    config = tmp_path / "mine.yaml"
    config.write_text(
        "model:\n  scheduler: null\n  net:\n    class_path: my_project.nets.TinyNet\n    init_args:\n      width: 6\n"
        f"data:\n  class_path: ImageFolderDataModule\n  init_args:\n    data_dir: {pictures}\n    batch_size: 16\n"
    )
    logs = tmp_path / "logs"
    done = run_main("--config", str(config), "--default_root_dir", str(logs), *QUICK, "--max_epochs", "4")
    assert done.returncode == 0, done.stderr
    run = run_folder(logs)
    assert run.parent.name == "my_pictures_tinynet"  # named after the data folder and the net
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["model"]["net"] == {"class_path": "my_project.nets.TinyNet", "init_args": {"width": 6}}
    summary = results(logs)
    assert summary["metrics"]["test/acc"] > 0.9  # colour and shape of a mark: learnable in a few steps

    # TensorBoard: the inputs in colour, as the pictures were (the normalization undone), per-class accuracy by name.
    other: dict = {}
    scalars, _ = read_events(run, other)
    grid = np.asarray(Image.open(io.BytesIO(other["images"]["train/inputs"][-1].encoded_image_string)).convert("RGB"))
    marks = grid.reshape(-1, 3)[grid.reshape(-1, 3).max(axis=1) > 200]  # the bright marks, red, green or blue
    assert len(np.unique(marks.argmax(axis=1))) == 3  # all three colours are there
    assert {f"test/acc_class/{name}" for name in CLASSES} <= scalars.keys()

    # The checkpoint keeps the contract; the net was sized from it.
    model = ImageClassifier.load_from_checkpoint(summary["best_checkpoint"], weights_only=True)
    contract = model.hparams.contract
    assert contract["classes"] == sorted(CLASSES) and contract["shape"] == [3, 20, 24]
    assert model.net.layers[-1].out_features == 3 and model.net.layers[0].in_channels == 3

    # predict on files: a folder of new pictures of another size, as the user has them; no data option given.
    new = tmp_path / "new"
    write_image_folder(new, per_class=4, size=(48, 40))
    done = run_main("predict", "--ckpt_path", summary["best_checkpoint"], "--data.predict_path", str(new / "test"),
                    "--enable_progress_bar", "false")  # fmt: skip
    assert done.returncode == 0, done.stderr
    rows = list(csv.DictReader((run / "predictions.csv").read_text().splitlines()))
    assert len(rows) == 6 and {row["class"] for row in rows} <= set(CLASSES)
    right = sum(row["class"] == row["file"].split("/")[-2] for row in rows)
    assert right >= 5, rows  # each file's class folder is its true class

    # A checkpoint copied away from its run folder keeps its data module and options; an unreadable file is skipped.
    away = tmp_path / "shared" / "model.ckpt"
    away.parent.mkdir()
    away.write_bytes(Path(summary["best_checkpoint"]).read_bytes())
    (new / "test" / "not a picture.png").write_text("text")
    done = run_main("predict", "--ckpt_path", str(away), "--data.predict_path", str(new / "test"),
                    "--default_root_dir", str(tmp_path / "elsewhere"), "--enable_progress_bar", "false")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "skipped " in done.stderr and "not a picture.png" in done.stderr
    assert (
        len(list(csv.DictReader(next((tmp_path / "elsewhere").rglob("predictions.csv")).read_text().splitlines()))) == 6
    )
    assert export_main([str(away)]) == 0 and (away.parent / "export" / "model.pt2").is_file()  # beside it

    # export: the example input has the data's shape; the exported program computes what the net does.
    assert export_main([summary["best_checkpoint"], "--out", str(tmp_path / "export")]) == 0
    images = torch.randn(3, 3, 20, 24)
    with torch.no_grad():
        expected = model.net.eval()(images)
        exported = torch.export.load(tmp_path / "export" / "model.pt2").module()(images)
    torch.testing.assert_close(exported, expected)

    # longer: its last.ckpt continues this run, in its folder (no one-cycle schedule: it may run longer).
    steps = summary["global_step"]
    done = run_main("fit", "--ckpt_path", str(run / "checkpoints" / "last.ckpt"), "--config", str(config),
                    "--default_root_dir", str(logs), *QUICK, "--max_epochs", "5")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert run_folder(logs) == run
    last = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] == steps // 4 * 5


def test_own_data_module_by_config_alone(tmp_path, monkeypatch):
    write_package(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    config = tmp_path / "stripes.yaml"
    config.write_text("data:\n  class_path: my_project.data.Stripes\n  init_args:\n    count: 128\n")
    done = run_main("--config", str(config), "--model.net", "MLP", "--default_root_dir", str(tmp_path / "logs"),
                    *QUICK)  # fmt: skip
    assert done.returncode == 0, done.stderr
    summary = results(tmp_path / "logs")
    assert summary["global_step"] == 4  # 128 images in batches of 32
    assert "test/acc" in summary["metrics"]
    assert run_folder(tmp_path / "logs").parent.name == "stripes_mlp"
    model = ImageClassifier.load_from_checkpoint(summary["best_checkpoint"], weights_only=True)
    linears = [m for m in model.net.modules() if isinstance(m, torch.nn.Linear)]
    assert (linears[0].in_features, linears[-1].out_features) == (2 * 8 * 12, 4)  # sized by the contract


def test_a_forks_net_error_names_its_option(tmp_path, monkeypatch):
    write_package(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    done = run_main("--model.net", "my_project.nets.TinyNet", "--model.net.width", "0", "--default_root_dir",
                    str(tmp_path / "logs"), *QUICK)  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == "error: --model.net.width must be at least 1, got 0"
