"""PredictionTable: `predict` results as a table on the terminal and as predictions.csv in the run folder."""

import csv
import io
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from project.errors import UserError
from project.extras.atomic import write_atomically
from project.extras.pictures import class_names

COLUMNS = ("file", "predicted", "class", "confidence", "top3", "true")


class PredictionTable(Callback):
    """Prints file, predicted class, confidence and top-3 for the first `rows` images, and writes every image's row
    to predictions.csv. Rows are matched to files by order: the predict loader does not shuffle."""

    def __init__(self, rows: int = 50) -> None:
        """
        Args:
            rows: at most this many rows on the terminal (predict on a test set of 10,000: the file has them all)."""
        if rows < 0:
            raise ValueError(f"rows must be 0 or more, got {rows}")
        self.rows = rows

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        # Each process would predict a share of the batches, and its rows would be misnamed. Every process stops
        # here, before the first batch; the line is process 0's, once (the others share its terminal).
        if stage == "predict" and trainer.world_size > 1:
            if trainer.is_global_zero:
                raise UserError("predict makes its table in one process: pass --devices 1 (it takes seconds)")
            raise SystemExit(2)

    def on_predict_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.predictions: list[torch.Tensor] = []

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self.predictions.append(outputs)

    def on_predict_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        datamodule = trainer.datamodule
        probabilities = torch.cat(self.predictions).float().cpu()
        count = len(probabilities)  # all images, or with --limit_predict_batches those of the first batches
        names = (getattr(datamodule, "predict_names", None) or [str(i) for i in range(count)])[:count]
        classes = class_names(pl_module, probabilities.shape[1])
        labels = getattr(datamodule, "predict_set", None)
        labels = labels.tensors[1].tolist()[:count] if labels is not None else [-1] * count
        rows = []
        top = probabilities.topk(min(3, probabilities.shape[1]), dim=1)
        for name, values, indices, label in zip(names, top.values, top.indices, labels, strict=True):
            rows.append({
                "file": name, "predicted": int(indices[0]), "class": classes[indices[0]],
                "confidence": f"{values[0]:.4f}",
                "top3": "; ".join(f"{classes[i]} {v:.3f}" for v, i in zip(values, indices, strict=True)),
                "true": classes[label] if label >= 0 else "",
            })  # fmt: skip
        folder = trainer.log_dir or trainer.default_root_dir
        _print_table(rows[: self.rows])
        written = not trainer.fast_dev_run  # a smoke test writes nothing
        if len(rows) > self.rows:
            print(f"... {len(rows) - self.rows} more" + (" in predictions.csv" if written else ""))
        if written:
            write_atomically(Path(folder) / "predictions.csv", _csv(rows))
            print(f"wrote {Path(folder) / 'predictions.csv'}")


def _print_table(rows: list[dict[str, str]]) -> None:
    print()  # the progress bar leaves its line open
    if not rows:
        return
    shown = [c for c in COLUMNS if any(row[c] != "" for row in rows)]
    widths = {c: max(len(c), *(len(str(row[c])) for row in rows)) for c in shown}
    print("  ".join(c.ljust(widths[c]) for c in shown))
    for row in rows:
        print("  ".join(str(row[c]).ljust(widths[c]) for c in shown))


def _csv(rows: list[dict[str, str]]) -> str:
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
    return text.getvalue()
