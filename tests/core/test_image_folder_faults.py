"""ImageFolderDataModule reads a folder of pictures as a person sees it (photos upright, hidden files and links as a
file browser shows them) and refuses what cannot work before decoding anything, in one line naming the option."""

import re
import shutil
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from project.data.folder import ImageFolderDataModule, image_files
from project.extras.own_images import load_image, load_images
from tests.conftest import run_main
from tests.image_folders import CLASSES, write_image_folder, write_photo


def upright_pixels(path: Path) -> np.ndarray:
    """The picture as an image viewer shows it (Pillow's own EXIF turn), as (3, height, width)."""
    with Image.open(path) as image:
        return np.asarray(ImageOps.exif_transpose(image).convert("RGB")).transpose(2, 0, 1)


def test_phone_photos_are_sized_and_decoded_upright(tmp_path):
    """JPEGs stored 20 wide and 10 high with EXIF orientation 6 or 8 are shown 10 wide and 20 high: that is the size
    the images are brought to, and each decodes to its upright pixels (the size was the stored one, and every photo
    was turned upright and then stretched to it)."""
    generator = np.random.default_rng(0)
    for split, count in (("train", 4), ("test", 2)):
        for name in ("cat", "dog"):
            for i, orientation in enumerate((6, 6, 8, 1)[:count]):
                upright = generator.integers(0, 256, (20, 10, 3), dtype=np.uint8)
                write_photo(tmp_path / "photos" / split / name / f"{i}.jpg", upright, orientation)
    dm = ImageFolderDataModule(str(tmp_path / "photos"), cache_dir=str(tmp_path / "cache"), val_size=2)
    assert dm.contract.shape == (3, 20, 10)
    dm.setup("fit")
    test_images = dm.test_set.tensors[0]
    assert test_images.shape == (4, 3, 20, 10)
    for image, (_, path) in zip(test_images, dm.files["test"], strict=True):
        assert np.array_equal(image.numpy(), upright_pixels(path)), path  # the same pixels: turned, not stretched


def test_predict_photos_are_read_upright_as_the_folders_are(tmp_path, capsys):
    """own_images (predict's preparation for MNIST) reads a photo through the image folder's decode: an EXIF-turned
    photo gives what its upright twin gives; a broken file is still skipped with its own words."""
    upright = np.zeros((40, 24, 3), dtype=np.uint8)
    upright[4:30, 8:12] = 255  # a tall bar: sideways it would be a wide one
    folder = tmp_path / "digits"
    twin = write_photo(folder / "a_upright.png", upright, 1)
    for orientation in (3, 6, 8):
        turned = write_photo(folder / f"b_{orientation}.png", upright, orientation)
        assert torch.equal(load_image(turned), load_image(twin))
    (folder / "c_broken.png").write_text("not a picture")
    images, names = load_images(folder)
    assert len(names) == 4 and images.shape == (4, 28, 28)
    assert "c_broken.png: not a readable image (UnidentifiedImageError" in capsys.readouterr().err


def test_sizes_that_cannot_fit_in_memory_are_refused_before_decoding(tmp_path, capfd):
    root = write_image_folder(tmp_path / "pictures")
    with pytest.raises(ValueError, match=r"^image_size: 108 images as 3x200000x200000 take 12069\.9 GiB decoded, more "
                                         r"than the [\d.]+ GiB of memory available") as refused:  # fmt: skip
        ImageFolderDataModule(str(root), image_size=200000, cache_dir=str(tmp_path / "cache"))
    total = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text())[1]) * 1024
    assert 0 < float(re.search(r"more than the ([\d.]+) GiB", str(refused.value))[1]) <= total / 2**30
    assert "decoding" not in capfd.readouterr().err and not (tmp_path / "cache").exists()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"image_size": 0}, "image_size must be at least 1 pixel, got 0"),
        ({"image_size": (16, 0)}, "image_size must be at least 1 pixel, got (16, 0)"),
        ({"image_size": -3}, "image_size must be at least 1 pixel, got -3"),
        ({"channels": 2}, "channels must be 1 (grey) or 3 (colour), got 2"),
        ({"channels": 0}, "channels must be 1 (grey) or 3 (colour), got 0"),
        ({"val_size": 0}, "val_size must be above 0 (validation picks the best epoch), got 0"),
        ({"val_size": 72}, "val_size 72 leaves no training images: train/ has 72; choose a smaller value"),
        ({"val_size": 0.999}, "val_size 0.999 leaves no training images: train/ has 72; choose a smaller value"),
    ],
)
def test_impossible_options_are_refused_by_name(tmp_path, options, message):
    root = write_image_folder(tmp_path / "pictures")
    with pytest.raises(ValueError) as refused:
        ImageFolderDataModule(str(root), cache_dir=str(tmp_path / "cache"), **options)
    assert str(refused.value) == message
    assert not (tmp_path / "cache").exists()  # nothing decoded


def one_class(root: Path) -> Path:
    """The folder with its first class only, in train/ and test/."""
    for split in ("train", "test"):
        for name in CLASSES[1:]:
            shutil.rmtree(root / split / name)
    return root


def test_a_folder_of_one_class_is_refused(tmp_path):
    root = one_class(write_image_folder(tmp_path / "pictures"))
    with pytest.raises(ValueError) as refused:
        ImageFolderDataModule(str(root), cache_dir=str(tmp_path / "cache"))
    assert str(refused.value) == (f"data_dir: {root / 'train'} holds one class (red circle); a classifier needs two "
                                  "or more: add a folder of images for each other class")  # fmt: skip


@pytest.mark.parametrize(
    ("change", "options", "line"),
    [
        (None, ["--data.image_size", "0"], "error: --data.image_size must be at least 1 pixel, got 0"),
        (None, ["--data.image_size", "200000"], "error: --data.image_size: 108 images as 3x200000x200000 take "),
        (None, ["--data.val_size", "1000"], "error: --data.val_size 1000 leaves no training images: train/ has 72; "),
        (one_class, [], "error: --data.data_dir: {root}/train holds one class (red circle); a classifier needs two"),
    ],
    ids=["image_size 0", "image_size too big for memory", "val_size not below train/", "one class"],
)
def test_the_cli_names_the_option_in_one_line(tmp_path, change, options, line):
    root = write_image_folder(tmp_path / "pictures")
    if change:
        change(root)
    logs = tmp_path / "logs"
    done = run_main("--data", "ImageFolderDataModule", "--data.data_dir", str(root), *options, "--max_epochs", "1",
                    "--default_root_dir", str(logs), "--data.cache_dir", str(tmp_path / "cache"))  # fmt: skip
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert lines[-1].startswith(line.format(root=root)) and [x for x in lines if "error" in x] == lines[-1:], lines
    assert not any("decoding" in x for x in lines) and not (tmp_path / "cache").exists()
    assert not logs.exists() or not any(p.is_file() for p in logs.rglob("*"))


def no_hang(seconds: int):
    """Raise TimeoutError in this (the main) thread after `seconds`: a link loop must not walk forever."""

    def stop(signum, frame):
        raise TimeoutError(f"still reading the folder after {seconds} s")

    signal.signal(signal.SIGALRM, stop)
    signal.alarm(seconds)


def test_what_a_file_browser_hides_is_not_data(tmp_path, capsys):
    """Hidden files and everything in hidden folders are not images, whatever their suffix: a thumbnails folder of
    real PNGs, macOS's ._ files and .DS_Store, a hidden class folder; a predict folder alike."""
    root = write_image_folder(tmp_path / "pictures")
    before = image_files(root / "train")
    thumbnails = root / "train" / "red circle" / ".thumbnails"
    thumbnails.mkdir()
    Image.new("RGB", (8, 8), "white").save(thumbnails / "0.png")  # a real image, of another size
    (root / "train" / "green bar" / "._0.png").write_bytes(b"\x00\x05\x16\x07AppleDouble")  # macOS resource fork
    (root / "train" / "green bar" / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (root / "train" / ".Trash").mkdir()
    Image.new("RGB", (24, 20), "white").save(root / "train" / ".Trash" / "old.png")
    assert image_files(root / "train") == before
    dm = ImageFolderDataModule(str(root), cache_dir=str(tmp_path / "cache"), predict_path=str(root / "train"))
    assert dm.contract.classes == tuple(sorted(CLASSES))
    dm.setup("predict")
    assert len(dm.predict_names) == 72 and "skipped" not in capsys.readouterr().err  # it tried ._0.png


def test_links_count_once_and_loops_end(tmp_path):
    """A link to a sibling class folder is not a class and a file linked into another class folder is not another
    image (both are counted where they lie); a link to a folder outside is followed; links back up end."""
    root = write_image_folder(tmp_path / "pictures")
    train = root / "train"
    before = image_files(train)
    (train / "red circles").symlink_to(train / "red circle")  # a second name for a class: not a class
    (train / "blue cross" / "green.png").symlink_to(train / "green bar" / "0.png")  # one picture in two classes
    (train / "blue cross" / "again").symlink_to(train / "blue cross")  # a loop
    (train / "green bar" / "up").symlink_to(root)  # a loop through the data folder
    (train / "everything").symlink_to(tmp_path)  # a class folder that holds the data folder
    (train / "self").symlink_to(train / "self")  # a link to itself
    no_hang(60)
    try:
        assert image_files(train) == before
        outside = tmp_path / "elsewhere" / "more circles"
        outside.mkdir(parents=True)
        Image.new("RGB", (24, 20), "red").save(outside / "extra.png")
        (train / "red circle" / "more").symlink_to(outside)  # followed: pictures kept on another disk
        (train / "red circle" / "same").symlink_to(outside)  # the same folder again: once
        dm = ImageFolderDataModule(str(root), cache_dir=str(tmp_path / "cache"))
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, signal.SIG_DFL)
    assert dm.contract.classes == tuple(sorted(CLASSES))
    assert [(name, path) for name, path in dm.files["train"] if path.name == "extra.png"] == [
        ("red circle", train / "red circle" / "more" / "extra.png")
    ]
    assert len(dm.files["train"]) == 73
