"""InMemoryImages, the base of the template's data modules: uint8 images held in memory, a seeded validation
slice, whole batches sliced from memory, and normalization and augmentation of each batch on its device."""

from collections.abc import Iterable

import lightning as L
import torch
from torch.utils.data import TensorDataset

from project.data.augment import random_affine, random_flip
from project.data.contract import DataContract
from project.data.loaders import ResumableLoader, index_batches


class InMemoryImages(L.LightningDataModule):
    """A subclass sets `contract` and, in setup(), train_set, val_set, test_set and predict_set: TensorDatasets of
    uint8 images, (N, C, H, W) or (N, H, W) for one channel, and int64 labels (-1: unknown, in predict_set)."""

    contract: DataContract

    def __init__(self, batch_size: int = 128, num_workers: int = 0, split_seed: int = 0, augment: bool = False,
                 rotation: float = 10.0, translate: float = 0.1, scale: tuple[float, float] = (0.9, 1.1),
                 flip: bool = True) -> None:  # fmt: skip
        """
        Args:
            batch_size: images per batch, for training and evaluation.
            num_workers: DataLoader worker processes; 0 loads in the main process (fast: batches are slices).
            split_seed: seed of the train/validation split, apart from the training seed: same images, any seed.
            augment: random affine maps of the training batches, on the device (see rotation, translate, scale).
            rotation: with augment, rotation by up to +-rotation degrees.
            translate: with augment, shift by up to +-translate of the image size.
            scale: with augment, zoom by a factor drawn from this range.
            flip: with augment, mirror half the training images where a mirrored image keeps its class."""
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.save_hyperparameters(ignore="contract")  # every __init__'s on the stack; contract is the model's
        self.predict_names: list[str] = []  # a name per predict_set image, for the prediction table
        self.stats: dict[torch.device, list[torch.Tensor]] = {}  # the contract's mean and std, per device
        self.resume: dict = {}  # a checkpoint's training loader state, for the next training loader

    def split(self, images: torch.Tensor, labels: torch.Tensor, val_size: int,
              by_class: bool = False) -> tuple[TensorDataset, TensorDataset]:  # fmt: skip
        """(training, validation): a seeded random slice of val_size images held out for validation; by_class:
        each class's share of it as its share of the images (a class of 20 pictures in 1,000: 2 of 100)."""
        if val_size >= len(images):
            raise ValueError(f"val_size {val_size} leaves no training images: the training set has {len(images)}; "
                             "choose a smaller value")  # fmt: skip
        order = torch.randperm(len(images), generator=torch.Generator().manual_seed(self.hparams.split_seed))
        order = by_class_first(order, labels, val_size) if by_class else order
        val, train = order[:val_size], order[val_size:]
        return TensorDataset(images[train], labels[train]), TensorDataset(images[val], labels[val])

    def _loader(self, dataset: TensorDataset, shuffle: bool) -> Iterable:
        rank, world = (self.trainer.global_rank, self.trainer.world_size) if self.trainer else (0, 1)
        to_gpu = self.trainer is not None and self.trainer.strategy.root_device.type == "cuda"
        return index_batches(dataset, self.hparams.batch_size, shuffle, self.hparams.num_workers, to_gpu, rank, world)

    def train_dataloader(self) -> Iterable:
        loader = self._loader(self.train_set, shuffle=True)
        if isinstance(loader, ResumableLoader):  # the first one after a resume (the fit's) finishes its epoch
            loader.resume, self.resume = self.resume, {}
        return loader

    def state_dict(self) -> dict:
        # Where the training loader is in an unfinished epoch (project/data/loaders.py: ResumableLoader). A data
        # module's state is restored before the fit makes its training loader.
        loader = self.trainer.train_dataloader if self.trainer is not None else None
        if not isinstance(loader, ResumableLoader) or loader.served >= self.trainer.num_training_batches:
            return {}
        return {"train_loader": loader.state_dict()}

    def load_state_dict(self, state_dict: dict) -> None:
        self.resume = state_dict.get("train_loader", {})

    def val_dataloader(self) -> Iterable:
        return self._loader(self.val_set, shuffle=False)

    def test_dataloader(self) -> Iterable:
        return self._loader(self.test_set, shuffle=False)

    def predict_dataloader(self) -> Iterable:
        return self._loader(self.predict_set, shuffle=False)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (N, [C,] H, W) -> float (N, C, H, W), each channel with the contract's mean 0 and std 1."""
        images = images.unsqueeze(1) if images.ndim == 3 else images
        if images.device not in self.stats:  # once per device, not a host-to-device copy per batch
            stats = (self.contract.mean, self.contract.std)
            self.stats[images.device] = [torch.tensor(s, device=images.device).view(1, -1, 1, 1) for s in stats]
        mean, std = self.stats[images.device]
        return images.float().div_(255).sub_(mean).div_(std)

    def on_after_batch_transfer(self, batch: tuple[torch.Tensor, torch.Tensor], dataloader_idx: int):
        # Runs on the batch once it is on the device: one vectorized conversion instead of one per image.
        # (Batches of a per-image pipeline, project.extras.per_image, arrive as float, already normalized.)
        images, labels = batch
        images = self.normalize(images) if images.dtype == torch.uint8 else images
        if self.hparams.augment and self.trainer is not None and self.trainer.training:
            hp = self.hparams
            images = random_affine(images, hp.rotation, hp.translate, tuple(hp.scale))
            if hp.flip and self.contract.mirrorable:
                images = random_flip(images)
        return images, labels


def by_class_first(order: torch.Tensor, labels: torch.Tensor, count: int) -> torch.Tensor:
    """`order` with `count` indices first that hold each class in proportion to its number of images (largest
    remainders), each class's first ones in `order`; the rest after them, in their order."""
    classes = labels[order]
    shares = torch.bincount(classes) * count / len(order)
    quota = shares.floor().long()
    quota[torch.argsort(shares - quota, descending=True, stable=True)[: count - int(quota.sum())]] += 1
    first = torch.zeros(len(order), dtype=torch.bool)
    for label, taken in enumerate(quota.tolist()):
        first[(classes == label).nonzero().flatten()[:taken]] = True
    return torch.cat([order[first], order[~first]])
