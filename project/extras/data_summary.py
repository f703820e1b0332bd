"""DataSummary: the data a run trains on, shown once as the fit starts: its classes with their picture counts per
split, a note for a class far smaller than the others or with no validation pictures, and the same table in
TensorBoard's text tab."""

import statistics
import sys

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torch.utils.data import TensorDataset

from project.extras.atomic import tensorboard

SPLITS = ("train", "val", "test")


class DataSummary(Callback):
    """Counts the labels of the data module's in-memory splits (`train_set`, `val_set`, `test_set`, as
    project.data.in_memory.InMemoryImages holds them) against its contract's classes; a data module without them
    gets its class names only."""

    def __init__(self, small: float = 0.25, rows: int = 20) -> None:
        """
        Args:
            small: a class with fewer training pictures than this share of the median class's is noted.
            rows: up to this many classes, a row each; more, one line with the range of the counts."""
        if not 0 <= small < 1:
            raise ValueError(f"small must be 0 or more and below 1, got {small}")
        self.small, self.rows = small, rows

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        classes = list(getattr(getattr(trainer.datamodule, "contract", None), "classes", None) or [])
        if not classes or not trainer.is_global_zero or trainer.sanity_checking:
            return
        counts = {split: torch.bincount(data.tensors[1], minlength=len(classes)).tolist() for split in SPLITS
                  if isinstance(data := getattr(trainer.datamodule, f"{split}_set", None), TensorDataset)}  # fmt: skip
        table = summary(classes, counts, self.rows)
        print(table, file=sys.stderr)
        for note in [*small_classes(classes, counts.get("train"), self.small), *unvalidated(classes, counts)]:
            print(f"note: {note}", file=sys.stderr)
        if (writer := tensorboard(trainer)) is not None:  # text as Markdown: a table TensorBoard shows as one
            writer.add_text("data", "\n".join(f"    {line}" for line in table.splitlines()), trainer.global_step)


def summary(classes: list[str], counts: dict[str, list[int]], rows: int) -> str:
    """A row per class with its pictures per split (or one line with the range where there are many classes)."""
    total = ", ".join(f"{sum(c)} {split}" for split, c in counts.items())
    head = f"data: {len(classes)} classes" + (f", {total} pictures" if counts else "")
    if len(classes) > rows or not counts:
        ranges = [f"{split} {min(c)}-{max(c)}" for split, c in counts.items()]
        return head + (f"; per class: {', '.join(ranges)}" if ranges else f": {', '.join(classes[:rows])}")
    width = max(len(name) for name in classes)
    lines = [head, f"  {'class':<{width}}  " + "  ".join(f"{split:>6}" for split in counts)]
    for i, name in enumerate(classes):
        lines.append(f"  {name:<{width}}  " + "  ".join(f"{c[i]:>6}" for c in counts.values()))
    return "\n".join(lines)


def small_classes(classes: list[str], train: list[int] | None, small: float) -> list[str]:
    """A note for each class with fewer training pictures than `small` x the median class's."""
    if not train:
        return []
    median = statistics.median(train)
    return [f"class {name!r} has {count} training pictures, the median class {median:g}: its accuracy will rest on "
            "few pictures; add pictures of it, or read its accuracy in TensorBoard's per-class chart with care"
            for name, count in zip(classes, train, strict=True) if count < small * median]  # fmt: skip


def unvalidated(classes: list[str], counts: dict[str, list[int]]) -> list[str]:
    """A note for each class with training pictures but none in validation (a class whose share of the slice is
    under half a picture, or a data module that draws the slice at random): val/acc, and the best checkpoint, leave
    it out."""
    train, val = counts.get("train"), counts.get("val")
    if not train or not val:
        return []
    return [f"class {name!r} has no validation pictures: val/acc and the choice of the best checkpoint leave it "
            "out; give it more pictures, a larger --data.val_size, or a val/ folder"
            for name, n_train, n_val in zip(classes, train, val, strict=True) if n_train and not n_val]  # fmt: skip
