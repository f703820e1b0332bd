"""`python train.py predict` on your own image files: any size, colour or grey, either polarity; broken ones skipped."""

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from project.classifier import ImageClassifier
from project.data import DATASETS
from project.extras.own_images import load_image, load_images
from tests.conftest import FAST_TRAINER, copy_of_run, results, run_cli, run_folder, run_main


def bar_image(size, dark_on_light: bool, mode: str = "L") -> Image.Image:
    """A thick vertical stroke, like a '1', off-centre in a larger picture."""
    width, height = size
    paper, ink = (240, 20) if dark_on_light else (15, 250)
    image = Image.new("L", size, paper)
    for x in range(width // 5, width // 5 + max(2, width // 8)):
        for y in range(height // 6, height - height // 6):
            image.putpixel((x, y), ink)
    return image.convert(mode)


def test_both_polarities_give_the_same_training_format(tmp_path):
    dark = tmp_path / "dark.png"
    light = tmp_path / "light.jpg"
    bar_image((120, 90), dark_on_light=True, mode="RGB").save(dark)
    bar_image((120, 90), dark_on_light=False).save(light, quality=95)
    a, b = load_image(dark), load_image(light)
    assert a.shape == b.shape == (28, 28) and a.dtype == torch.uint8
    assert a.max() == 255 and a[0].max() == 0 and a[:, 0].max() == 0  # light stroke, black border
    assert (a.float() - b.float()).abs().mean() < 8  # JPEG noise aside, the same picture
    ys, xs = torch.nonzero(a > 128, as_tuple=True)
    assert 12 <= ys.float().mean() <= 16 and 12 <= xs.float().mean() <= 16  # centred by its centre of mass
    assert ys.max() - ys.min() + 1 == pytest.approx(20, abs=1)  # the longer side scaled to MNIST's 20 px


def test_unreadable_file_raises_with_its_name(tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(ValueError, match="broken.png: not a readable image"):
        load_image(broken)


def test_predict_command_table_and_csv(mnist_dir, tmp_path):
    done = run_main("--data.data_dir", str(mnist_dir), "--default_root_dir", str(tmp_path / "train"), *FAST_TRAINER)
    assert done.returncode == 0, done.stderr
    ckpt = results(tmp_path / "train")["best_checkpoint"]

    images = tmp_path / "mine"
    images.mkdir()
    bar_image((64, 64), dark_on_light=True).save(images / "a_dark_on_light.png")
    bar_image((200, 150), dark_on_light=False, mode="RGB").save(images / "b_rgb.jpg")
    bar_image((30, 40), dark_on_light=True, mode="LA").save(images / "c_with_alpha.png")
    (images / "d_broken.png").write_bytes(b"garbage")
    (images / "e_notes.txt").write_text("not an image")

    done = run_main("predict", "--ckpt_path", ckpt, "--data.predict_path", str(images))
    assert done.returncode == 0, done.stderr
    skipped = [line for line in done.stderr.splitlines() if line.startswith("skipped ")]
    assert len(skipped) == 2 and "d_broken.png" in skipped[0] and "e_notes.txt" in skipped[1]
    header = next(line for line in done.stdout.splitlines() if line.startswith("file"))
    assert header.split() == ["file", "predicted", "class", "confidence", "top3"]

    # Written into the checkpoint's run folder (one run, one folder).
    rows = list(csv.DictReader((run_folder(tmp_path / "train") / "predictions.csv").read_text().splitlines()))
    assert [r["file"].rsplit("/", 1)[1] for r in rows] == ["a_dark_on_light.png", "b_rgb.jpg", "c_with_alpha.png"]
    # The same predictions computed another way: the image prepared by hand, normalized, through the model.
    model = ImageClassifier.load_from_checkpoint(ckpt).eval()
    mean, std = DATASETS["mnist"].mean, DATASETS["mnist"].std
    classes = DATASETS["mnist"].contract.classes
    for row in rows:
        x = (load_image(images / row["file"].rsplit("/", 1)[1]).float() / 255 - mean) / std
        with torch.no_grad():
            probabilities = model(x[None, None]).softmax(dim=1)[0]
        assert int(row["predicted"]) == probabilities.argmax().item()
        assert row["class"] == classes[int(row["predicted"])]
        assert float(row["confidence"]) == pytest.approx(probabilities.max().item(), abs=1e-4)
        assert len(row["top3"].split("; ")) == 3

    # More images than the terminal's table shows (its `rows`): the first ones and a count; the file has them all.
    done = run_main("predict", "--ckpt_path", ckpt, "--data.predict_path", str(images),
                    "--callbacks.prediction_table.rows", "2")  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    table = lines[lines.index(header) + 1 :]
    assert [line.split()[0].rsplit("/", 1)[1] for line in table[:2]] == ["a_dark_on_light.png", "b_rgb.jpg"]
    assert table[2] == "... 1 more in predictions.csv"
    assert len(list(csv.DictReader((run_folder(tmp_path / "train") / "predictions.csv").open()))) == 3


def test_predict_path_missing_is_one_clear_line(trained, tmp_path):
    _, ckpt = copy_of_run(trained, tmp_path)
    done = run_main("predict", "--ckpt_path", ckpt, "--data.predict_path", str(tmp_path / "nope"))
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith("error: --data.predict_path")


def test_class_names_come_from_the_checkpoints_data_set(tmp_path):
    from tests.idx_files import write_dataset

    write_dataset(tmp_path / "data" / "FashionMNIST" / "raw")
    done = run_main("--data.dataset", "fashion_mnist", "--data.data_dir", str(tmp_path / "data"),
                   "--default_root_dir", str(tmp_path / "train"), *FAST_TRAINER)  # fmt: skip
    assert done.returncode == 0, done.stderr
    image = tmp_path / "shirt.png"
    bar_image((40, 40), dark_on_light=True).save(image)
    done = run_main("predict", "--ckpt_path", results(tmp_path / "train")["best_checkpoint"],
                   "--data.predict_path", str(image))  # fmt: skip
    assert done.returncode == 0, done.stderr
    row = next(csv.DictReader((run_folder(tmp_path / "train") / "predictions.csv").read_text().splitlines()))
    assert row["class"] in DATASETS["fashion_mnist"].contract.classes
    assert run_folder(tmp_path / "train").parent.name == "fashion_mnist_cnn"


def test_a_data_set_chosen_in_a_config_file_wins_over_the_checkpoints(trained, tmp_path):
    """The run's data options are defaults: a --config file that names another data set is obeyed."""
    from tests.idx_files import write_dataset

    _, best = copy_of_run(trained, tmp_path)  # an MNIST run
    write_dataset(tmp_path / "data" / "FashionMNIST" / "raw")
    (tmp_path / "fashion.yaml").write_text(f"data:\n  dataset: fashion_mnist\n  data_dir: {tmp_path / 'data'}\n")
    done = run_main("predict", "--ckpt_path", best, "--config", str(tmp_path / "fashion.yaml"),
                   "--limit_predict_batches", "1", cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    rows = list(csv.DictReader((Path(best).parents[1] / "predictions.csv").read_text().splitlines()))
    assert {row["true"] for row in rows} <= set(DATASETS["fashion_mnist"].contract.classes)


def test_predict_in_several_processes_is_refused_once_before_any_batch(trained, tmp_path):
    """Each DDP process would predict a share of the images and misname its rows: refused, one line from process 0
    (both share the terminal), exit 2, nothing written."""
    logs, ckpt = copy_of_run(trained, tmp_path)
    before = sorted(p for p in logs.rglob("*"))
    done = run_cli("predict", "--ckpt_path", ckpt, "--accelerator", "cpu", "--devices", "2")
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    errors = [line for line in done.stderr.splitlines() if "error:" in line]
    assert errors == ["error: predict makes its table in one process: pass --devices 1 (it takes seconds)"], errors
    assert done.stderr.strip().splitlines()[-1] == errors[0] and "Predicting" not in done.stderr
    assert sorted(p for p in logs.rglob("*")) == before  # no predictions.csv


def sixteen_bit(image: Image.Image) -> Image.Image:
    """The same picture with 16-bit grey values (a scanner's or a microscope's PNG)."""
    return Image.fromarray(np.asarray(image, dtype=np.uint16) * 257)


def test_a_16_bit_image_is_read_as_its_8_bit_twin_and_an_oversized_one_is_skipped(tmp_path, monkeypatch, capsys):
    """A 16-bit grey PNG: convert("L") clipped every value above 255 to white, a blank image; it reads as the same
    picture in 8 bits does. An image past Pillow's decompression-bomb limit is skipped by name, the rest predicted."""
    image = bar_image((64, 48), dark_on_light=True)
    image.save(tmp_path / "eight.png")
    sixteen_bit(image).save(tmp_path / "sixteen.png")
    assert Image.open(tmp_path / "sixteen.png").mode.startswith("I")
    eight, sixteen = load_image(tmp_path / "eight.png"), load_image(tmp_path / "sixteen.png")
    assert sixteen.float().std() > 50 and (eight.int() - sixteen.int()).abs().max() <= 1

    folder = tmp_path / "pictures"
    folder.mkdir()
    image.save(folder / "a_small.png")
    bar_image((200, 200), dark_on_light=True).save(folder / "b_huge.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)  # b_huge.png is then over twice the limit: a bomb
    images, names = load_images(folder)
    assert [Path(name).name for name in names] == ["a_small.png"] and images.shape == (1, 28, 28)
    assert "b_huge.png: not a readable image (DecompressionBombError" in capsys.readouterr().err
