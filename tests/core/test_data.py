import gzip
from functools import partial
from pathlib import Path

import pytest
import torch
from torch.utils.data import DistributedSampler, TensorDataset
from torchvision.datasets import MNIST

from project.data import DATASETS, MNISTDataModule
from project.data.idx import read_idx
from project.data.loaders import index_batches
from project.errors import UserError
from project.extras.on_device import OnDeviceMNIST
from project.extras.per_image import PerImageMNIST, per_sample_batches
from tests.idx_files import idx_bytes, synthetic_split, write_dataset, write_idx


def setup_module_for(data_dir: Path, pipeline: str = "tensor", **kwargs) -> MNISTDataModule:
    module = (
        PerImageMNIST if pipeline == "torchvision" else OnDeviceMNIST if kwargs.get("on_device") else MNISTDataModule
    )
    dm = module(data_dir=str(data_dir), val_size=100, batch_size=32, **kwargs)
    dm.prepare_data()
    dm.setup("fit")
    return dm


def rows(images: torch.Tensor) -> set[bytes]:
    return {image.numpy().tobytes() for image in images}


def test_split_sizes_and_disjoint(mnist_dir):
    dm = setup_module_for(mnist_dir)
    train, val, test = dm.train_set.tensors, dm.val_set.tensors, dm.test_set.tensors
    assert (len(train[0]), len(val[0]), len(test[0])) == (500, 100, 200)
    # Train and val together are exactly the official training file; test is the official test file.
    official_train, _ = synthetic_split(600, seed=0)
    official_test, official_test_labels = synthetic_split(200, seed=1)
    assert rows(train[0]) | rows(val[0]) == rows(official_train)
    assert not rows(train[0]) & rows(val[0])
    assert torch.equal(test[0], official_test) and torch.equal(test[1], official_test_labels.long())


def test_split_is_seeded(mnist_dir):
    first, again = setup_module_for(mnist_dir), setup_module_for(mnist_dir)
    other = setup_module_for(mnist_dir, split_seed=1)
    assert torch.equal(first.val_set.tensors[0], again.val_set.tensors[0])
    assert not torch.equal(first.val_set.tensors[0], other.val_set.tensors[0])


def test_batches_are_normalized_on_transfer(mnist_dir):
    dm = setup_module_for(mnist_dir)
    images, labels = next(iter(dm.train_dataloader()))
    assert images.dtype == torch.uint8 and images.shape == (32, 28, 28)  # the loader only slices
    x, y = dm.on_after_batch_transfer((images, labels), 0)
    assert x.dtype == torch.float32 and x.shape == (32, 1, 28, 28)
    mean, std = DATASETS["mnist"].mean, DATASETS["mnist"].std
    expected = (images.double() / 255 - mean) / std
    torch.testing.assert_close(x.squeeze(1).double(), expected, rtol=0, atol=1e-5)
    assert torch.equal(y, labels)


def test_every_training_image_once_per_epoch(mnist_dir):
    dm = setup_module_for(mnist_dir)
    batches = list(dm.train_dataloader())
    assert [len(b[0]) for b in batches] == [32] * 15 + [20]
    seen = torch.cat([b[0] for b in batches])
    assert rows(seen) == rows(dm.train_set.tensors[0])


@pytest.mark.parametrize("compress", [False, True])
def test_flat_folder_with_plain_or_gz_files(tmp_path, compress):
    folder = write_dataset(tmp_path / "flat", compress=compress)
    assert all(p.name.endswith(".gz") == compress for p in folder.iterdir())
    dm = setup_module_for(folder)
    assert len(dm.train_set) == 500 and len(dm.test_set) == 200


def test_torchvision_layout_is_searched_first(tmp_path):
    write_dataset(tmp_path / "FashionMNIST" / "raw", train=300)
    write_dataset(tmp_path, train=400)
    dm = setup_module_for(tmp_path, dataset="fashion_mnist")
    assert len(dm.train_set) + len(dm.val_set) == 300
    assert dm.contract.classes[0] == "T-shirt/top"


def test_missing_files_download_fails_cleanly(tmp_path, monkeypatch):
    """No network: one clear error naming the files and folders, and no folders or partial files left."""

    def offline_download(self):
        raw = Path(self.raw_folder)
        raw.mkdir(parents=True, exist_ok=True)
        (raw / "train-images-idx3-ubyte.gz").write_bytes(b"partial")
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz:\n<urlopen error Name not known>\n")

    monkeypatch.setattr(MNIST, "download", offline_download)
    data_dir = tmp_path / "data"
    dm = MNISTDataModule(data_dir=str(data_dir))
    with pytest.raises(ValueError) as error:
        dm.prepare_data()
    message = str(error.value)
    assert "\n" not in message
    for expected in (
        "train-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
        str(data_dir / "MNIST" / "raw"),
        "Name not known",
        "point data_dir at them",
    ):
        assert expected in message
    assert not data_dir.exists()


def test_missing_files_without_download(tmp_path):
    dm = MNISTDataModule(data_dir=str(tmp_path), dataset="kmnist", download=False)
    with pytest.raises(ValueError, match=r"KMNIST files not found.*download switched off"):
        dm.prepare_data()
    assert list(tmp_path.iterdir()) == []


def test_read_idx_round_trip(tmp_path):
    array = torch.randint(0, 256, (5, 3, 4), dtype=torch.uint8)
    assert torch.equal(read_idx(write_idx(tmp_path / "a", array)), array)
    assert torch.equal(read_idx(write_idx(tmp_path / "b", array, compress=True)), array)


@pytest.mark.parametrize(
    ("corrupt", "message"),
    [
        (lambda data: data[:-10], "truncated or corrupt"),
        (lambda data: b"\x00\x00\x09\x03" + data[4:], "not an IDX file of unsigned bytes"),
        (lambda data: b"PK\x03\x04" + data[4:], "magic number 0x504b0304"),
        (lambda data: data[:6], "truncated or corrupt"),
    ],
)
def test_broken_idx_files_are_named(tmp_path, corrupt, message):
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(corrupt(idx_bytes(torch.zeros(3, 28, 28, dtype=torch.uint8))))
    with pytest.raises(UserError, match=message) as error:
        read_idx(path)
    assert str(path) in str(error.value)


def flipped(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1 :]


@pytest.mark.parametrize(
    ("damage", "python_error"),
    [
        (lambda gz: gz[:20], "Compressed file ended"),  # truncated: EOFError
        (lambda gz: flipped(gz, 10), "Error -3 while decompressing"),  # the deflate stream broken: zlib.error
        (lambda gz: flipped(gz, len(gz) - 5), "CRC check failed"),  # the data changed: gzip.BadGzipFile
    ],
)
def test_broken_gzip_is_named(tmp_path, damage, python_error):
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(damage(gzip.compress(bytes(range(256)) * 40, mtime=0)))
    with pytest.raises(UserError, match=f"cannot read {path}: {python_error}.*; download the file again"):
        read_idx(path)


def test_image_and_label_counts_must_agree(mnist_dir):
    raw = mnist_dir / "MNIST" / "raw"
    write_idx(raw / "train-labels-idx1-ubyte", torch.zeros(599, dtype=torch.uint8))
    with pytest.raises(UserError, match="600 images but .* 599 labels"):
        setup_module_for(mnist_dir)


def test_labels_must_be_in_range(mnist_dir):
    labels = torch.full((200,), 12, dtype=torch.uint8)
    write_idx(mnist_dir / "MNIST" / "raw" / "t10k-labels-idx1-ubyte", labels)
    with pytest.raises(UserError, match=r"label 12, outside 0\.\.9"):
        setup_module_for(mnist_dir)


def test_val_size_must_leave_training_images(mnist_dir):
    dm = MNISTDataModule(data_dir=str(mnist_dir), val_size=600)
    with pytest.raises(ValueError, match="val_size 600 leaves no training images"):
        dm.setup("fit")


@pytest.mark.parametrize(("kwargs", "message"), [({"batch_size": 0}, "batch_size"), ({"val_size": 0}, "val_size")])
def test_bad_sizes(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MNISTDataModule(**kwargs)


def test_worker_processes_give_the_same_batches(mnist_dir):
    torch.manual_seed(3)
    in_process = [b[0] for b in setup_module_for(mnist_dir).train_dataloader()]
    torch.manual_seed(3)
    with_workers = [b[0] for b in setup_module_for(mnist_dir, num_workers=2).train_dataloader()]
    assert len(in_process) == len(with_workers)
    assert all(torch.equal(a, b) for a, b in zip(in_process, with_workers, strict=True))


def test_torchvision_pipeline_gives_the_same_values(mnist_dir):
    """Per-image PIL + ToTensor + Normalize and the batch-level path agree on every pixel of the same image."""
    tensor = setup_module_for(mnist_dir)
    classic = setup_module_for(mnist_dir, pipeline="torchvision")
    x_tensor, y_tensor = tensor.on_after_batch_transfer(next(iter(tensor.val_dataloader())), 0)
    x_classic, y_classic = classic.on_after_batch_transfer(next(iter(classic.val_dataloader())), 0)
    assert x_classic.shape == x_tensor.shape == (32, 1, 28, 28)
    torch.testing.assert_close(x_classic, x_tensor, rtol=0, atol=1e-5)
    assert torch.equal(y_classic, y_tensor)


def test_on_device_batches_cover_the_epoch_without_a_dataloader(mnist_dir):
    dm = setup_module_for(mnist_dir, on_device=True)
    loader = dm.train_dataloader()
    assert not isinstance(loader, torch.utils.data.DataLoader)
    batches = list(loader)
    assert len(loader) == len(batches) == 16
    assert rows(torch.cat([b[0] for b in batches])) == rows(dm.train_set.tensors[0])
    again = torch.cat([b[0] for b in loader])
    assert not torch.equal(again, torch.cat([b[0] for b in batches]))  # a new permutation every epoch


def test_on_device_batches_split_between_processes(mnist_dir):
    from project.extras.on_device import DeviceBatches

    dataset = setup_module_for(mnist_dir).train_set
    torch.manual_seed(5)
    first = torch.cat([b[0] for b in DeviceBatches(dataset, 32, shuffle=True, rank=0, world_size=2)])
    torch.manual_seed(5)
    second = torch.cat([b[0] for b in DeviceBatches(dataset, 32, shuffle=True, rank=1, world_size=2)])
    assert len(first) == len(second) == 250
    assert rows(first) | rows(second) == rows(dataset.tensors[0]) and not rows(first) & rows(second)


def test_on_device_and_the_per_image_pipeline_are_two_data_modules():
    """Per-image transforms run on the CPU: the two ways are separate classes, and neither takes the other's option."""
    with pytest.raises(TypeError, match="on_device"):
        PerImageMNIST(on_device=True)
    assert OnDeviceMNIST(on_device=False).train_dataloader is not None


@pytest.mark.parametrize("pipeline", ["tensor", "torchvision"])
def test_evaluation_shards_cover_every_image_once(mnist_dir, pipeline):
    """Under DDP each process takes every W-th image of the test set, in batches, with no repeats or padding; a set
    of one batch gives each process a part (process 1 had no batch: Lightning's "zero length" error)."""
    dm = setup_module_for(mnist_dir, pipeline=pipeline)
    dm.setup("test")
    seen = []
    for rank in range(3):
        loader = (index_batches if pipeline == "tensor" else partial(per_sample_batches, mean=0.0, std=1.0))(
            dm.test_set, batch_size=32, shuffle=False, num_workers=0, rank=rank, world_size=3
        )
        assert isinstance(loader.sampler, DistributedSampler)  # so that Lightning does not replace it
        seen += [label for _, labels in loader for label in labels.tolist()]
    assert sorted(seen) == sorted(dm.test_set.tensors[1].tolist())
    if pipeline == "tensor":
        small = TensorDataset(*(tensor[:40] for tensor in dm.test_set.tensors))
        shares = [index_batches(small, 128, False, 0, rank=rank, world_size=2) for rank in (0, 1)]
        assert [[len(labels) for _, labels in loader] for loader in shares] == [[20], [20]]


def test_training_leaves_out_a_last_batch_of_one_image_which_batch_norm_cannot_train_on(mnist_dir, tmp_path):
    """600 training images less 99 for validation: 501 = 5 x 100 + 1. The lone image is left out of training
    (another each epoch), evaluation keeps every image, and an MLP with batch norm trains to the end."""
    from project.data.loaders import IndexBatches
    from tests.conftest import results, run_main

    assert [len(b) for b in IndexBatches(501, 100, shuffle=True)] == [100] * 5
    assert [len(b) for b in IndexBatches(501, 100, shuffle=False)] == [100] * 5 + [1]
    done = run_main("--model.net", "MLP", "--model.net.batch_norm", "true", "--data.data_dir", str(mnist_dir),
                    "--data.val_size", "99", "--data.batch_size", "100", "--max_epochs", "1",
                    "--default_root_dir", str(tmp_path), "--enable_progress_bar", "false")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert results(tmp_path)["global_step"] == 5
