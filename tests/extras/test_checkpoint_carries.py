"""A checkpoint carries what predict and export need (the data contract: classes, shape, mean, std): both work once
the training data is deleted, from a run folder moved elsewhere, and from a checkpoint copied alone."""

import csv
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from project.classifier import ImageClassifier
from project.data.folder import decode
from project.extras.export import main as export_main
from project.extras.own_images import load_images
from tests.conftest import FAST_TRAINER, results, run_main
from tests.idx_files import write_dataset
from tests.image_folders import write_image_folder


@dataclass
class Run:
    kind: str
    ckpt: Path  # the best checkpoint, in its run folder under root/logs
    pictures: Path  # files to predict, none of them from the training data


@pytest.fixture(scope="module", params=["image folder", "mnist"])
def run(request, tmp_path_factory) -> Run:
    """One tiny run per data kind, its training data deleted once it is trained."""
    root = tmp_path_factory.mktemp(request.param.replace(" ", "_"))
    data, pictures = root / "data", root / "pictures"
    pictures.mkdir()
    if request.param == "image folder":
        write_image_folder(data)
        shutil.copy(data / "test" / "red circle" / "0.png", pictures / "a.png")
        shutil.copy(data / "test" / "green bar" / "1.jpg", pictures / "b.jpg")
        args = ["--data", "ImageFolderDataModule", "--data.data_dir", str(data), *FAST_TRAINER,
                "--data.val_size", "0.1"]  # fmt: skip
    else:
        write_dataset(data / "MNIST" / "raw")
        Image.fromarray(np.eye(40, dtype=np.uint8) * 255).save(pictures / "a.png")
        args = ["--data.data_dir", str(data), *FAST_TRAINER]
    Image.new("L", (50, 36), 200).save(pictures / "c_grey.png")  # another size and channel count than trained on
    done = run_main(*args, "--default_root_dir", str(root / "logs"))
    assert done.returncode == 0, done.stderr
    shutil.rmtree(data)
    return Run(request.param, Path(results(root / "logs")["best_checkpoint"]), pictures)


def predict(run: Run, ckpt: Path, cwd: Path) -> None:
    """`train.py predict` from cwd: the predictions.csv it wrote, read back and checked against the checkpoint's net
    on the files brought to the checkpoint's contract (not to anything of the deleted data)."""
    done = run_main("predict", "--ckpt_path", str(ckpt), "--data.predict_path", str(run.pictures),
                    "--default_root_dir", str(cwd / "logs"), cwd=cwd)  # fmt: skip
    assert done.returncode == 0, done.stderr
    written = Path(next(line for line in done.stdout.splitlines() if line.startswith("wrote ")).split(" ", 1)[1])
    rows = list(csv.DictReader(written.read_text().splitlines()))
    model = ImageClassifier.load_from_checkpoint(ckpt, map_location="cpu", weights_only=True).eval()
    contract = model.hparams.contract
    if run.kind == "mnist":
        images, names = load_images(run.pictures, "mnist")
    else:
        names = [str(path) for path in sorted(run.pictures.iterdir())]
        (channels, height, width) = contract["shape"]
        images = torch.from_numpy(np.stack([decode(Path(name), (width, height), channels) for name in names]))
    images = images.unsqueeze(1) if images.ndim == 3 else images
    mean, std = (torch.tensor(contract[key]).view(1, -1, 1, 1) for key in ("mean", "std"))
    with torch.no_grad():
        probabilities = model.predict_step((images.float() / 255 - mean) / std, 0)
    assert [row["file"] for row in rows] == names
    assert [row["class"] for row in rows] == [contract["classes"][i] for i in probabilities.argmax(1)]
    assert [float(row["confidence"]) for row in rows] == pytest.approx(probabilities.max(1).values.tolist(), abs=1e-4)
    assert all(name.rsplit(" ", 1)[0] in contract["classes"] for row in rows for name in row["top3"].split("; "))


def export(ckpt: Path, out: Path) -> None:
    """export.py's files: they load, and compute what the checkpoint's net computes."""
    assert export_main([str(ckpt), "--out", str(out)]) == 0
    model = ImageClassifier.load_from_checkpoint(ckpt, map_location="cpu", weights_only=True)
    net, shape = model.net.eval(), model.hparams.contract["shape"]
    images = torch.randn(3, *shape, generator=torch.Generator().manual_seed(1))  # another batch size than exported
    with torch.no_grad():
        expected = net(images)
        assert (torch.export.load(out / "model.pt2").module()(images) - expected).abs().max() < 1e-5
    onnxruntime = pytest.importorskip("onnxruntime")
    session = onnxruntime.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    assert (torch.from_numpy(session.run(None, {"images": images.numpy()})[0]) - expected).abs().max() < 1e-5


def test_predict_and_export_after_the_training_data_is_deleted(run, tmp_path):
    predict(run, run.ckpt, tmp_path)
    export(run.ckpt, tmp_path / "export")


def test_predict_and_export_from_a_moved_run_folder(run, tmp_path):
    moved = tmp_path / "elsewhere" / "my run"  # another place and name; its config.yaml names the deleted data
    shutil.copytree(run.ckpt.parents[1], moved)
    (moved / "predictions.csv").unlink(missing_ok=True)
    predict(run, moved / "checkpoints" / run.ckpt.name, tmp_path)
    assert (moved / "predictions.csv").is_file()
    export(moved / "checkpoints" / run.ckpt.name, moved / "export")


def test_predict_and_export_from_a_checkpoint_copied_alone(run, tmp_path):
    shipped = tmp_path / "shipped" / "model.ckpt"
    shipped.parent.mkdir()
    shutil.copy(run.ckpt, shipped)
    predict(run, shipped, tmp_path)  # into a new run folder under tmp_path/logs
    export(shipped, shipped.parent / "export")


def test_a_missing_predict_path_is_one_line_and_writes_nothing(run, tmp_path):
    nope = tmp_path / "nope"
    fails(run, ["--data.predict_path", str(nope)], tmp_path,
          f"error: --data.predict_path {nope} does not exist; give an image file or a folder of images")  # fmt: skip


@pytest.mark.parametrize("run", ["image folder"], indirect=True)  # MNIST's missing files would be downloaded
def test_predict_on_the_deleted_test_set_is_one_line_and_writes_nothing(run, tmp_path):
    data = run.ckpt.parents[4] / "data"
    fails(run, [], tmp_path, f"error: --data.data_dir {data} does not exist; give the folder that holds train/ and "
                             "test/ (predict without predict_path runs on its test/)")  # fmt: skip


def fails(run: Run, args: list[str], tmp_path: Path, error: str) -> None:
    """predict ends with exactly this error line, exit status 2, and writes nothing."""
    logs, before = run.ckpt.parents[3], files(run.ckpt.parents[3])
    done = run_main("predict", "--ckpt_path", str(run.ckpt), *args, "--default_root_dir", str(tmp_path / "logs"),
                    cwd=tmp_path)  # fmt: skip
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert [line for line in lines if line.startswith("error:")] == lines[-1:] == [error]
    assert "Traceback" not in done.stderr and files(logs) == before and not any(tmp_path.iterdir())


def files(folder: Path) -> dict[Path, int]:
    return {path: path.stat().st_mtime_ns for path in folder.rglob("*") if path.is_file()}


@pytest.mark.parametrize("run", ["image folder"], indirect=True)
def test_predict_with_ckpt_path_last_after_the_training_data_is_deleted(run, tmp_path):
    """`--ckpt_path last` names the run by its data options, as training did: the folder they name may be gone."""
    data, logs = run.ckpt.parents[4] / "data", run.ckpt.parents[3]
    done = run_main("predict", "--data", "ImageFolderDataModule", "--data.data_dir", str(data), *FAST_TRAINER,
                    "--data.val_size", "0.1", "--ckpt_path", "last", "--data.predict_path", str(run.pictures),
                    "--default_root_dir", str(logs), cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    written = (run.ckpt.parents[1] / "predictions.csv").read_text().splitlines()
    assert [row.split(",")[0] for row in written[1:]] == [str(p) for p in sorted(run.pictures.iterdir())]
    (run.ckpt.parents[1] / "predictions.csv").unlink()


@pytest.mark.parametrize("run", ["image folder"], indirect=True)
def test_predict_on_a_test_set_with_a_class_the_checkpoint_lacks_is_one_line(run, tmp_path):
    """The classes are the checkpoint's: a class folder added since (sorted first, so every label would shift)."""
    data = run.ckpt.parents[4] / "changed"  # beside the run's logs (predict writes nothing into tmp_path)
    write_image_folder(data)
    shutil.copytree(data / "test" / "green bar", data / "test" / "aaa new")
    fails(run, ["--data.data_dir", str(data)], tmp_path, "error: --data.data_dir: test/ has classes the checkpoint was "
          "not trained on: aaa new; every test class must be a training class")  # fmt: skip
