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
from collections.abc import Iterator
from functools import cached_property
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import ExifTags, Image
from torch.utils.data import TensorDataset

from project.data.contract import DataContract
from project.data.in_memory import InMemoryImages
from project.errors import UserError
from project.files import write_atomically

SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
GREY_MODES = {"1", "L", "LA", "I", "I;16", "F"}
T = Image.Transpose  # EXIF orientation -> the turn that shows the stored pixels upright (as ImageOps.exif_transpose)
TURNS = {2: T.FLIP_LEFT_RIGHT, 3: T.ROTATE_180, 4: T.FLIP_TOP_BOTTOM, 5: T.TRANSPOSE, 6: T.ROTATE_270, 7: T.TRANSVERSE,
         8: T.ROTATE_90}  # fmt: skip


class ImageFolderDataModule(InMemoryImages):
    """Images in class folders: DIR/train and DIR/test (and DIR/val, else a seeded slice of train/ validates)."""

    def __init__(self, data_dir: str, image_size: int | tuple[int, int] | None = None,
                 channels: Literal[1, 3] | None = None, mirrorable: bool = False, val_size: float = 0.1,
                 cache_dir: str | None = None, predict_path: str | None = None, contract: dict | None = None,
                 **kwargs) -> None:  # fmt: skip
        """
        Args:
            data_dir: the folder that holds train/ and test/ (and optionally val/), each with one folder per class
                (read as a file browser shows it: project.data.folder.image_files).
            image_size: (height, width), or one number for square, every image is resized to; default: the most
                common size in train/, as shown (a photo's EXIF orientation turns it upright first).
            channels: 1 (grey) or 3 (colour); default: 3 if any training image has colour, else 1.
            mirrorable: a mirrored image keeps its class (augment then flips, eval_flip averages with the mirror).
            val_size: without val/, the share of train/ (below 1) or the number of images held out for validation,
                of each class in proportion to its pictures.
            cache_dir: where the decoded images are kept (default: image-folders/ in $XDG_CACHE_HOME or ~/.cache);
                nothing is written into data_dir, which may be read-only or shared by several runs.
            predict_path: an image file or a folder of them for `predict` (else it runs on the test set).
            contract: predict's data contract, the checkpoint's (train.py passes it): images are brought to its
                shape and normalized with its statistics; with predict_path, data_dir is not read at all.
            **kwargs: batch size, workers, split seed and augmentation: project.data.in_memory.InMemoryImages."""
        super().__init__(**kwargs)
        self.root = Path(os.path.expandvars(data_dir)).expanduser()
        if val_size <= 0:
            raise ValueError(f"val_size must be above 0 (validation picks the best epoch), got {val_size}")
        if image_size is not None and min([image_size] if isinstance(image_size, int) else image_size) < 1:
            raise ValueError(f"image_size must be at least 1 pixel, got {image_size}")
        if channels not in (None, 1, 3):
            raise ValueError(f"channels must be 1 (grey) or 3 (colour), got {channels}")
        if contract is not None:  # the checkpoint says everything predict needs: the training images may be gone
            self.contract = DataContract(**contract)
            self.size_and_channels = (contract["shape"][2], contract["shape"][1]), contract["shape"][0]
            if predict_path:
                return
        if not self.root.is_dir():
            what = "is a file" if self.root.exists() else "does not exist"
            on = " (predict without predict_path runs on its test/)" if contract else ""
            raise ValueError(f"data_dir {self.root} {what}; give the folder that holds train/ and test/{on}")
        for split in ("train", "test"):
            if not (self.root / split).is_dir():
                raise ValueError(f"data_dir {self.root} has no {split}/ folder: it needs train/ and test/ (and "
                                 "optionally val/), each with one folder of images per class")  # fmt: skip
        self.files = {split: image_files(self.root / split) for split in ("train", "val", "test")}
        # The classes a trained model's contract names (test/ classes it has not are refused below), else train/'s.
        self.classes = list(contract["classes"]) if contract else sorted({name for name, _ in self.files["train"]})
        if not self.classes:
            raise ValueError(f"data_dir: {self.root / 'train'} has no images in class folders; put each class's "
                             "images in a folder of its own: train/<class>/<image>")  # fmt: skip
        if len(self.classes) == 1:
            raise ValueError(f"data_dir: {self.root / 'train'} holds one class ({self.classes[0]}); a classifier needs "
                             "two or more: add a folder of images for each other class")  # fmt: skip
        for split in ("train", "val", "test"):  # train/ too where the classes are a trained model's
            if extra := sorted({name for name, _ in self.files[split]} - set(self.classes)):
                which = "the checkpoint was not trained on" if contract else "that train/ does not"
                raise ValueError(f"data_dir: {split}/ has classes {which}: {', '.join(extra)}; every {split} class "
                                 "must be a training class")  # fmt: skip
        (width, height), depth = self.size_and_channels  # before any decoding: the pictures must fit in memory
        count = sum(map(len, self.files.values()))
        need, have = count * depth * height * width, memory_available()
        if have is not None and need > have:
            raise ValueError(f"image_size: {count} images as {depth}x{height}x{width} take {need / 2**30:.1f} GiB "
                             f"decoded, more than the {have / 2**30:.1f} GiB of memory available; give a smaller "
                             "image_size")  # fmt: skip
        if not self.files["val"] and self.val_count(train := len(self.files["train"])) >= train:
            raise ValueError(f"val_size {val_size:g} leaves no training images: train/ has {train}; choose a smaller "
                             "value")  # fmt: skip

    @cached_property
    def contract(self) -> DataContract:
        """Classes from the folder names; shape, mean and std from the decoded training images."""
        images, labels = self.load()["train"]
        if not self.files["val"]:  # the statistics of the images that train, not of the validation slice
            images = self.split(images, labels, self.val_count(len(images)), by_class=True)[0].tensors[0]
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
            count = self.val_count(len(splits["train"][0]))
            self.train_set, self.val_set = self.split(*splits["train"], count, by_class=True)  # each class validates
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
        # "CHW": the layout of the cached images, channels first in memory (a cache of another layout: decoded again)
        key = hashlib.sha256(json.dumps([listing, size, channels, "CHW"]).encode()).hexdigest()[:16]
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
        real = Path(os.path.realpath(path))
        files = list(walk(path, real, real, {real, *real.parents})) if path.is_dir() else [path]
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
    """(class, file) for every image in folder/<class>/, as a file browser shows them: hidden files and folders (a
    name starting with '.': .thumbnails/, ._x.png, .DS_Store) and other suffixes are not images. A link is followed
    where it leads out of folder (a class kept on another disk), but what folder holds counts once, where it lies: a
    link to a sibling class folder is not another class, a file linked into another folder is not another image,
    and a link back up (a loop) is not walked."""
    if not folder.is_dir():
        return []
    split = Path(os.path.realpath(folder))
    seen, found = {split, *split.parents}, []
    for class_folder, real, is_dir in visible(folder, split, split, seen):
        if not is_dir:  # a file beside the class folders
            continue
        if not (files := list(walk(class_folder, real, split, seen))):
            raise ValueError(f"data_dir: class folder {class_folder} holds no images ({', '.join(sorted(SUFFIXES))}); "
                            "add images or remove the folder")  # fmt: skip
        found += [(class_folder.name, file) for file in files]
    return found


def walk(folder: Path, real: Path, split: Path, seen: set[Path]) -> Iterator[Path]:
    """The image files under folder (whose real path is real) in name order, each once (image_files says which)."""
    for path, target, is_dir in visible(folder, real, split, seen):
        if is_dir:
            yield from walk(path, target, split, seen)
        elif path.suffix.lower() in SUFFIXES:
            yield path


def visible(folder: Path, real: Path, split: Path, seen: set[Path]) -> Iterator[tuple[Path, Path, bool]]:
    """folder's entries in name order as (path, real path, is a folder), less hidden ones, links into split and what
    was reached before."""
    for entry in sorted(os.scandir(folder), key=lambda entry: entry.name):
        link = entry.is_symlink()  # only links are resolved (a realpath per file costs a stat per folder above it)
        target = Path(os.path.realpath(entry.path)) if link else real / entry.name  # realpath ends a loop, no raise
        if entry.name[0] != "." and target not in seen and not (link and target.is_relative_to(split)):
            seen.add(target)
            yield Path(entry.path), target, entry.is_dir()


def orientation(image: Image.Image) -> int:
    """The EXIF orientation (1: upright as stored) from the file's header; Image's own getexif, since PNG's would
    decode the pixels to look for an eXIf chunk after them."""
    return Image.Image.getexif(image).get(ExifTags.Base.Orientation, 1)


def image_header(path: Path) -> tuple[tuple[int, int], str]:
    """(width, height) as shown, upright, and the mode, read without decoding."""
    try:
        with Image.open(path) as image:
            return (image.size[::-1] if orientation(image) in (5, 6, 7, 8) else image.size), image.mode
    except Exception as error:
        raise UserError(f"cannot read image {path} ({type(error).__name__}: {error}); remove or replace it") from None


def decode(path: Path, size: tuple[int, int] | None, channels: int) -> np.ndarray:
    """One image file as uint8 (channels, height, width): upright (EXIF), transparency on white, resized to size
    (width, height) unless None."""
    try:
        with Image.open(path) as opened:
            image = opened.transpose(TURNS[turn]) if (turn := orientation(opened)) in TURNS else opened
            if image.mode in ("RGBA", "LA", "PA", "P"):
                image = Image.alpha_composite(Image.new("RGBA", image.size, "white"), image.convert("RGBA"))
            wide = image.mode.startswith("I")  # 16-bit grey: scaled to 8 bits (convert would clip it to white)
            image = (image.point(lambda v: v / 257) if wide else image).convert("L" if channels == 1 else "RGB")
            if size and image.size != size:
                image = image.resize(size, Image.Resampling.BILINEAR)
            pixels = np.asarray(image, dtype=np.uint8)
    except Exception as error:  # the cause stays on the error for callers with words of their own (own_images)
        raise UserError(f"cannot read image {path} ({type(error).__name__}: {error}); remove or replace it") from error
    return pixels[None] if channels == 1 else np.ascontiguousarray(pixels.transpose(2, 0, 1))  # (C, H, W) in memory


def memory_available() -> int | None:
    """Bytes of memory free for new data: Linux's MemAvailable, else the free pages; None where neither is known."""
    try:
        meminfo = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
        return int(meminfo["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        try:
            return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (AttributeError, OSError, ValueError):  # no sysconf (Windows), or no such name (macOS)
            return None


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
