"""MNISTDataModule: MNIST, Fashion-MNIST or KMNIST held in memory as uint8 tensors, served in index batches."""

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch.utils.data import TensorDataset
from torchvision.datasets import KMNIST, MNIST, FashionMNIST

from project.data.contract import DataContract
from project.data.idx import IDX_FILES, find_idx_files, read_split
from project.data.in_memory import InMemoryImages
from project.errors import UserError


@dataclass(frozen=True)
class DatasetInfo:
    """Where torchvision keeps a data set, the mean/std of its 60k training pixels (scaled to 0..1), and whether
    a mirrored image is still of its class (a shirt is; a mirrored digit or kana is another sign or none)."""

    torchvision_class: type[MNIST]
    mean: float
    std: float
    mirrorable: bool = False

    @property
    def contract(self) -> DataContract:
        classes = tuple(self.torchvision_class.classes)
        return DataContract(classes, (1, 28, 28), (self.mean,), (self.std,), self.mirrorable)


DATASETS = {
    "mnist": DatasetInfo(MNIST, mean=0.1307, std=0.3081),
    "fashion_mnist": DatasetInfo(FashionMNIST, mean=0.2860, std=0.3530, mirrorable=True),
    "kmnist": DatasetInfo(KMNIST, mean=0.1918, std=0.3483),
}


class MNISTDataModule(InMemoryImages):
    """An MNIST-family data set: a seeded validation slice of the 60k training images, the official 10k test set."""

    def __init__(self, dataset: Literal["mnist", "fashion_mnist", "kmnist"] = "mnist", data_dir: str = "data",
                 val_size: int = 5000, download: bool = True, predict_path: str | None = None,
                 own_images: Callable[[Path, str], tuple[torch.Tensor, list[str]]] | None = None,
                 **kwargs) -> None:  # fmt: skip
        """
        Args:
            dataset: which data set of the MNIST family.
            data_dir: torchvision's layout (DIR/MNIST/raw/...) or a folder with the four IDX files, plain or .gz.
            val_size: training images held out for validation; the official test set stays the test set.
            download: download missing files with torchvision when the network allows.
            predict_path: an image file or a folder of them for `predict` (else it runs on the test set).
            own_images: reads predict_path into (N, 28, 28) uint8 images of `dataset` and names (configs/base.yaml).
            **kwargs: batch size, workers, split seed and augmentation: project.data.in_memory.InMemoryImages."""
        super().__init__(**kwargs)  # under the CLI the hparams are the config's values: own_images its import path
        if val_size < 1:
            raise ValueError(f"val_size must be at least 1 (validation picks the best epoch), got {val_size}")
        self.own_images, self.info = own_images, DATASETS[dataset]
        self.contract = self.info.contract

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
        raw, root, name = self.search_folders()[0], Path(self.hparams.data_dir), self.info.torchvision_class.__name__
        if (root / "train").is_dir() and (root / "test").is_dir():  # a fork's pictures, not a data set's files
            raise ValueError(f"data_dir {root} holds train/ and test/ folders, not {name}'s IDX files: a folder of "
                             "pictures is read by ImageFolderDataModule (--data ImageFolderDataModule)")  # fmt: skip
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
        num_classes = len(self.contract.classes)
        images, labels = read_split(files["train_images"], files["train_labels"], num_classes)
        test_images, test_labels = read_split(files["test_images"], files["test_labels"], num_classes)
        for role, split in (("train_images", images), ("test_images", test_images)):
            if tuple(split.shape[1:]) != self.contract.shape[1:]:  # found now, not when the test crashes
                size = "x".join(map(str, split.shape[1:]))
                raise UserError(f"{files[role]} holds {size} images; {self.hparams.dataset} images are 28x28 (the "
                                "two splits must match); check that the files belong to this data set")  # fmt: skip
        self.train_set, self.val_set = self.split(images, labels, self.hparams.val_size)
        self.test_set = self.predict_set = TensorDataset(test_images, test_labels)
        self.predict_names = [f"test[{i}]" for i in range(len(test_images))]
