"""TensorBoard pictures, one callback each, registered by name in configs/train.yaml (one that is off, null there,
is not in trainer.callbacks and costs nothing):

--callbacks.input_grid null   --callbacks.test_pictures.worst 32   --callbacks.histograms WeightHistograms
"""

import sys

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import grad_norm
from torchmetrics.classification import MulticlassConfusionMatrix
from torchvision.utils import make_grid

from project.extras.atomic import tensorboard
from project.run.errors import missing_extra

try:  # the [pictures] extra: without matplotlib a run trains and tests as well, with no figures (a note says so)
    import matplotlib

    matplotlib.use("Agg")  # draw to memory, never to a window
    import matplotlib.pyplot as plt

    NO_MATPLOTLIB = None
except ModuleNotFoundError as missing:
    plt, NO_MATPLOTLIB = None, missing_extra(missing, "pictures")  # what to install, for the callers of plt too


def class_names(pl_module: L.LightningModule, count: int) -> list[str]:
    """The data contract's class names (kept in the model's hyper-parameters), or numbers where there is none."""
    return list((pl_module.hparams.get("contract") or {}).get("classes") or map(str, range(count)))


def to_display(images: torch.Tensor, contract: dict | None = None) -> torch.Tensor:
    """Normalized images (N, C, H, W) as pixels in 0..1, in colour where C is 3, else grey: the normalization undone
    with the data contract's mean and std, or without one, each image stretched to its own range."""
    images = images.detach().float().cpu()
    if contract:
        mean, std = (torch.tensor(contract[k]).view(1, -1, 1, 1) for k in ("mean", "std"))
        images = (images * std + mean).clamp(0, 1)
    else:
        low = images.amin(dim=(1, 2, 3), keepdim=True)
        high = images.amax(dim=(1, 2, 3), keepdim=True)
        images = (images - low) / (high - low).clamp_min(1e-8)
    return images if images.shape[1] in (1, 3) else images.mean(dim=1, keepdim=True)  # other counts: as grey


class InputGrid(Callback):
    """A grid of the first training batch exactly as the network receives it (after augmentation)."""

    def __init__(self, count: int = 64) -> None:
        self.count = count

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        writer = tensorboard(trainer)
        if writer is not None and trainer.global_step == 0 and batch_idx == 0:
            images = to_display(batch[0][: self.count], pl_module.hparams.get("contract"))
            writer.add_image("train/inputs", make_grid(images, nrow=8, pad_value=1), trainer.global_step)


class TestPictures(Callback):
    """At test time: confusion matrix figure, per-class accuracy scalars, and the worst misclassified images."""

    def __init__(self, worst: int = 16) -> None:
        self.worst = worst

    def setup(self, trainer, pl_module, stage: str) -> None:
        if plt is None and stage == "test" and trainer.is_global_zero:  # before the test's progress bar starts
            print(f"note: no test figures: {NO_MATPLOTLIB}", file=sys.stderr)

    def on_test_epoch_start(self, trainer, pl_module) -> None:
        classes = len(class_names(pl_module, pl_module.hparams.get("num_classes", 10)))
        self.confusion = MulticlassConfusionMatrix(classes).to(pl_module.device)
        self.mistakes: list[tuple[float, torch.Tensor, int, int]] = []  # (confidence, image, true, predicted)

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if outputs is None:
            return
        images, labels = batch
        probabilities = outputs.softmax(dim=1)
        self.confusion.update(probabilities, labels)
        confidence, predicted = probabilities.max(dim=1)
        wrong = (predicted != labels).nonzero().flatten()
        # Keep only the most confident mistakes seen so far: a few images, not the whole test set.
        for i in wrong[confidence[wrong].argsort(descending=True)[: self.worst]].tolist():
            self.mistakes.append((confidence[i].item(), images[i].cpu(), labels[i].item(), predicted[i].item()))
        self.mistakes = sorted(self.mistakes, key=lambda m: -m[0])[: self.worst]

    def on_test_epoch_end(self, trainer, pl_module) -> None:
        matrix = self.confusion.compute().cpu()  # on every process: with several, compute() gathers from all
        writer = tensorboard(trainer)
        if writer is None:
            return
        names = class_names(pl_module, len(matrix))
        per_class = matrix.diag() / matrix.sum(dim=1).clamp_min(1)
        for name, accuracy in zip(names, per_class.tolist(), strict=True):
            writer.add_scalar(f"test/acc_class/{name}", accuracy, trainer.global_step)
        if plt is None:
            return
        writer.add_figure("test/confusion_matrix", confusion_figure(matrix, names), trainer.global_step)
        if self.mistakes:
            figure = mistakes_figure(self.mistakes, names, pl_module.hparams.get("contract"))
            writer.add_figure("test/worst_mistakes", figure, trainer.global_step)


def confusion_figure(matrix: torch.Tensor, names: list[str]):
    figure, axes = plt.subplots(figsize=(7, 6))
    rates = matrix / matrix.sum(dim=1, keepdim=True).clamp_min(1)
    axes.imshow(rates.numpy(), cmap="Blues", vmin=0, vmax=1)
    for row in range(len(names)):
        for col in range(len(names)):
            color = "white" if rates[row, col] > 0.5 else "black"
            axes.text(col, row, int(matrix[row, col]), ha="center", va="center", fontsize=7, color=color)
    axes.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=8)
    axes.set_yticks(range(len(names)), names, fontsize=8)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title(f"test confusion matrix (accuracy {matrix.diag().sum() / matrix.sum():.2%})")
    figure.tight_layout()
    return figure


def mistakes_figure(mistakes: list[tuple[float, torch.Tensor, int, int]], names: list[str], contract: dict | None):
    """The mistakes as one grid picture, each under its caption (true class, predicted class, confidence), on one
    axes: a subplot per picture took several times longer to draw, at every test."""
    columns, pad = min(4, len(mistakes)), 2
    images = to_display(torch.stack([image for _, image, _, _ in mistakes]), contract)  # in colour where C is 3
    height, width = images.shape[2:]
    band = round(0.22 * (width + pad))  # white space above each picture for its three caption lines
    grid = make_grid(torch.nn.functional.pad(images, (0, 0, band, 0), value=1), nrow=columns, padding=pad, pad_value=1)
    figure, axes = plt.subplots(figsize=(2.2 * columns, 2.2 * columns * grid.shape[1] / grid.shape[2]))
    axes.imshow(grid.permute(1, 2, 0).numpy(), interpolation="nearest")
    axes.axis("off")
    for k, (confidence, _, true, predicted) in enumerate(mistakes):
        row, column = divmod(k, columns)
        x, y = pad + column * (width + pad) + width / 2, pad + row * (height + band + pad) + band / 2
        caption = f"true {names[true]}\npredicted {names[predicted]}\n{confidence:.0%} sure"
        axes.text(x, y, caption, ha="center", va="center", fontsize=7)
    figure.tight_layout()
    return figure


class WeightHistograms(Callback):
    """Optional: a histogram of every parameter and of its gradient, once per epoch."""

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        writer = tensorboard(trainer)
        if writer is not None and trainer.is_last_batch:
            for name, parameter in pl_module.named_parameters():
                writer.add_histogram(f"weights/{name}", parameter.detach().cpu(), trainer.global_step)
                if parameter.grad is not None:
                    writer.add_histogram(f"gradients/{name}", parameter.grad.detach().cpu(), trainer.global_step)


class GradientNorm(Callback):
    """Optional: the total 2-norm of the gradients before each optimizer step, as train/grad_norm."""

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        pl_module.log("train/grad_norm", grad_norm(pl_module, norm_type=2)["grad_2.0_norm_total"])


class ModelGraph(Callback):
    """Optional: the network's graph in TensorBoard's GRAPHS tab, traced on one batch at the start."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        writer = tensorboard(trainer)
        if writer is not None and trainer.global_step == 0 and batch_idx == 0:
            writer.add_graph(pl_module.net, batch[0][:1])
