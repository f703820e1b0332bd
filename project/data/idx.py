"""Read and find the IDX files that MNIST, Fashion-MNIST and KMNIST ship in (plain or gzip-compressed): parsed
here, not by torchvision's reader, so that `.gz` files are read where they lie and a broken file is named with
what is wrong, instead of an assertion."""

import gzip
import math
import struct
import zlib
from pathlib import Path

import torch

from project.errors import UserError

# The four files of every MNIST-family data set, by role.
IDX_FILES = {"train_images": "train-images-idx3-ubyte", "train_labels": "train-labels-idx1-ubyte",
             "test_images": "t10k-images-idx3-ubyte", "test_labels": "t10k-labels-idx1-ubyte"}  # fmt: skip
UNSIGNED_BYTE = 0x08


def find_idx_files(folders: list[Path]) -> dict[str, Path] | None:
    """The four IDX files from the first folder that holds all of them (each plain or `.gz`), else None."""
    for folder in folders:
        found = {role: next((p for p in (folder / name, folder / f"{name}.gz") if p.is_file()), None)
                 for role, name in IDX_FILES.items()}  # fmt: skip
        if all(found.values()):
            return found
    return None


def read_idx(path: Path) -> torch.Tensor:
    """An IDX file of unsigned bytes as a uint8 tensor of the shape its header declares."""
    try:
        with gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb") as f:
            data = f.read()
    except (gzip.BadGzipFile, EOFError, zlib.error) as error:  # damaged; other errors (no permission): as such
        raise UserError(f"cannot read {path}: {error}; download the file again") from None
    if len(data) < 4 or data[:3] != bytes([0, 0, UNSIGNED_BYTE]) or not 1 <= data[3] <= 4:
        raise UserError(f"{path} is not an IDX file of unsigned bytes (magic number 0x{data[:4].hex()}, expected "
                        "0x00000801 to 0x00000804); check that it is an MNIST-format file")  # fmt: skip
    ndim, header = data[3], 4 + 4 * data[3]
    shape = struct.unpack(f">{ndim}I", data[4:header]) if len(data) >= header else ()
    expected = header + math.prod(shape) if shape else header
    if not shape or len(data) != expected:
        raise UserError(f"{path} is truncated or corrupt: {len(data)} bytes where its header promises {expected}; "
                        "download the file again")  # fmt: skip
    return torch.frombuffer(bytearray(data), dtype=torch.uint8, offset=header).view(shape)


def read_split(images_path: Path, labels_path: Path, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (N, H, W) uint8 and labels (N,) int64 of one split, checked against each other."""
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3:
        raise UserError(f"{images_path} holds {images.ndim}-d data; an images file holds (count, height, width)")
    if labels.ndim != 1:
        raise UserError(f"{labels_path} holds {labels.ndim}-d data; a labels file holds one byte per image")
    if len(images) != len(labels):
        raise UserError(f"{images_path} holds {len(images)} images but {labels_path} holds {len(labels)} labels; "
                        "the two files must come from the same split")  # fmt: skip
    if len(labels) and int(labels.max()) >= num_classes:
        raise UserError(f"{labels_path} has label {int(labels.max())}, outside 0..{num_classes - 1}; "
                        "check that the file belongs to this data set")  # fmt: skip
    return images, labels.long()
