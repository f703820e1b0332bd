"""Small folders of pictures in class sub-folders, written for tests: the format a user brings."""

from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = ("red circle", "green bar", "blue cross")  # spaces in class names, as users name folders


def write_image_folder(root: Path, per_class: int = 24, size: tuple[int, int] = (24, 20), val: bool = False) -> Path:
    """root/{train,test}[/val]/<class>/<n>.png|jpg: RGB pictures (width, height = size) whose class is the colour
    and shape of a mark on noise, learnable in a few steps; some JPEG, some palette and RGBA PNG, one odd size."""
    generator = np.random.default_rng(0)
    width, height = size
    splits = {"train": per_class, "test": per_class // 2, **({"val": per_class // 2} if val else {})}
    for split, count in splits.items():
        for label, name in enumerate(CLASSES):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                pixels = generator.integers(0, 60, (height, width, 3), dtype=np.uint8)
                y, x = height // 2 + generator.integers(-3, 4), width // 2 + generator.integers(-3, 4)
                if label == 0:
                    pixels[y - 4 : y + 4, x - 4 : x + 4, 0] = 230
                elif label == 1:
                    pixels[:, x - 2 : x + 2, 1] = 230
                else:
                    pixels[y - 1 : y + 1, :, 2] = 230
                    pixels[:, x - 1 : x + 1, 2] = 230
                image = Image.fromarray(pixels, "RGB")
                if i == 0 and split == "train":
                    image = image.resize((width * 2, height * 2))  # another size: brought to the common one
                if i % 4 == 1:
                    image.save(folder / f"{i}.jpg", quality=95)
                elif i % 4 == 2:
                    image.convert("P", palette=Image.Palette.ADAPTIVE).save(folder / f"{i}.png")
                elif i % 4 == 3:
                    image.convert("RGBA").save(folder / f"{i}.png")
                else:
                    image.save(folder / f"{i}.png")
    return root


def write_photo(path: Path, upright: np.ndarray, orientation: int = 6) -> Path:
    """An image file as a phone writes it: `upright` (height, width, 3) as the sensor stored it, turned away by an
    EXIF orientation (6: a quarter turn, 8: the other quarter, 3: upside down) that turns it back when shown."""
    stored = {1: upright, 3: np.rot90(upright, 2), 6: np.rot90(upright, 1), 8: np.rot90(upright, -1)}[orientation]
    exif = Image.Exif()
    exif[0x0112] = orientation  # the Orientation tag
    path.parent.mkdir(parents=True, exist_ok=True)
    quality = {"quality": 95} if path.suffix == ".jpg" else {}
    Image.fromarray(np.ascontiguousarray(stored), "RGB").save(path, exif=exif, **quality)
    return path
