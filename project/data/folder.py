"""ImageFolderDataModule: your own pictures, one sub-folder per class, decoded once into uint8 tensors (cached on
disk) and from then on served like MNIST: whole batches sliced from memory, normalized on the device.

    DIR/train/<class>/<image>   DIR/test/<class>/<image>   DIR/val/<class>/<image> (optional)
"""

import hashlib
import io
import json
import os
import sys
from collections import Counter
from functools import cached_property
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image, ImageOps
from torch.utils.data import TensorDataset

from project.data.contract import DataContract
from project.data.in_memory import InMemoryImages
from project.errors import UserError
from project.files import write_atomically

SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
GREY_MODES = {"1", "L", "LA", "I", "I;16", "F"}


class ImageFolderDataModule(InMemoryImages):
    """Images in class folders: DIR/train and DIR/test (and DIR/val, else a seeded slice of train/ validates)."""

    def __init__(self, data_dir: str, image_size: int | tuple[int, int] | None = None,
                 channels: Literal[1, 3] | None = None, mirrorable: bool = False, val_size: float = 0.1,
                 cache_dir: str | None = None, predict_path: str | None = None, **kwargs) -> None:  # fmt: skip
        """
        Args:
            data_dir: the folder that holds train/ and test/ (and optionally val/), each with one folder per class.
            image_size: (height, width), or one number for square, every image is resized to; default: the most
                common size in train/.
            channels: 1 (grey) or 3 (colour); default: 3 if any training image has colour, else 1.
            mirrorable: a mirrored image keeps its class (augment then flips, eval_flip averages with the mirror).
            val_size: without val/, the share of train/ (below 1) or the number of images held out for validation.
            cache_dir: where the decoded images are kept (default: image-folders/ in $XDG_CACHE_HOME or ~/.cache);
                nothing is written into data_dir, which may be read-only or shared by several runs.
            predict_path: an image file or a folder of them for `predict` (else it runs on the test set).
            **kwargs: batch size, workers, split seed and augmentation: project.data.in_memory.InMemoryImages."""
        super().__init__(**kwargs)
        self.root = Path(os.path.expandvars(data_dir)).expanduser()
        if val_size <= 0:
            raise ValueError(f"val_size must be above 0 (validation picks the best epoch), got {val_size}")
        if not self.root.is_dir():
            what = "is a file" if self.root.exists() else "does not exist"
            raise ValueError(f"data_dir {self.root} {what}; give the folder that holds train/ and test/")
        for split in ("train", "test"):
            if not (self.root / split).is_dir():
                raise ValueError(f"data_dir {self.root} has no {split}/ folder: it needs train/ and test/ (and "
                                 "optionally val/), each with one folder of images per class")  # fmt: skip
        self.files = {split: image_files(self.root / split) for split in ("train", "val", "test")}
        self.classes = sorted({name for name, _ in self.files["train"]})
        if not self.classes:
            raise ValueError(f"data_dir: {self.root / 'train'} has no images in class folders; put each class's "
                             "images in a folder of its own: train/<class>/<image>")  # fmt: skip
        for split in ("val", "test"):
            if extra := sorted({name for name, _ in self.files[split]} - set(self.classes)):
                raise ValueError(f"data_dir: {split}/ has classes that train/ does not: {', '.join(extra)}; every "
                                 f"{split} class must be a training class")  # fmt: skip

    @cached_property
    def contract(self) -> DataContract:
        """Classes from the folder names; shape, mean and std from the decoded training images."""
        images = self.load()["train"][0]
        if not self.files["val"]:  # the statistics of the images that train, not of the validation slice
            images = self.split(images, torch.zeros(len(images)), self.val_count(len(images)))[0].tensors[0]
        mean = tuple(float(images[:, c].double().mean() / 255) for c in range(images.shape[1]))
        std = tuple(max(float(images[:, c].double().std() / 255), 1e-3) for c in range(images.shape[1]))
        return DataContract(tuple(self.classes), tuple(images.shape[1:]), mean, std, self.hparams.mirrorable)

    def val_count(self, count: int) -> int:
        size = self.hparams.val_size
        return max(1, round(size * count)) if size < 1 else int(size)

    def setup(self, stage: str) -> None:
        if stage == "predict" and self.hparams.predict_path:
            images, self.predict_names = self.read_predict_files(Path(self.hparams.predict_path).expanduser())
            self.predict_set = TensorDataset(images, torch.full((len(images),), -1))
            return
        splits = self.load()
        if self.files["val"]:
            self.train_set, self.val_set = TensorDataset(*splits["train"]), TensorDataset(*splits["val"])
        else:
            self.train_set, self.val_set = self.split(*splits["train"], self.val_count(len(splits["train"][0])))
        self.test_set = self.predict_set = TensorDataset(*splits["test"])
        self.predict_names = [str(path) for _, path in self.files["test"]]

    @cached_property
    def size_and_channels(self) -> tuple[tuple[int, int], int]:
        """(width, height) and channels of the decoded images: the options, or what the training images suggest."""
        size, channels = self.hparams.image_size, self.hparams.channels
        size = (size, size) if isinstance(size, int) else size
        if size is None or channels is None:
            headers = [image_header(path) for _, path in self.files["train"]]  # header only: no decoding
            size = size[::-1] if size else Counter(s for s, _ in headers).most_common(1)[0][0]
            channels = channels or (1 if all(mode in GREY_MODES for _, mode in headers) else 3)
        else:
            size = tuple(size[::-1])
        return tuple(size), channels

    def load(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Every split as (uint8 images (N, C, H, W), labels), from the cache when the files are unchanged."""
        if hasattr(self, "splits"):
            return self.splits
        size, channels = self.size_and_channels
        listing = [(split, str(path.relative_to(self.root)), path.stat().st_size, path.stat().st_mtime_ns)
                   for split in self.files for _, path in self.files[split]]  # fmt: skip
        key = hashlib.sha256(json.dumps([listing, size, channels]).encode()).hexdigest()[:16]
        user_cache = Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache") / "image-folders"
        folder = Path(os.path.expandvars(self.hparams.cache_dir or user_cache)).expanduser()
        prefix = hashlib.sha256(str(self.root.resolve()).encode()).hexdigest()[:16]
        cache = folder / f"{self.root.resolve().name}-{prefix}-{key}.pt"
        if cache.is_file():
            try:
                saved = torch.load(cache, weights_only=True)
                self.splits = {s: tuple(t) for s, t in saved["splits"].items()}
                if saved["sha256"] == checksum(self.splits):  # flipped bytes inside a tensor load without a word
                    return self.splits
            except Exception:  # a damaged cache is decoded again and rewritten
                pass
        print(f"decoding {len(listing)} images of {self.root} as {channels}x{size[1]}x{size[0]} ...", file=sys.stderr)
        self.splits = {}
        for split, files in self.files.items():
            labels = torch.tensor([self.classes.index(name) for name, _ in files], dtype=torch.long)
            images = [decode(path, size, channels) for _, path in files]
            self.splits[split] = (torch.from_numpy(np.stack(images)) if images else torch.empty(0), labels)
        write_cache(cache, self.splits, stale=folder.glob(f"{self.root.resolve().name}-{prefix}-*.pt"))
        return self.splits

    def read_predict_files(self, path: Path) -> tuple[torch.Tensor, list[str]]:
        """predict_path's images brought to the data's size and channels, and their names."""
        if not path.exists():
            raise ValueError(f"predict_path {path} does not exist; give an image file or a folder of images")
        files = sorted(p for p in path.rglob("*") if p.suffix.lower() in SUFFIXES) if path.is_dir() else [path]
        if not files:
            raise ValueError(f"predict_path: no image file in {path} (looked for {', '.join(sorted(SUFFIXES))})")
        size, channels = self.size_and_channels
        images, names = [], []
        for file in files:
            try:
                images.append(decode(file, size, channels))
                names.append(str(file))
            except UserError as error:  # the other files are still predicted
                print(f"skipped {' '.join(str(error).split()[3:])}", file=sys.stderr)
        if not images:
            raise ValueError(f"predict_path: no readable image in {path}")
        return torch.from_numpy(np.stack(images)), names


def image_files(folder: Path) -> list[tuple[str, Path]]:
    """(class, file) for every image in folder/<class>/ (hidden files and other suffixes are not images)."""
    if not folder.is_dir():
        return []
    found = []
    for class_folder in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = sorted(p for p in class_folder.rglob("*") if p.suffix.lower() in SUFFIXES and p.name[0] != ".")
        if not files:
            raise ValueError(f"data_dir: class folder {class_folder} holds no images ({', '.join(sorted(SUFFIXES))}); "
                            "add images or remove the folder")  # fmt: skip
        found += [(class_folder.name, file) for file in files]
    return found


def image_header(path: Path) -> tuple[tuple[int, int], str]:
    try:
        with Image.open(path) as image:
            return image.size, image.mode
    except Exception as error:
        raise UserError(f"cannot read image {path} ({type(error).__name__}: {error}); remove or replace it") from None


def decode(path: Path, size: tuple[int, int], channels: int) -> np.ndarray:
    """One image file as uint8 (channels, height, width): upright (EXIF), transparency on white, resized."""
    try:
        with Image.open(path) as opened:
            image = ImageOps.exif_transpose(opened)
            if image.mode in ("RGBA", "LA", "PA", "P"):
                image = Image.alpha_composite(Image.new("RGBA", image.size, "white"), image.convert("RGBA"))
            wide = image.mode.startswith("I")  # 16-bit grey: scaled to 8 bits (convert would clip it to white)
            image = (image.point(lambda v: v / 257) if wide else image).convert("L" if channels == 1 else "RGB")
            if image.size != size:
                image = image.resize(size, Image.Resampling.BILINEAR)
            pixels = np.asarray(image, dtype=np.uint8)
    except Exception as error:
        raise UserError(f"cannot read image {path} ({type(error).__name__}: {error}); remove or replace it") from None
    return pixels[None] if channels == 1 else pixels.transpose(2, 0, 1)


def checksum(splits: dict) -> str:
    digest = hashlib.sha256()
    for split in sorted(splits):
        for tensor in splits[split]:
            digest.update(tensor.contiguous().numpy().tobytes())
    return digest.hexdigest()


def write_cache(path: Path, splits: dict, stale) -> None:
    """Written whole (several runs may decode at once: each writes its own temporary file, the last rename wins);
    older caches of the same folder go. A cache that cannot be written only costs the decoding next time."""
    buffer = io.BytesIO()
    torch.save({"splits": splits, "sha256": checksum(splits)}, buffer)
    try:
        write_atomically(path, buffer.getvalue())
        for old in stale:
            if old != path:
                old.unlink(missing_ok=True)
    except OSError as error:
        print(f"decoded images not cached ({error.strerror}: {path.parent})", file=sys.stderr)
