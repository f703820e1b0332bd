"""Learning on real data: the full Fashion-MNIST from Debian's `dataset-fashion-mnist`, when it is installed."""

from pathlib import Path

import pytest

from project.data import DATASETS, MNISTDataModule
from tests.conftest import results, run_cli

FASHION = Path("/usr/share/datasets/fashion-mnist")
needs_fashion = pytest.mark.skipif(
    not (FASHION / "train-images-idx3-ubyte.gz").exists(), reason="apt-get install dataset-fashion-mnist"
)


@needs_fashion
def test_normalization_constants_match_the_training_pixels():
    dm = MNISTDataModule(dataset="fashion_mnist", data_dir=str(FASHION))
    dm.setup("fit")
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (55000, 5000, 10000)
    pixels = dm.normalize(dm.train_set.tensors[0]).flatten()  # 55k of the 60k: the constants hold within 0.01
    assert pixels.mean().item() == pytest.approx(0, abs=0.01)
    assert pixels.std().item() == pytest.approx(1, abs=0.01)
    assert DATASETS["fashion_mnist"].mean == pytest.approx(0.2860, abs=1e-4)


@pytest.mark.slow
@needs_fashion
def test_default_cnn_learns_fashion_mnist(tmp_path):
    """One epoch of the default recipe (the full six: README, Results), at least 87% after it."""
    done = run_cli(
        "--data.dataset",
        "fashion_mnist",
        "--data.data_dir",
        str(FASHION),
        "--max_epochs",
        "1",
        "--default_root_dir",
        str(tmp_path),
        "--enable_progress_bar",
        "false",
        "--seed_everything",
        "0",
    )
    assert done.returncode == 0, done.stderr
    summary = results(tmp_path)
    assert summary["metrics"]["test/acc"] >= 0.87, summary
    assert summary["metrics"]["val/acc_best"] >= 0.87, summary
