"""A folder of your own pictures: the template's ImageFolderDataModule against torchvision's ImageFolder with
per-image transforms and a DataLoader, same net, batch size, optimizer and images, epoch by epoch, in one run.

    python benchmarks/image_folder.py                    # writes 10,000 32x32 RGB PNGs (10 classes) to a temp folder
    python benchmarks/image_folder.py --folder DIR --net mlp --accelerator gpu --json report.json

template  train.py's CLI (RunCLI, its callbacks, logger and checkpoints; progress bar off) on
          --data ImageFolderDataModule: the images decoded once into uint8 tensors (cached on disk; the decoding is
          timed apart, with an empty cache), then batches sliced from memory and normalized on the device
classic   a plain PyTorch loop over torchvision.datasets.ImageFolder with ToTensor + Normalize per image and a
          shuffling DataLoader (--workers processes): every epoch decodes every file again
Both train the same net from the same initial weights with AdamW (base.yaml's lr and decay); the epoch time is
the training epoch's (the template's validation, one batch, is not counted).
"""

import argparse
import copy
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from PIL import Image
from torch.nn import functional as F
from torchvision import datasets, transforms

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from project.run.cli import RunCLI  # noqa: E402


def write_folder(root: Path, train: int, test: int, classes: int = 10, size: int = 32) -> Path:
    """Random RGB pictures whose class is the colour of a square on noise, as PNG files in class folders."""
    generator = np.random.default_rng(0)
    colours = generator.integers(80, 256, (classes, 3))
    for split, count in (("train", train), ("test", test)):
        for label in range(classes):
            (root / split / f"class {label}").mkdir(parents=True, exist_ok=True)
        for i in range(count):
            label = i % classes
            pixels = generator.integers(0, 80, (size, size, 3), dtype=np.uint8)
            y, x = generator.integers(0, size - 8, 2)
            pixels[y : y + 8, x : x + 8] = colours[label]
            Image.fromarray(pixels).save(root / split / f"class {label}" / f"{i}.png")
    return root


class EpochTimes(Callback):
    def __init__(self) -> None:
        self.seconds: list[float] = []

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.start = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if trainer.strategy.root_device.type == "cuda":
            torch.cuda.synchronize()
        self.seconds.append(time.perf_counter() - self.start)


def template(folder: Path, args, logs: Path) -> dict:
    options = ["--data", "ImageFolderDataModule", "--data.data_dir", str(folder), "--data.cache_dir",
               str(logs / "cache"), "--data.batch_size", str(args.batch_size), "--model.net", args.net,
               "--model.scheduler", "null", "--max_epochs", str(args.epochs), "--default_root_dir", str(logs),
               "--enable_progress_bar", "false", "--enable_model_summary", "false", "--limit_val_batches", "1",
               "--accelerator", args.accelerator, "--seed_everything", "0"]  # fmt: skip
    start = time.perf_counter()
    cli = RunCLI(options, run=False)  # builds the data module: its contract decodes the images
    decode = time.perf_counter() - start
    initial = copy.deepcopy(cli.model.net)  # the classic loop starts from the same weights
    timer = EpochTimes()
    cli.trainer.callbacks.append(timer)
    cli.trainer.fit(cli.model, cli.datamodule)
    contract = cli.model.hparams.contract
    return {"seconds": timer.seconds, "decode_seconds": decode, "mean": contract["mean"], "std": contract["std"],
            "net": initial, "val_acc": float(cli.trainer.callback_metrics["val/acc"])}  # fmt: skip


def classic(folder: Path, args, net: torch.nn.Module, mean, std, device: torch.device) -> list[float]:
    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize(mean, std)])
    images = datasets.ImageFolder(str(folder / "train"), transform=transform)
    loader = torch.utils.data.DataLoader(images, batch_size=args.batch_size, shuffle=True, num_workers=args.workers,
                                         persistent_workers=args.workers > 0)  # fmt: skip
    optimizer = torch.optim.AdamW(net.parameters(), lr=0.0028, weight_decay=0.034)  # configs/base.yaml's
    net.to(device).train()
    seconds = []
    for _ in range(args.epochs):
        start = time.perf_counter()
        for batch, labels in loader:
            loss = F.cross_entropy(net(batch.to(device)), labels.to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - start)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folder", type=Path, help="an image folder (train/, test/); default: 10,000 written")
    parser.add_argument("--net", default="MLP", help="the net of both: MLP or CNN (default MLP)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers of the classic pipeline")
    parser.add_argument("--accelerator", default="cpu")
    parser.add_argument("--train", type=int, default=10_000)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    device = torch.device("cuda" if args.accelerator in ("gpu", "cuda") else "cpu")
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.folder or write_folder(Path(tmp) / "pictures", args.train, args.train // 10)
        ours = template(folder, args, Path(tmp) / "logs")
        theirs = classic(folder, args, ours.pop("net"), ours["mean"], ours["std"], device)
    later = {name: sum(s[1:]) / max(1, len(s) - 1) for name, s in (("template", ours["seconds"]), ("classic", theirs))}
    report = {"images": args.train, "net": args.net, "batch_size": args.batch_size, "workers": args.workers,
              "device": str(device), "template_epoch_seconds": ours["seconds"], "classic_epoch_seconds": theirs,
              "template_decode_seconds": round(ours["decode_seconds"], 2),
              "speedup_after_first_epoch": round(later["classic"] / later["template"], 2)}  # fmt: skip
    print(f"decoding {args.train + args.train // 10} images once (template, empty cache): "
          f"{ours['decode_seconds']:.1f} s")  # fmt: skip
    for name, seconds in (("template", ours["seconds"]), ("classic", theirs)):
        print(f"{name:9} epochs: {', '.join(f'{s:.2f} s' for s in seconds)}")
    print(f"after the first epoch the template is {report['speedup_after_first_epoch']}x faster per epoch")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
