"""MNISTDataModule: MNIST, Fashion-MNIST or KMNIST held in memory as uint8 tensors, served in index batches."""

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import lightning as L
import torch
from torch.utils.data import TensorDataset
from torchvision.datasets import KMNIST, MNIST, FashionMNIST

from project.data.augment import random_affine, random_flip
from project.data.idx import IDX_FILES, find_idx_files, read_split
from project.data.loaders import index_batches


@dataclass(frozen=True)
class DatasetInfo:
    """Where torchvision keeps a data set, the mean/std of its 60k training pixels (scaled to 0..1), and whether
    a mirrored image is still of its class (a shirt is; a mirrored digit or kana is another sign or none)."""

    torchvision_class: type[MNIST]
    mean: float
    std: float
    mirrorable: bool = False

    @property
    def classes(self) -> list[str]:
        return list(self.torchvision_class.classes)


DATASETS = {
    "mnist": DatasetInfo(MNIST, mean=0.1307, std=0.3081),
    "fashion_mnist": DatasetInfo(FashionMNIST, mean=0.2860, std=0.3530, mirrorable=True),
    "kmnist": DatasetInfo(KMNIST, mean=0.1918, std=0.3483),
}


class MNISTDataModule(L.LightningDataModule):
    """An MNIST-family data set: a seeded validation slice of the 60k training images, the official 10k test set."""

    def __init__(self, dataset: Literal["mnist", "fashion_mnist", "kmnist"] = "mnist", data_dir: str = "data",
                 batch_size: int = 128, val_size: int = 5000, num_workers: int = 0, split_seed: int = 0,
                 download: bool = True, predict_path: str | None = None,
                 own_images: Callable[[Path, str], tuple[torch.Tensor, list[str]]] | None = None,
                 augment: bool = False, rotation: float = 10.0, translate: float = 0.1,
                 scale: tuple[float, float] = (0.9, 1.1), flip: bool = True) -> None:  # fmt: skip
        """
        Args:
            dataset: which data set of the MNIST family.
            data_dir: torchvision's layout (DIR/MNIST/raw/...) or a folder with the four IDX files, plain or .gz.
            batch_size: images per batch, for training and evaluation.
            val_size: training images held out for validation; the official test set stays the test set.
            num_workers: DataLoader worker processes; 0 loads in the main process (fast: batches are slices).
            split_seed: seed of the train/validation split, apart from the training seed: same images, any seed.
            download: download missing files with torchvision when the network allows.
            predict_path: an image file or a folder of them for `predict` (else it runs on the test set).
            own_images: reads predict_path into (N, 28, 28) uint8 images of `dataset` and names (configs/base.yaml).
            augment: random affine maps of the training batches, on the device (see rotation, translate, scale).
            rotation: with augment, rotation by up to +-rotation degrees.
            translate: with augment, shift by up to +-translate of the image size.
            scale: with augment, zoom by a factor drawn from this range.
            flip: with augment, mirror half the training images where a mirrored image keeps its class.
        """
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if val_size < 1:
            raise ValueError(f"val_size must be at least 1 (validation picks the best epoch), got {val_size}")
        self.save_hyperparameters()  # under the CLI these are the config's values: own_images is its import path
        self.own_images = own_images
        self.info = DATASETS[dataset]
        self.classes = self.info.classes

    @property
    def mirrorable(self) -> bool:
        """Whether a mirrored image keeps its class: read by the training flips and the model's eval_flip."""
        return self.info.mirrorable

    def search_folders(self) -> list[Path]:
        """Folders searched for the IDX files, in order: torchvision's layout first, then the folder itself."""
        root = Path(self.hparams.data_dir)
        return [root / self.info.torchvision_class.__name__ / "raw", root]

    def prepare_data(self) -> None:
        """Download the files with torchvision if they are not on disk (runs on one process only)."""
        if self.hparams.predict_path and self.trainer and self.trainer.predicting:
            return  # predicting own images needs no data set files
        if find_idx_files(self.search_folders()) is None:
            self._download()

    def _download(self) -> None:
        raw = self.search_folders()[0]
        reason = "download switched off (download false)"
        if self.hparams.download:
            created, before = [p for p in (raw.parents[1], raw.parent, raw) if not p.exists()], set(raw.glob("*"))
            try:
                self.info.torchvision_class(self.hparams.data_dir, train=False, download=True)
                return
            except (RuntimeError, OSError) as error:
                reason = f"the download failed: {str(error).strip().splitlines()[-1]}"
            for path in set(raw.glob("*")) - before:  # leave nothing half-written: partial downloads go
                path.unlink()
            for folder in reversed(created):  # and so do the folders made for them
                if folder.exists() and not any(folder.iterdir()):
                    folder.rmdir()
        name = self.info.torchvision_class.__name__
        raise ValueError(f"data_dir: {name} files not found: expected {', '.join(IDX_FILES.values())} (plain or .gz) "
                         f"in {' or '.join(map(str, self.search_folders()))}; {reason}. Put the four files in one of "
                         "these folders or point data_dir at them.")  # fmt: skip

    def setup(self, stage: str) -> None:
        """Read the IDX files into uint8 tensors and split off the validation images."""
        if stage == "predict" and self.hparams.predict_path:
            if self.own_images is None:
                raise ValueError("predict_path needs own_images, the function that reads the files (configs/base.yaml)")
            images, self.predict_names = self.own_images(Path(self.hparams.predict_path), self.hparams.dataset)
            # Unknown true classes are -1; batches keep the (images, labels) shape of every other stage.
            self.predict_set = TensorDataset(images, torch.full((len(images),), -1))
            return
        if hasattr(self, "test_set"):
            return  # already set up for another stage
        files = find_idx_files(self.search_folders())
        if files is None:
            self._download()  # not reached after prepare_data, but a direct setup() call gets the same error
            files = find_idx_files(self.search_folders())
        num_classes = len(self.classes)
        images, labels = read_split(files["train_images"], files["train_labels"], num_classes)
        test_images, test_labels = read_split(files["test_images"], files["test_labels"], num_classes)
        val_size = self.hparams.val_size
        if val_size >= len(images):
            raise ValueError(f"val_size {val_size} leaves no training images: the training set has {len(images)}; "
                             "choose a smaller value")  # fmt: skip
        order = torch.randperm(len(images), generator=torch.Generator().manual_seed(self.hparams.split_seed))
        val_idx, train_idx = order[:val_size], order[val_size:]
        self.train_set = TensorDataset(images[train_idx], labels[train_idx])
        self.val_set = TensorDataset(images[val_idx], labels[val_idx])
        self.test_set = TensorDataset(test_images, test_labels)
        self.predict_set = self.test_set
        self.predict_names = [f"test[{i}]" for i in range(len(test_images))]

    def _loader(self, dataset: TensorDataset, shuffle: bool) -> Iterable:
        rank, world = (self.trainer.global_rank, self.trainer.world_size) if self.trainer else (0, 1)
        to_gpu = self.trainer is not None and self.trainer.strategy.root_device.type == "cuda"
        return index_batches(dataset, self.hparams.batch_size, shuffle, self.hparams.num_workers, to_gpu, rank, world)

    def train_dataloader(self) -> Iterable:
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> Iterable:
        return self._loader(self.val_set, shuffle=False)

    def test_dataloader(self) -> Iterable:
        return self._loader(self.test_set, shuffle=False)

    def predict_dataloader(self) -> Iterable:
        return self._loader(self.predict_set, shuffle=False)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (N, H, W) -> float (N, 1, H, W) with the data set's mean 0 and std 1."""
        return images.unsqueeze(1).float().div_(255).sub_(self.info.mean).div_(self.info.std)

    def on_after_batch_transfer(self, batch: tuple[torch.Tensor, torch.Tensor], dataloader_idx: int):
        # Runs on the batch once it is on the device: one vectorized conversion instead of one per image.
        # (Batches of a per-image pipeline, project.extras.per_image, arrive as float, already normalized.)
        images, labels = batch
        images = self.normalize(images) if images.dtype == torch.uint8 else images
        if self.hparams.augment and self.trainer is not None and self.trainer.training:
            hp = self.hparams
            images = random_affine(images, hp.rotation, hp.translate, tuple(hp.scale))
            if hp.flip and self.mirrorable:
                images = random_flip(images)
        return images, labels
