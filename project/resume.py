"""What `--ckpt_path` points at: `last` is the newest run of this experiment that holds a last.ckpt, and any
checkpoint is read once, weights only, with an error a person can act on when it is not one."""

import re
import zipfile
from pathlib import Path
from typing import Any

import torch

from project.errors import UserError

RUN_FOLDER = re.compile(r"version_(\d+)")


def latest_run(experiment: Path) -> Path | None:
    """The run folder (experiment/version_N) with the highest N that holds checkpoints/last.ckpt."""
    runs = [ckpt.parents[1] for ckpt in experiment.glob("version_*/checkpoints/last.ckpt")]
    runs = [run for run in runs if RUN_FOLDER.fullmatch(run.name)]
    return max(runs, key=lambda run: int(RUN_FOLDER.fullmatch(run.name)[1]), default=None)


def run_folder_of(ckpt: Path) -> Path | None:
    """The run folder a checkpoint was written into (<root>/<name>/version_N/checkpoints/x.ckpt), if it was."""
    ckpt = ckpt.resolve()
    if ckpt.parent.name == "checkpoints" and RUN_FOLDER.fullmatch(ckpt.parents[1].name):
        return ckpt.parents[1]
    return None


def read_checkpoint(path: Path, option: str = "--ckpt_path") -> dict[str, Any]:
    """The checkpoint's contents, loaded weights-only (no code from the file runs), or a UserError that says
    what the file is instead; `option` is how the user gave the path."""
    if not path.is_file():
        hint = "; `--ckpt_path last` takes the newest run's" if option == "--ckpt_path" else ""
        raise UserError(
            f"{option} {path}: no such file. Checkpoints are in <run folder>/checkpoints/ "
            f"(e.g. logs/mnist_cnn/version_0/checkpoints/last.ckpt){hint}"
        )
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        if zipfile.is_zipfile(path) and (code := re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(error))):
            raise UserError(
                f"{option} {path} refers to Python code ({code[1]}), which weights-only loading does not run; "
                "this template loads checkpoints of tensors and plain data only (README: Reliability)"
            ) from error
        reason = f"{type(error).__name__}: {' '.join(str(error).split())[:120]}"
        if not zipfile.is_zipfile(path):
            reason = "it is not the zip archive that torch.save writes"
        raise UserError(
            f"{option} {path} is not a PyTorch checkpoint ({reason}); pass a .ckpt file written by train.py"
        ) from error
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise UserError(
            f"{option} {path} is a PyTorch file but not a Lightning checkpoint (it has no state_dict); "
            "pass a .ckpt file written by train.py"
        )
    return checkpoint


def check_same_network(saved: dict[str, torch.Tensor], current: dict[str, torch.Tensor]) -> None:
    """Raise a UserError naming the first tensor that a checkpoint lacks, adds or shapes differently."""
    for name, tensor in current.items():
        if name not in saved:
            problem = f"this model has {name}, the checkpoint does not"
        elif saved[name].shape != tensor.shape:
            problem = f"{name} is {tuple(saved[name].shape)} in the checkpoint, {tuple(tensor.shape)} in this model"
        else:
            continue
        break
    else:
        extra = next((name for name in saved if name not in current), None)
        if extra is None:
            return
        problem = f"the checkpoint has {extra}, this model does not"
    raise UserError(
        f"the checkpoint was trained with a different network ({problem}); run with the settings it was "
        "trained with, e.g. --config <its run folder>/config.yaml, or leave out the --model.net options"
    )
