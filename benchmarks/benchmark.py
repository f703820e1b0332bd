"""Training speed of the template against plain PyTorch: same data, model, batch size, optimizer and steps.

    python benchmarks/benchmark.py                                  # synthetic data of MNIST's size (60k)
    python benchmarks/benchmark.py --dataset fashion_mnist --data-dir /usr/share/datasets/fashion-mnist
    python benchmarks/benchmark.py --accelerator gpu --models cnn --batch-size 512

Three ways to train, each in a subprocess of its own (so each has its own peak memory), one after the other:
  lightning  the project as train.py builds it (RunCLI: its callbacks, logger and checkpoints; progress
             bar off), with the benchmark's net, optimizer and data; --callbacks-off leaves the callbacks out
  per_image  a plain PyTorch loop over a per-image pipeline: torchvision's dataset class with per-image
             ToTensor + Normalize, a shuffling DataLoader, the loop
  tensors    a plain PyTorch loop over the same in-memory uint8 tensors, normalized per batch: the Lightning-free
             lower bound
All three train the same net from the same initial weights with Adam (lr 1e-3) on the same 55k training images
and are validated on the same 5k after each epoch (validation time is not counted in the epoch time).
(a) and (c) use Adam as the project's recipes do, fused (one kernel for all parameters); (b) uses it as the
classic loop does, one tensor at a time. So a/c is Lightning's overhead alone, and b/a all that the template does
differently.
"""

import argparse
import gzip
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import torch
from torch.nn import functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from project.data import DATASETS, MNISTDataModule  # noqa: E402
from project.data.idx import IDX_FILES, find_idx_files  # noqa: E402
from project.models import CNN, MLP  # noqa: E402

APPROACHES = ("lightning", "per_image", "tensors")
NETS = {"mlp": MLP, "cnn": CNN}


def make_net(name: str) -> torch.nn.Module:
    torch.manual_seed(0)  # the same initial weights for every approach
    return NETS[name]()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # peak resident memory of this process


def data_module(args) -> MNISTDataModule:
    dm = MNISTDataModule(args.dataset, args.data_dir, args.val_size, batch_size=args.batch_size,
                         num_workers=args.workers, download=False)  # fmt: skip
    dm.setup("fit")
    return dm


def run_lightning(args, device: torch.device) -> dict:
    import lightning as L
    import yaml

    from project.run.cli import RunCLI

    class EpochTimer(L.Callback):
        """Training time of each epoch (up to the start of validation) and the validation accuracy after it."""

        def __init__(self):
            self.seconds, self.val_acc = [], []

        def on_train_epoch_start(self, trainer, pl_module):
            sync(device)
            self.start = time.perf_counter()

        def on_validation_epoch_start(self, trainer, pl_module):
            sync(device)
            self.seconds.append(time.perf_counter() - self.start)

        def on_train_epoch_end(self, trainer, pl_module):
            self.val_acc.append(float(trainer.callback_metrics["val/acc"]))

    # The project as `python train.py` builds it (its logger, checkpoints and callbacks), with the benchmark's
    # net (its class defaults, not the recipe's), optimizer, data and epochs; --callbacks-off leaves out every
    # callback of the template.
    flags = [
        "--model.net", NETS[args.model].__name__, "--model.optimizer", "Adam",
        "--model.optimizer.lr", "0.001", "--model.optimizer.fused", "true", "--model.scheduler", "null",
        "--data.dataset", args.dataset, "--data.data_dir", args.data_dir, "--data.batch_size", str(args.batch_size),
        "--data.val_size", str(args.val_size), "--data.num_workers", str(args.workers), "--data.download", "false",
        "--accelerator", args.accelerator, "--devices", "1", "--max_epochs", str(args.epochs),
        "--enable_progress_bar", "false", "--enable_model_summary", "false", "--num_sanity_val_steps", "0",
        "--default_root_dir", args.log_dir,
    ]  # fmt: skip
    if args.callbacks_off:
        names = yaml.safe_load(RunCLI.base_configs[-1].read_text())["callbacks"]
        flags += [word for name in names for word in (f"--callbacks.{name}", "null")]
        flags += ["--enable_checkpointing", "false"]
    cli = RunCLI(flags, run=False)
    cli.model.net.load_state_dict(make_net(args.model).state_dict())  # the same initial weights as the loops
    timer = EpochTimer()
    cli.trainer.callbacks.append(timer)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    return {"epoch_seconds": timer.seconds, "val_acc": timer.val_acc, "train_images": len(cli.datamodule.train_set)}


def plain_loop(args, device, net, train_batches, val_batches, fused: bool) -> dict:
    """The classic loop: zero_grad, forward, loss, backward, step; then evaluate without gradients."""
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3, fused=fused)
    seconds, accuracies = [], []
    for _ in range(args.epochs):
        net.train()
        sync(device)
        start = time.perf_counter()
        for images, labels in train_batches():
            images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
            optimizer.zero_grad()
            loss = F.cross_entropy(net(images), labels)
            loss.backward()
            optimizer.step()
        sync(device)
        seconds.append(time.perf_counter() - start)
        net.eval()
        correct = total = 0
        with torch.no_grad():
            for images, labels in val_batches():
                images, labels = images.to(device), labels.to(device)
                correct += (net(images).argmax(dim=1) == labels).sum().item()
                total += len(labels)
        accuracies.append(correct / total)
    return {"epoch_seconds": seconds, "val_acc": accuracies}


def run_per_image(args, device: torch.device) -> dict:
    from torch.utils.data import DataLoader, Subset
    from torchvision import transforms

    dm = data_module(args)  # only for the indices of the same split
    info = DATASETS[args.dataset]
    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((info.mean,), (info.std,))])
    full = info.torchvision_class(args.torchvision_root, train=True, transform=transform)
    order = torch.randperm(len(full), generator=torch.Generator().manual_seed(dm.hparams.split_seed))
    val_idx, train_idx = order[: dm.hparams.val_size], order[dm.hparams.val_size :]
    train = DataLoader(Subset(full, train_idx.tolist()), args.batch_size, shuffle=True, num_workers=args.workers)
    val = DataLoader(Subset(full, val_idx.tolist()), args.batch_size, num_workers=args.workers)
    measured = plain_loop(args, device, make_net(args.model).to(device), lambda: train, lambda: val, fused=False)
    return {**measured, "train_images": len(train_idx)}


def run_tensors(args, device: torch.device) -> dict:
    dm = data_module(args)
    train_images, train_labels = dm.train_set.tensors
    val_images, val_labels = dm.val_set.tensors

    def batches(images, labels, shuffle):
        order = torch.randperm(len(images)) if shuffle else torch.arange(len(images))
        for start in range(0, len(images), args.batch_size):
            index = order[start : start + args.batch_size]
            yield dm.normalize(images[index].to(device)), labels[index]

    net = make_net(args.model).to(device)
    train, val = partial(batches, train_images, train_labels, True), partial(batches, val_images, val_labels, False)
    return {**plain_loop(args, device, net, train, val, fused=True), "train_images": len(train_images)}


def worker(args) -> None:
    """One approach, one model: print its measurements as one JSON line."""
    device = torch.device("cuda" if args.accelerator == "gpu" else "cpu")
    runs = {"lightning": run_lightning, "per_image": run_per_image, "tensors": run_tensors}
    measured = runs[args.worker](args, device)
    measured["peak_memory_mb"] = round(peak_memory_mb(device), 1)
    print("RESULT " + json.dumps(measured))


def torchvision_layout(files: dict[str, Path], dataset: str, root: Path) -> Path:
    """Uncompressed copies of the four files where torchvision's dataset class looks for them (root/Class/raw)."""
    raw = root / DATASETS[dataset].torchvision_class.__name__ / "raw"
    raw.mkdir(parents=True)
    for role, path in files.items():
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as source, open(raw / IDX_FILES[role], "wb") as target:
            shutil.copyfileobj(source, target)
    return root


def summarize(model: str, runs: dict[str, dict], target: float) -> list[dict]:
    rows = []
    for approach, run in runs.items():
        epoch = min(run["epoch_seconds"])  # the fastest epoch: the first one also pays for warm-up
        elapsed, to_target = 0.0, None
        for seconds, acc in zip(run["epoch_seconds"], run["val_acc"], strict=True):
            elapsed += seconds
            if to_target is None and acc >= target:
                to_target = round(elapsed, 2)
        rows.append({
            "model": model, "approach": approach, "epoch_seconds": round(epoch, 2),
            "samples_per_second": round(run["train_images"] / epoch), "peak_memory_mb": run["peak_memory_mb"],
            "final_val_acc": round(run["val_acc"][-1], 4), f"seconds_to_{target:.0%}": to_target,
            "all_epoch_seconds": [round(s, 2) for s in run["epoch_seconds"]],
        })  # fmt: skip
    by = {row["approach"]: row["epoch_seconds"] for row in rows}
    for row in rows:
        if row["approach"] == "lightning":
            row["speedup_over_per_image"] = round(by["per_image"] / by["lightning"], 2)
            row["overhead_over_tensors"] = round(by["lightning"] / by["tensors"], 3)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", choices=NETS, default=["mlp", "cnn"])
    parser.add_argument("--dataset", choices=DATASETS, default="mnist")
    parser.add_argument("--data-dir", help="folder with the four IDX files; default: synthetic data of MNIST's size")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--val-size", type=int, default=5000, help="training images held out for validation")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers (lightning and per_image)")
    parser.add_argument("--accelerator", choices=["cpu", "gpu"], default="cpu")
    parser.add_argument("--target-acc", type=float, default=0.85, help="validation accuracy for time-to-target")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--callbacks-off", action="store_true", help="(a) without any of the template's callbacks")
    parser.add_argument("--worker", choices=APPROACHES, help=argparse.SUPPRESS)
    parser.add_argument("--model", choices=NETS, help=argparse.SUPPRESS)
    parser.add_argument("--torchvision-root", help=argparse.SUPPRESS)
    parser.add_argument("--log-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)

    with tempfile.TemporaryDirectory() as tmp:
        if args.data_dir is None:
            from tests.idx_files import write_dataset

            args.data_dir = str(write_dataset(Path(tmp) / "synthetic", train=60000, test=10000))
        files = find_idx_files(MNISTDataModule(args.dataset, args.data_dir).search_folders())
        if files is None:
            sys.exit(f"error: no {args.dataset} IDX files in {args.data_dir}")
        root = torchvision_layout(files, args.dataset, Path(tmp) / "torchvision")
        rows = []
        for model in args.models:
            runs = {}
            for approach in APPROACHES:
                command = [sys.executable, __file__, *sys.argv[1:], "--worker", approach, "--model", model,
                           "--data-dir", args.data_dir, "--torchvision-root", str(root),
                           "--log-dir", str(Path(tmp) / "logs")]  # fmt: skip
                done = subprocess.run(command, capture_output=True, text=True)
                result = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
                if done.returncode != 0 or not result:
                    sys.exit(f"error: {approach} / {model} failed:\n{done.stderr[-3000:]}")
                runs[approach] = json.loads(result[-1][len("RESULT ") :])
                print(f"  {model} {approach}: {runs[approach]}", file=sys.stderr)
            rows += summarize(model, runs, args.target_acc)

    target = f"seconds_to_{args.target_acc:.0%}"
    print(f"\n{'model':6}{'approach':11}{'epoch s':>9}{'samples/s':>11}{'peak MB':>9}{'val acc':>9}{target:>16}")
    for row in rows:
        print(f"{row['model']:6}{row['approach']:11}{row['epoch_seconds']:>9}{row['samples_per_second']:>11}"
              f"{row['peak_memory_mb']:>9}{row['final_val_acc']:>9}{row[target] or '-':>16}")  # fmt: skip
    for row in rows:
        if row["approach"] == "lightning":
            print(f"{row['model']}: project {row['speedup_over_per_image']}x faster than the per-image loop (b/a); "
                  f"Lightning overhead {row['overhead_over_tensors']}x of the plain tensor loop (a/c)")  # fmt: skip
    report = {"device": device_name(args.accelerator), "torch": torch.__version__, "args": vars(args), "rows": rows}
    print(json.dumps(report, indent=2, default=str))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=str) + "\n")


def device_name(accelerator: str) -> str:
    if accelerator == "gpu" and torch.cuda.is_available():
        return torch.cuda.get_device_name()
    import platform

    return f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"


if __name__ == "__main__":
    main()
