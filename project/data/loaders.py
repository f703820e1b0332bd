"""Two ways to serve batches of in-memory images: index batches (the default) and, with `on_device`, device batches."""

import math

import torch
from torch.utils.data import DataLoader, DistributedSampler, Sampler, TensorDataset


class Shard(DistributedSampler):
    """One process's share of an evaluation set under DDP: items rank, rank + W, rank + 2W, ... with no padding,
    so that over all processes every image is scored exactly once.

    Lightning gives an evaluation loader a sampler of its own under DDP, which repeats items (here: whole
    batches) until every process has as many; it leaves a DistributedSampler alone. The processes may then
    run different numbers of batches, which evaluation allows: metrics are summed over processes at the end.
    """

    def __init__(self, items: list, rank: int, world_size: int) -> None:
        # Given the rank and world size, DistributedSampler needs no process group; its padding is in __iter__.
        super().__init__(items, num_replicas=world_size, rank=rank, shuffle=False)
        self.items = items[rank::world_size]

    def __iter__(self):
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)


class IndexBatches(Sampler):
    """The indices of each batch as one tensor, in a new random order every epoch when shuffling.

    A tensor of indices slices the uint8 images in one step; torch's BatchSampler yields Python lists, which
    the indexing converts element by element (a measurable part of a small MLP step on a CPU). The order
    comes from the global random generator, which checkpoints save and restore.
    """

    def __init__(self, count: int, batch_size: int, shuffle: bool) -> None:
        self.count, self.batch_size, self.shuffle = count, batch_size, shuffle

    def __iter__(self):
        # A generator: the order is drawn at the first batch, not when a DataLoader merely calls iter() (which
        # it does twice with worker processes: with and without workers the same random numbers are used).
        order = torch.randperm(self.count) if self.shuffle else torch.arange(self.count)
        yield from order.split(self.batch_size)

    def __len__(self) -> int:
        return math.ceil(self.count / self.batch_size)


def index_batches(
    dataset: TensorDataset,
    batch_size: int,
    shuffle: bool,
    num_workers: int,
    pin_memory: bool = False,
    rank: int = 0,
    world_size: int = 1,
) -> DataLoader:
    """The default: a DataLoader whose every item is a whole batch, sliced from the uint8 tensors at once."""
    # The sampler yields the indices of a whole batch and batch_size=None turns off collation, so the
    # dataset is indexed once per batch (one tensor slice), never once per image.
    batches = IndexBatches(len(dataset), batch_size, shuffle)
    if world_size > 1 and not shuffle:
        batches = Shard(list(batches), rank, world_size)
    return DataLoader(
        dataset,
        sampler=batches,
        batch_size=None,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
        pin_memory=pin_memory,  # page-locked host memory: faster, asynchronous copies to a GPU
    )


class DeviceBatches:
    """Batches sliced from tensors that already live on the training device, shuffled there by a permutation:
    no DataLoader, no worker, no host-to-device copy. With several processes each takes every world_size-th
    image of the same permutation (every process draws the same one, from the same seed)."""

    def __init__(self, dataset: TensorDataset, batch_size: int, shuffle: bool, rank: int = 0, world_size: int = 1):
        self.images, self.labels = dataset.tensors
        self.batch_size, self.shuffle = batch_size, shuffle
        self.rank, self.world_size = rank, world_size

    def __len__(self) -> int:
        return math.ceil(len(range(self.rank, len(self.images), self.world_size)) / self.batch_size)

    def __iter__(self):
        count, device = len(self.images), self.images.device
        order = torch.randperm(count, device=device) if self.shuffle else torch.arange(count, device=device)
        order = order[self.rank :: self.world_size]
        for start in range(0, len(order), self.batch_size):
            batch = order[start : start + self.batch_size]
            yield self.images[batch], self.labels[batch]
