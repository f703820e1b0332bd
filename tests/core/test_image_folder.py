"""ImageFolderDataModule: the contract it serves, computed another way; its cache, reused and renewed; a data folder
that is never written (read-only, shared)."""

import os
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from project.data.folder import ImageFolderDataModule
from tests.forkserver import forked
from tests.image_folders import CLASSES, write_image_folder


def snapshot(folder):
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.rglob("*"))}


def test_contract_is_the_folders_classes_shape_and_training_statistics(tmp_path):
    root = write_image_folder(tmp_path / "pictures", size=(24, 20))
    dm = ImageFolderDataModule(str(root), cache_dir=str(tmp_path / "cache"), val_size=0.25)
    contract = dm.contract
    assert contract.classes == tuple(sorted(CLASSES)) and contract.shape == (3, 20, 24)
    dm.setup("fit")
    assert len(dm.train_set) + len(dm.val_set) == 72 and len(dm.val_set) == 18
    # Computed another way: PIL's own RGB pixels of the training images (the one image of another size resized).
    train_files = {tuple(image.numpy().tobytes()) for image in dm.train_set.tensors[0]}
    pixels = []
    for path in sorted((root / "train").rglob("*.*")):
        with Image.open(path) as image:
            rgb = Image.alpha_composite(Image.new("RGBA", image.size, "white"), image.convert("RGBA")).convert("RGB")
            array = np.asarray(rgb.resize((24, 20), Image.Resampling.BILINEAR)).transpose(2, 0, 1)
        if tuple(array.tobytes()) in train_files:
            pixels.append(array)
    assert len(pixels) == len(dm.train_set)
    stacked = torch.from_numpy(np.stack(pixels)).double() / 255
    assert contract.mean == pytest.approx(stacked.mean(dim=(0, 2, 3)).tolist(), abs=1e-9)
    assert contract.std == pytest.approx(stacked.std(dim=(0, 2, 3)).tolist(), rel=1e-4)
    labels = dm.train_set.tensors[1]
    assert set(labels.tolist()) == {0, 1, 2}
    # Channels first in memory too, as MNIST's: a fork's net may flatten them with x.view(len(x), -1).
    assert all(split.tensors[0].is_contiguous() for split in (dm.train_set, dm.val_set, dm.test_set))
    # Normalized batches have mean 0 and std 1 per channel over the training set.
    normalized = dm.normalize(dm.train_set.tensors[0])
    torch.testing.assert_close(normalized.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-4, rtol=0)


def test_each_class_validates_in_proportion_to_its_pictures(tmp_path):
    """Without val/, each class gives its share of the validation slice, whatever the split seed: a class of 8
    pictures among 40 + 40 + 8 gives 1 of 9, the others 4 each (a random slice of 9 leaves such a class out 4 times
    in 10). The classes' order within the slice stays random: another seed, other pictures."""
    root = write_image_folder(tmp_path / "pictures", per_class=40)
    small = root / "train" / sorted(CLASSES)[2]
    for path in sorted(small.iterdir())[8:]:
        path.unlink()
    chosen = []
    for seed in range(4):
        dm = ImageFolderDataModule(str(root), cache_dir=str(tmp_path / "cache"), split_seed=seed)
        dm.setup("fit")
        assert torch.bincount(dm.val_set.tensors[1]).tolist() == [4, 4, 1]
        assert torch.bincount(dm.train_set.tensors[1]).tolist() == [36, 36, 7]
        chosen.append(dm.val_set.tensors[0].sum().item())
    assert len(set(chosen)) == 4


def test_a_val_folder_validates_and_options_set_size_and_channels(tmp_path):
    root = write_image_folder(tmp_path / "pictures", val=True)
    dm = ImageFolderDataModule(str(root), image_size=(16, 8), channels=1, cache_dir=str(tmp_path / "cache"))
    assert dm.contract.shape == (1, 16, 8) and len(dm.contract.mean) == 1
    dm.setup("fit")
    assert len(dm.val_set) == 36 and len(dm.train_set) == 72  # val/ as it is, all of train/ trains
    assert dm.train_set.tensors[0].shape == (72, 1, 16, 8) and dm.train_set.tensors[0].dtype == torch.uint8


def test_the_cache_is_reused_and_renewed_when_the_folder_changes(tmp_path, capfd):
    root = write_image_folder(tmp_path / "pictures")
    cache = tmp_path / "cache"
    first = ImageFolderDataModule(str(root), cache_dir=str(cache))
    first.setup("fit")
    assert "decoding 108 images" in capfd.readouterr().err
    (cached,) = cache.iterdir()
    again = ImageFolderDataModule(str(root), cache_dir=str(cache))
    again.setup("fit")
    assert "decoding" not in capfd.readouterr().err  # read from the cache
    assert torch.equal(again.test_set.tensors[0], first.test_set.tensors[0])
    assert list(cache.iterdir()) == [cached]

    changed = root / "train" / "red circle" / "0.png"
    Image.new("RGB", (24, 20), "white").save(changed)
    renewed = ImageFolderDataModule(str(root), cache_dir=str(cache))
    renewed.setup("fit")
    assert "decoding 108 images" in capfd.readouterr().err
    assert [p.name for p in cache.iterdir()] != [cached.name] and len(list(cache.iterdir())) == 1  # the old one gone
    assert renewed.contract.mean != first.contract.mean


def test_an_unwritable_cache_only_costs_the_decoding(tmp_path, capfd):
    root = write_image_folder(tmp_path / "pictures")
    (tmp_path / "file").write_text("")
    dm = ImageFolderDataModule(str(root), cache_dir=str(tmp_path / "file" / "cache"))
    dm.setup("fit")
    assert "decoded images not cached" in capfd.readouterr().err
    assert len(dm.test_set) == 36


def test_a_read_only_data_folder_is_only_read(small_disk):
    root = write_image_folder(small_disk / "pictures")
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    before = snapshot(small_disk)
    dm = ImageFolderDataModule(str(root), cache_dir=None)  # the default cache, in the user's cache folder
    dm.setup("fit")
    assert len(dm.train_set) + len(dm.val_set) == 72
    assert snapshot(small_disk) == before
    assert list((Path(os.environ["XDG_CACHE_HOME"]) / "image-folders").glob("pictures-*.pt"))


def test_predict_files_are_brought_to_the_datas_size_and_channels(tmp_path):
    root = write_image_folder(tmp_path / "pictures", size=(24, 20))
    Image.new("L", (50, 70), 128).save(tmp_path / "grey.png")
    dm = ImageFolderDataModule(str(root), cache_dir=str(tmp_path / "cache"), predict_path=str(tmp_path / "grey.png"))
    dm.setup("predict")
    images = dm.predict_set.tensors[0]
    assert images.shape == (1, 3, 20, 24) and bool((images == 128).all())
    assert dm.predict_names == [str(tmp_path / "grey.png")]


def test_resume_never_takes_a_run_of_other_data(tmp_path):
    """Two folders of one name in different places share logs/pictures_mlp/, and `--ckpt_path last` tells them
    apart; a folder whose classes changed since its run is refused with one line, not resumed."""
    from tests.conftest import run_cli, run_main

    first, second = write_image_folder(tmp_path / "a" / "pictures"), write_image_folder(tmp_path / "b" / "pictures")
    logs = tmp_path / "logs"
    quick = ["--model.net", "MLP", "--model.scheduler", "null", "--default_root_dir", str(logs), "--data.batch_size",
             "32", "--limit_train_batches", "2", "--enable_progress_bar", "false", "--enable_model_summary", "false",
             "--max_epochs", "2"]  # fmt: skip
    stop = ["--trainer.callbacks+=tests.slow_stages.SignalAt", "--trainer.callbacks.step", "2",
            "--trainer.callbacks.signal", "SIGTERM"]  # fmt: skip
    data = ["--data", "ImageFolderDataModule", "--data.data_dir", str(first)]
    assert run_cli("fit", *data, *quick, *stop).returncode == 143  # the first's run: stopped after its first epoch
    assert run_main("fit", "--data", "ImageFolderDataModule", "--data.data_dir", str(second), *quick).returncode == 0
    runs = sorted((logs / "pictures_mlp").iterdir())
    assert [run.name for run in runs] == ["version_0", "version_1"]

    done = run_main("fit", "--ckpt_path", "last", *data, *quick)
    assert done.returncode == 0, done.stderr
    assert torch.load(runs[0] / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 1  # the first's run
    assert torch.load(runs[1] / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 4  # untouched

    (first / "train" / "red circle").rename(first / "train" / "red circles")  # other classes, same folder
    (first / "test" / "red circle").rename(first / "test" / "red circles")
    last = runs[0] / "checkpoints" / "last.ckpt"
    done = run_main("fit", "--ckpt_path", str(last), *data, *quick, "--max_epochs", "3")
    assert done.returncode == 2
    last_line = done.stderr.strip().splitlines()[-1]
    assert last_line.startswith("error: the checkpoint was trained on other data: its classes"), last_line


def test_help_lists_the_options_of_the_data_module_the_run_is_built_with(tmp_path):
    from tests.conftest import run_main

    root = write_image_folder(tmp_path / "pictures")
    done = run_main("--data", "ImageFolderDataModule", "--data.data_dir", str(root), "--help")
    assert done.returncode == 0, done.stderr
    assert "--data project.data.folder.ImageFolderDataModule:" in done.stdout
    options = [line.split()[0] for line in done.stdout.splitlines() if line.startswith("  --data.")]
    assert {"--data.image_size", "--data.mirrorable", "--data.batch_size", "--data.augment"} <= set(options)
    assert "--data.dataset" not in options  # MNIST's


@pytest.mark.parametrize("order", ["switch first", "options first", "config names the class"])
def test_the_data_class_and_its_options_in_any_order(tmp_path, order):
    from tests.conftest import run_main

    root = write_image_folder(tmp_path / "pictures")
    (tmp_path / "only.yaml").write_text("data:\n  class_path: ImageFolderDataModule\n")
    switch, folder = ["--data", "ImageFolderDataModule"], ["--data.data_dir", str(root)]
    args = {"switch first": [*switch, "--max_epochs", "1", "--seed_everything", "3", *folder],
            "options first": [*folder, "--max_epochs", "1", *switch],
            "config names the class": ["--config", str(tmp_path / "only.yaml"), *folder]}[order]  # fmt: skip
    done = run_main(*args, "--data.batch_size", "8", "--print_config")
    assert done.returncode == 0, done.stderr
    config = yaml.safe_load(done.stdout)
    assert config["data"]["class_path"] == "project.data.folder.ImageFolderDataModule"
    assert config["data"]["init_args"]["data_dir"] == str(root) and config["data"]["init_args"]["batch_size"] == 8
    assert config["data"]["init_args"]["val_size"] == 0.1  # its own default, not MNIST's 5000


def test_two_runs_decoding_one_folder_at_once_share_one_cache(tmp_path):
    """Two processes with an empty cache at the same moment (a job array's tasks): both get the images, and one
    whole cache file is left (each writes its own temporary file; the renames replace each other)."""
    root = write_image_folder(tmp_path / "pictures")
    cache = tmp_path / "cache"
    code = (f"from project.data.folder import ImageFolderDataModule; dm = ImageFolderDataModule({str(root)!r}, "
            f"cache_dir={str(cache)!r}); dm.setup('fit'); print(len(dm.train_set) + len(dm.val_set))")  # fmt: skip
    from tests.conftest import REPO

    with ThreadPoolExecutor(2) as pool:  # two processes at once, forked from the test process's server
        runs = list(pool.map(lambda _: forked(["-c", code], REPO, dict(os.environ), timeout=120), range(2)))
    assert [(run.stdout.strip(), run.returncode) for run in runs] == [("72", 0), ("72", 0)], runs
    (cached,) = cache.iterdir()
    assert cached.suffix == ".pt"
    assert torch.load(cached, weights_only=True)["splits"]["train"][0].shape == (72, 3, 20, 24)


def test_a_cache_with_damaged_bytes_inside_a_tensor_is_decoded_again(tmp_path, capfd):
    root = write_image_folder(tmp_path / "pictures")
    cache = tmp_path / "cache"
    first = ImageFolderDataModule(str(root), cache_dir=str(cache))
    first.setup("fit")
    (cached,) = cache.iterdir()
    data = bytearray(cached.read_bytes())
    images = first.load()["test"][0]
    at = data.find(bytes(images.untyped_storage().tolist()[:4096]))  # inside the test images, as stored
    assert at > 0
    data[at : at + 1000] = bytes(1000)
    cached.write_bytes(bytes(data))
    capfd.readouterr()
    again = ImageFolderDataModule(str(root), cache_dir=str(cache))
    again.setup("fit")
    assert "decoding 108 images" in capfd.readouterr().err  # not used as it was
    assert torch.equal(again.load()["test"][0], images)


def test_a_16_bit_grey_image_is_decoded_as_its_8_bit_twin(tmp_path):
    """convert() clipped 16-bit grey values to 255: a white image, trained on without a word."""
    from project.data.folder import decode

    pixels = np.linspace(0, 255, 40 * 30).reshape(30, 40).astype(np.uint8)
    Image.fromarray(pixels).save(tmp_path / "eight.png")
    Image.fromarray(pixels.astype(np.uint16) * 257).save(tmp_path / "sixteen.png")
    for channels in (1, 3):
        eight, sixteen = (decode(tmp_path / name, (20, 15), channels) for name in ("eight.png", "sixteen.png"))
        assert sixteen.shape == (channels, 15, 20) and np.abs(eight.astype(int) - sixteen.astype(int)).max() <= 1
