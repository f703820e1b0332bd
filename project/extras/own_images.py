"""Your own images brought to the training format: grey, 28x28, light object on black, centred like the data set.

The steps, in order (MNIST's own preparation, as its authors describe it):
1. Read as an image folder's pictures are (project.data.folder.decode): upright by the EXIF orientation,
   transparency flattened onto white, 16-bit grey scaled to 8 bits, converted to grey.
2. Polarity: the data sets have a light object on a black background. If the image's border is brighter
   than its middle grey (a dark digit on light paper), it is inverted.
3. Crop to the box of pixels brighter than a quarter of the maximum, so margins and paper do not count.
4. Scale the longer side to 20 pixels for digits (MNIST, KMNIST) or 28 for Fashion-MNIST, keeping the
   aspect ratio, and stretch the contrast to 0..255.
5. Paste into a black 28x28 image: digits centred by their centre of mass, as in MNIST; clothes centred by
   their box, as in Fashion-MNIST.
The result is a uint8 tensor, normalized later exactly like training batches.
"""

import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from project.data.folder import decode
from project.errors import UserError

SIZE = 28


def load_images(path: Path, dataset: str = "mnist") -> tuple[torch.Tensor, list[str]]:
    """A file, or the files of a folder, as (N, 28, 28) uint8 images in the format of `dataset`, and their names
    (MNISTDataModule's own_images). A file that is no image is reported by name and skipped."""
    if not path.exists():
        raise ValueError(f"predict_path {path} does not exist; give an image file or a folder of images")
    images, names = [], []
    for file in sorted(p for p in path.iterdir() if p.is_file() and p.name[0] != ".") if path.is_dir() else [path]:
        try:
            images.append(load_image(file, dataset))
            names.append(str(file))
        except ValueError as error:
            print(f"skipped {error}", file=sys.stderr)  # the other files go on
    if not images:
        raise ValueError(f"predict_path: no readable image in {path}; give PNG or JPG files")
    return torch.stack(images), names


def load_image(path: Path, dataset: str = "mnist") -> torch.Tensor:
    """One image file as a (28, 28) uint8 tensor in the format of `dataset`; raises ValueError if unreadable.
    Clothes fill their box; digits and kana sit in a 20 px box."""
    digits = dataset != "fashion_mnist"
    return to_dataset_format(path, box=20 if digits else 28, center_of_mass=digits)


def to_dataset_format(path: Path, box: int = 20, center_of_mass: bool = True) -> torch.Tensor:
    """One image file as a (28, 28) uint8 tensor, steps 1-5 above; raises ValueError if unreadable."""
    try:
        grey = torch.from_numpy(decode(path, None, 1)[0].astype(np.float32))
    except UserError as error:
        cause = error.__cause__
        raise ValueError(f"{path}: not a readable image ({type(cause).__name__}: {cause})") from None
    border = torch.cat([grey[0], grey[-1], grey[:, 0], grey[:, -1]])
    if border.median() > 127:
        grey = 255 - grey
    grey = grey - grey.min()
    if grey.max() <= 0:
        return torch.zeros(SIZE, SIZE, dtype=torch.uint8)  # a blank image stays blank
    rows, cols = torch.nonzero(grey > grey.max() / 4, as_tuple=True)
    grey = grey[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    height, width = grey.shape
    scale = box / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    small = Image.fromarray((grey / grey.max() * 255).byte().numpy(), mode="L").resize(size, Image.LANCZOS)
    digit = torch.from_numpy(np.asarray(small, dtype=np.float32).copy())
    canvas = torch.zeros(SIZE, SIZE)
    top, left = (SIZE - size[1]) // 2, (SIZE - size[0]) // 2
    if center_of_mass and digit.sum() > 0:
        ys, xs = torch.meshgrid(torch.arange(size[1]), torch.arange(size[0]), indexing="ij")
        cy, cx = (ys * digit).sum() / digit.sum(), (xs * digit).sum() / digit.sum()
        top = min(max(round(SIZE / 2 - cy.item()), 0), SIZE - size[1])
        left = min(max(round(SIZE / 2 - cx.item()), 0), SIZE - size[0])
    canvas[top : top + size[1], left : left + size[0]] = digit
    return (canvas / canvas.max() * 255).round().byte()
