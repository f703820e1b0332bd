"""Writers of small synthetic IDX files (the real MNIST on-disk format) for tests."""

import gzip
import struct
from pathlib import Path

import torch


def idx_bytes(array: torch.Tensor) -> bytes:
    """The IDX encoding of a uint8 tensor: magic 0x0000080N, N big-endian sizes, then the raw bytes."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.contiguous().numpy().tobytes()


def write_idx(path: Path, array: torch.Tensor, compress: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = idx_bytes(array)
    if compress:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)
    return path


def synthetic_split(count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Learnable fake digits: class k is a bright horizontal bar at rows 2k..2k+4 on a noisy background."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(count) % 10
    labels = labels[torch.randperm(count, generator=generator)]
    images = torch.randint(0, 60, (count, 28, 28), generator=generator, dtype=torch.uint8)
    for k in range(10):
        images[labels == k, 2 * k + 2 : 2 * k + 6, 4:24] = 230
    return images, labels.to(torch.uint8)


def write_dataset(folder: Path, train: int = 600, test: int = 200, compress: bool = False) -> Path:
    """Write the four MNIST IDX files into `folder` (created) and return it."""
    for prefix, count, seed in (("train", train, 0), ("t10k", test, 1)):
        images, labels = synthetic_split(count, seed)
        write_idx(folder / f"{prefix}-images-idx3-ubyte", images, compress)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte", labels, compress)
    return folder
