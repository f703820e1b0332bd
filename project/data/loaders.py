"""Index batches: whole batches sliced from in-memory uint8 images, their share per process under DDP, and the
loader state a checkpoint carries so that a run resumed mid-epoch trains on the rest of that epoch's batches."""

import math

import torch
from torch.utils.data import DataLoader, DistributedSampler, Sampler, TensorDataset


class Shard(DistributedSampler):
    """One process's share of an evaluation set under DDP, as given: images rank, rank + W, ... with no padding, so
    that every image is scored once. (Lightning's own DDP sampler repeats items until the processes have as many; it
    leaves a DistributedSampler alone. Evaluation allows uneven processes: metrics are summed over them at the end.)"""

    def __init__(self, items: list, rank: int, world_size: int) -> None:
        # Given the rank and world size, DistributedSampler needs no process group; its padding is in __iter__.
        super().__init__(items, num_replicas=world_size, rank=rank, shuffle=False)
        self.items = items

    def __iter__(self):
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)


class IndexBatches(Sampler):
    """The indices of each batch as one tensor (one slice of the uint8 images; torch's BatchSampler yields lists,
    indexed element by element), in a new order every epoch when shuffling, drawn from the global generator
    that checkpoints save and restore."""

    def __init__(self, count: int, batch_size: int, shuffle: bool) -> None:
        self.count, self.batch_size, self.shuffle = count, batch_size, shuffle
        self.drawn_from: torch.Tensor | None = None  # the generator state this epoch's order was drawn from
        self.start: tuple[torch.Tensor, int] | None = None  # set by ResumableLoader: (drawn_from, batches done)

    def __iter__(self):
        # A generator: the order is drawn at the first batch, not when a DataLoader merely calls iter() (which
        # it does twice with worker processes: with and without workers the same random numbers are used).
        state, done = self.start or (None, 0)
        generator = torch.default_generator if state is None else torch.Generator().set_state(state)
        self.drawn_from = generator.get_state()
        order = torch.randperm(self.count, generator=generator) if self.shuffle else torch.arange(self.count)
        yield from order[: len(self) * self.batch_size].split(self.batch_size)[done:] if len(self) else ()

    def __len__(self) -> int:
        # Training leaves out a last batch of one image (another each epoch): batch norm cannot train on one.
        return math.ceil(self.count / self.batch_size) - (self.shuffle and self.count % self.batch_size == 1)


class ResumableLoader(DataLoader):
    """A DataLoader whose place in its epoch a checkpoint keeps: the generator state the epoch's order was drawn
    from and how many of its batches were served. A run resumed mid-epoch (Ctrl-C, preemption) trains on the rest of
    that epoch's batches in that order, so its weights are those of the run that never stopped.

    The data module carries this state (InMemoryImages.state_dict) and hands it to its next training loader
    (`resume`). state_dict/load_state_dict are also Lightning's interface for a resumable loader: Lightning saves
    state_dict too, but its own restore is left out (load_state_dict does nothing): it misses the state where the
    learning-rate schedule asked for the step count first (Lightning issue 20550), and it does not know an epoch cut
    short by limit_train_batches from one under way."""

    # Class attributes, not __init__ arguments: Lightning re-creates a DataLoader from its __init__ arguments (DDP).
    served = 0  # batches of this epoch handed out: those trained on (Lightning does not fetch ahead from a loader
    resume: dict | None = None  # with a length); the state of an epoch that the next iter() finishes

    def __iter__(self):
        state, self.resume = self.resume or {}, None
        if isinstance(self.sampler, IndexBatches):
            self.sampler.start = (state["drawn_from"], state["served"]) if state else None
        self.served = state.get("served", 0)
        # A DataLoader without worker processes draws a seed from the global generator as it starts an epoch; the
        # stopped run drew this epoch's before its checkpoint saved the generator.
        with torch.random.fork_rng(devices=[], enabled=bool(state)):
            if self.num_workers > 0:  # the same draw (workers take theirs from a generator of their own): the same
                torch.empty((), dtype=torch.int64).random_()  # numbers follow with and without workers
            batches = super().__iter__()
        for batch in batches:
            self.served += 1
            yield batch

    def state_dict(self) -> dict:
        # {} where no epoch is under way, or where Lightning's DDP sampler wraps ours (a resumed epoch starts afresh)
        if not isinstance(self.sampler, IndexBatches) or not 0 < self.served < len(self):
            return {}
        return {"drawn_from": self.sampler.drawn_from, "served": self.served}

    def load_state_dict(self, state: dict) -> None:
        pass  # the data module restores it: see the class's docstring


def index_batches(dataset: TensorDataset, batch_size: int, shuffle: bool, num_workers: int, pin_memory: bool = False,
                  rank: int = 0, world_size: int = 1) -> DataLoader:  # fmt: skip
    """The default: a DataLoader whose every item is a whole batch (batch_size=None: no collation, one slice)."""
    batches = IndexBatches(len(dataset), batch_size, shuffle)
    if world_size > 1 and not shuffle:  # the images shared out, then batched: 100 images, 2 processes, 1 batch each
        batches = Shard(list(torch.arange(rank, len(dataset), world_size).split(batch_size)), rank, world_size)
    # pin_memory: page-locked host memory, for faster, asynchronous copies to a GPU. Worker processes take their
    # seeds from a generator of their own (they draw nothing: a batch is a slice): a persistent worker pool starts
    # once per process, and a resumed process must draw from the global generator what the stopped one drew.
    return ResumableLoader(dataset, sampler=batches, batch_size=None, num_workers=num_workers,
                           persistent_workers=num_workers > 0, pin_memory=pin_memory,
                           generator=torch.Generator() if num_workers > 0 else None)  # fmt: skip
