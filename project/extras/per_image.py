"""The classic per-image pipeline, for comparison (benchmarks/) and as the place for per-image transforms of your
own: each image becomes a PIL image and goes through torchvision transforms on its own, then the DataLoader
collates the batch. `--data project.extras.per_image.PerImageMNIST` trains on it."""

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, TensorDataset
from torchvision import transforms

from project.data import MNISTDataModule
from project.data.loaders import Shard


class PerSampleImages(Dataset):
    """Images as torchvision's MNIST class serves them: one PIL image at a time through ToTensor and Normalize."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, mean: float, std: float) -> None:
        self.images, self.labels = images, labels
        self.transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((mean,), (std,))])

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = Image.fromarray(self.images[index].numpy(), mode="L")
        return self.transform(image), int(self.labels[index])


def per_sample_batches(
    dataset: TensorDataset,
    mean: float,
    std: float,
    batch_size: int,
    shuffle: bool,
    num_workers: int,
    rank: int = 0,
    world_size: int = 1,
) -> DataLoader:
    """The classic DataLoader over per-sample transforms, for comparison and for transforms of your own."""
    images, labels = dataset.tensors
    shard = (
        Shard(list(range(rank, len(images), world_size)), rank, world_size) if world_size > 1 and not shuffle else None
    )
    return DataLoader(
        PerSampleImages(images, labels, mean, std),
        batch_size=batch_size,
        shuffle=shuffle,
        sampler=shard,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
    )


class PerImageMNIST(MNISTDataModule):
    """MNISTDataModule served by the per-image pipeline instead of index batches."""

    def _loader(self, dataset: TensorDataset, shuffle: bool) -> DataLoader:
        rank, world = (self.trainer.global_rank, self.trainer.world_size) if self.trainer else (0, 1)
        hp, info = self.hparams, self.info
        return per_sample_batches(dataset, info.mean, info.std, hp.batch_size, shuffle, hp.num_workers, rank, world)
