"""Export to torch.export and ONNX: the exported files compute what the PyTorch net computes, and are whole."""

import json

import pytest
import torch

from project.classifier import ImageClassifier
from project.extras.export import main as export_main
from tests.conftest import results


@pytest.fixture
def checkpoint(trained) -> str:
    root, _ = trained
    return results(root / "logs")["best_checkpoint"]


def test_export_matches_pytorch(checkpoint, tmp_path, capsys):
    assert export_main([checkpoint, "--out", str(tmp_path)]) == 0  # in this process: the process is not the point
    stdout = capsys.readouterr().out
    printed = {line.split(":")[0]: float(line.rsplit("=", 1)[1]) for line in stdout.splitlines() if "=" in line}
    assert set(printed) == {"torch.export", "onnx"} and all(d < 1e-4 for d in printed.values())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx", "model.pt2", "preprocessing.json"]

    # Checked again here, on another batch size than the one exported with (the batch axis is dynamic).
    net = ImageClassifier.load_from_checkpoint(checkpoint).net.eval()
    images = torch.randn(5, 1, 28, 28)
    with torch.no_grad():
        expected = net(images)
        torch.testing.assert_close(torch.export.load(tmp_path / "model.pt2").module()(images), expected)
    onnxruntime = pytest.importorskip("onnxruntime")
    assert not (tmp_path / "model.onnx.data").exists()  # one self-contained file
    session = onnxruntime.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, {"images": images.numpy()})
    torch.testing.assert_close(torch.from_numpy(logits), expected, rtol=1e-4, atol=1e-5)
    preprocessing = json.loads((tmp_path / "preprocessing.json").read_text())
    assert preprocessing["mean"] == [0.1307] and preprocessing["classes"][0] == "0 - zero"
    assert preprocessing["shape"] == [1, 28, 28]


def test_export_missing_checkpoint_is_one_clear_line(tmp_path, capsys):
    assert export_main([str(tmp_path / "none.ckpt")]) == 2
    assert capsys.readouterr().err.strip() == (
        f"error: checkpoint {tmp_path / 'none.ckpt'}: no such file. Checkpoints are in <run folder>/checkpoints/ "
        "(e.g. logs/mnist_cnn/version_0/checkpoints/last.ckpt)"
    )
    assert not (tmp_path / "export").exists()


@pytest.mark.parametrize(("out", "why"), [("a_file", "File exists"), ("a_file/export", "Not a directory")])
def test_export_into_a_path_that_cannot_be_a_folder_is_one_clear_line(checkpoint, tmp_path, capsys, out, why):
    (tmp_path / "a_file").write_text("kept")
    assert export_main([checkpoint, "--out", str(tmp_path / out)]) == 2
    line = f"error: cannot use ({tmp_path / out}): {why}; pass another path, then run again"
    assert capsys.readouterr().err.strip().splitlines()[-1] == line
    assert [p.name for p in tmp_path.iterdir()] == ["a_file"] and (tmp_path / "a_file").read_text() == "kept"


def test_export_of_a_checkpoint_of_a_model_built_in_python_is_one_clear_line(tmp_path, capsys):
    """ImageClassifier(net=MLP()) saved by a Trainer keeps the net's weights, not which net: export cannot build
    it (it was a TypeError about a missing argument)."""
    import lightning as L

    from project.models import MLP

    trainer = L.Trainer(logger=False, enable_checkpointing=False, max_epochs=0, enable_progress_bar=False)
    trainer.strategy.connect(ImageClassifier(net=MLP()))
    trainer.save_checkpoint(tmp_path / "python.ckpt")
    assert export_main([str(tmp_path / "python.ckpt"), "--out", str(tmp_path / "out")]) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith(f"error: checkpoint {tmp_path / 'python.ckpt'} does not name its net"), line
    assert not (tmp_path / "out").exists()
