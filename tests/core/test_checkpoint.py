"""A checkpoint written by the CLI loads back in plain Python, without the CLI, and predicts."""

import pytest
import torch

from project.classifier import ImageClassifier
from project.data import MNISTDataModule
from project.models import MLP
from tests.conftest import FAST_RUN, results, run_main


def accuracy(model: ImageClassifier, data_dir) -> float:
    """Test accuracy computed by hand: normalize with the data module, predict, compare with the labels."""
    dm = MNISTDataModule(data_dir=str(data_dir), val_size=100)
    dm.setup("test")
    images, labels = dm.test_set.tensors
    model.eval()
    with torch.no_grad():
        probabilities = model.predict_step(dm.normalize(images), 0)
    return (probabilities.argmax(dim=1) == labels).float().mean().item()


def test_load_from_checkpoint_without_cli(mnist_dir, tmp_path):
    # A width other than the default: the checkpoint must carry the net's configuration, not only weights.
    done = run_main(
        "--model.net",
        "MLP",
        "--model.net.hidden_sizes",
        "[48]",
        "--data.data_dir",
        str(mnist_dir),
        "--default_root_dir",
        str(tmp_path / "logs"),
        *FAST_RUN,
        "--limit_test_batches",
        "1.0",
    )
    assert done.returncode == 0, done.stderr
    summary = results(tmp_path / "logs")

    model = ImageClassifier.load_from_checkpoint(summary["best_checkpoint"], map_location="cpu")
    assert isinstance(model.net, MLP)
    assert model.net.layers[1].out_features == 48
    assert accuracy(model, mnist_dir) == pytest.approx(summary["metrics"]["test/acc"], abs=1e-6)


def test_plain_python_model_saves_and_loads(tmp_path):
    """Outside the CLI the net is an object, not a config: pass it again when loading."""
    import lightning as L

    model = ImageClassifier(net=MLP(hidden_sizes=[16]))
    trainer = L.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False, max_epochs=0)
    trainer.strategy.connect(model)
    path = tmp_path / "plain.ckpt"
    trainer.save_checkpoint(path)
    loaded = ImageClassifier.load_from_checkpoint(path, net=MLP(hidden_sizes=[16]))
    for name, value in model.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[name]), name
