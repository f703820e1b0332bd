"""The whole data set on the training device, shuffled there: no DataLoader, no worker, no host-to-device copy.
Meant for GPUs (configs/fast.yaml: `--data project.extras.on_device.OnDeviceMNIST`); on a CPU it only skips the
DataLoader."""

import math

import torch
from torch.utils.data import TensorDataset

from project.data import MNISTDataModule


class DeviceBatches:
    """Batches sliced from tensors that already live on the training device, shuffled there: no DataLoader, no
    host-to-device copy. Each of several processes takes every world_size-th image of the same permutation."""

    def __init__(self, dataset: TensorDataset, batch_size: int, shuffle: bool, rank: int = 0, world_size: int = 1):
        self.images, self.labels = dataset.tensors
        self.batch_size, self.shuffle, self.rank, self.world_size = batch_size, shuffle, rank, world_size

    def __len__(self) -> int:
        count = len(range(self.rank, len(self.images), self.world_size))
        # Training leaves out a last batch of one image, as index batches do: batch norm cannot train on one.
        return math.ceil(count / self.batch_size) - (self.shuffle and count % self.batch_size == 1)

    def __iter__(self):
        count, device = len(self.images), self.images.device
        order = torch.randperm(count, device=device) if self.shuffle else torch.arange(count, device=device)
        order = order[self.rank :: self.world_size]
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            batch = order[start : start + self.batch_size]
            yield self.images[batch], self.labels[batch]


class OnDeviceMNIST(MNISTDataModule):
    """MNISTDataModule whose batches are DeviceBatches (MNIST is 47 MB as uint8); `on_device false`: index batches."""

    def __init__(self, on_device: bool = True, **kwargs) -> None:
        super().__init__(**kwargs)
        self.on_device = on_device

    def _loader(self, dataset: TensorDataset, shuffle: bool):
        if not self.on_device:
            return super()._loader(dataset, shuffle)
        device = self.trainer.strategy.root_device if self.trainer else torch.device("cpu")
        rank, world = (self.trainer.global_rank, self.trainer.world_size) if self.trainer else (0, 1)
        on_device = TensorDataset(*(t.to(device) for t in dataset.tensors))
        return DeviceBatches(on_device, self.hparams.batch_size, shuffle, rank, world)
