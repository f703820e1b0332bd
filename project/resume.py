"""What `--ckpt_path` points at: `last` is the newest run of this experiment that holds a last.ckpt, and any
checkpoint is read once, weights only, with an error a person can act on when it is not one."""

import contextlib
import fcntl
import functools
import json
import os
import re
import sys
import zipfile
from pathlib import Path
from typing import Any

import torch
import yaml

from project.data.contract import CONTRACT_LINKS
from project.errors import UserError

RUN_FOLDER = re.compile(r"version_(\d+)")


def latest_run(experiment: Path, recipe: dict[str, Any] | None = None) -> Path | None:
    """The run folder (experiment/version_N) with the highest N that holds checkpoints/last.ckpt and, when
    `recipe` is given, whose config.yaml has the same recipe (recipe_of)."""
    runs = [ckpt.parents[1] for ckpt in experiment.glob("version_*/checkpoints/last.ckpt")]
    runs = [run for run in runs if RUN_FOLDER.fullmatch(run.name)]
    if recipe is not None:
        runs = [run for run in runs if recipe == recipe_of(saved_config(run))]
    return max(runs, key=lambda run: int(RUN_FOLDER.fullmatch(run.name)[1]), default=None)


def finished(run: Path, tested: bool) -> bool:
    """Whether the run's fit reached its end after its last.ckpt was saved (results.json, written then by the
    run summary, holds that step) and, with `tested`, its test after that too. Unreadable files: not finished."""
    try:
        summary = json.loads((run / "results.json").read_text())
        last = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True, mmap=True)
    except Exception:
        return False
    return summary.get("global_step") == last.get("global_step") and (not tested or "tested_checkpoint" in summary)


def lock_run(run: Path) -> int | None:
    """One process at a time writes a run: a lock on the run folder itself (no file made), held by the returned
    descriptor until it is closed or the process ends; None where the file system has no locks (some NFS, Lustre)."""
    folder = os.open(run, os.O_RDONLY)
    try:
        fcntl.flock(folder, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as error:
        os.close(folder)
        if not isinstance(error, BlockingIOError):  # not held by another process: this file system cannot lock
            return None
        raise UserError(f"{run} is being continued by another process; wait for it to end, or leave out "
                        "--ckpt_path to start a new run") from None  # fmt: skip
    return folder


def best_checkpoint(callback) -> str | None:
    """A ModelCheckpoint's best checkpoint, in its folder as it is now (a run folder moved since it was saved)."""
    best = callback.best_model_path or None
    return str(Path(callback.dirpath) / Path(best).name) if best and not Path(best).is_file() else best


def experiment_name(config: dict[str, Any]) -> str:
    """<data>_<net>, e.g. fashion_mnist_cnn: the folder under logs/ that holds this recipe's runs. The data is named
    by its data set (mnist, ...), else by its folder's name, else by its data module's."""
    data = config.get("data") or {}
    arguments = data.get("init_args") or {}
    name = str(data.get("class_path", "data")).rsplit(".", 1)[-1]
    if arguments.get("dataset") or arguments.get("data_dir"):
        name = arguments.get("dataset") or Path(os.path.expandvars(arguments["data_dir"])).expanduser().resolve().name
    net = str(config["model"]["net"]["class_path"]).rsplit(".", 1)[-1]
    return re.sub(r"\W+", "_", f"{name}_{net}").lower()


def recipe_of(config: dict[str, Any]) -> dict[str, Any]:
    """What makes two runs the same recipe: every model option (net, optimizer, schedule, loss, ...) and the
    data module with its data: the data set, or where the data set has no name, its folder; not Trainer options
    such as epochs or devices."""
    data = config.get("data") or {}
    arguments = data.get("init_args") or {}
    where = arguments.get("dataset") or arguments.get("data_dir")
    if not arguments.get("dataset") and where:
        where = str(Path(os.path.expandvars(where)).expanduser().resolve())
    recipe = {"model": config.get("model"), "data": [data.get("class_path"), where]}
    recipe = json.loads(json.dumps(recipe, default=str))  # tuples and lists alike, as in a YAML file
    for key in CONTRACT_LINKS:  # what the data decides (parsed configs have it, saved ones do not)
        *parents, name = key.split(".")
        parent = functools.reduce(lambda node, part: (node or {}).get(part) or {}, parents, recipe)
        parent.pop(name, None)
    return recipe


def saved_config(run: Path) -> dict[str, Any]:
    """The config.yaml LightningCLI saved in a run folder, or {} where there is none."""
    path = run / "config.yaml"
    try:
        config = yaml.safe_load(path.read_text()) if path.is_file() else {}
        recipe_of(config)  # the shape that resume reads (mappings where it expects them), or the note below
    except (OSError, yaml.YAMLError, UnicodeDecodeError, AttributeError, TypeError):
        print(f"note: {path} cannot be read; that run is left out", file=sys.stderr)
        return {}  # a damaged file in one run folder does not stop the others' resume
    return config if isinstance(config, dict) else {}


def run_folder_of(ckpt: Path) -> Path | None:
    """The run folder a checkpoint was written into (<root>/<name>/version_N/checkpoints/x.ckpt, or one renamed: it
    holds config.yaml), if any; as given (a relative path stays relative: the run's own relative paths match)."""
    for path in (ckpt, ckpt.resolve()):  # a link too (latest -> version_3); a relative path short of a parent: resolved
        run = path.parents[1] if path.parent.name == "checkpoints" and len(path.parents) > 3 else None
        if run is not None and (RUN_FOLDER.fullmatch(run.name) or (run / "config.yaml").is_file()):
            return run
    return None


def read_checkpoint(path: Path, option: str = "--ckpt_path") -> dict[str, Any]:
    """The checkpoint's contents, loaded weights-only (no code from the file runs), or a UserError that says
    what the file is instead; `option` is how the user gave the path."""
    if not path.is_file():
        hint = "; `--ckpt_path last` takes the newest run's" if option == "--ckpt_path" else ""
        what = "a folder, not a file" if path.is_dir() else "no such file"
        raise UserError(f"{option} {path}: {what}. Checkpoints are in <run folder>/checkpoints/ "
                        f"(e.g. logs/mnist_cnn/version_0/checkpoints/last.ckpt){hint}")  # fmt: skip
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except PermissionError:  # a file this user may not read: the run's one line names it as such
        raise
    except Exception as error:
        archive, code = zipfile.is_zipfile(path), []
        if archive:
            with contextlib.suppress(Exception):  # a torn archive: reported below as what it is
                code = torch.serialization.get_unsafe_globals_in_checkpoint(path)
        if code:
            raise UserError(f"{option} {path} refers to Python code ({', '.join(code)}), which weights-only loading "
                            "does not run; this template loads checkpoints of tensors and plain data only "
                            "(docs/reliability.md)") from error  # fmt: skip
        why = f"{type(error).__name__}: {' '.join(str(error).split())[:120]}"
        reason = why if archive else "it is not the zip archive that torch.save writes"
        others = sorted(str(p) for p in path.parent.glob("*.ckpt") if p.name != path.name and zipfile.is_zipfile(p))
        also = f"; whole checkpoints beside it (a way on): {', '.join(others)}" if others else ""
        raise UserError(f"{option} {path} is not a PyTorch checkpoint, or one cut short or damaged ({reason}); pass "
                        f"a .ckpt file written by train.py{also}") from error  # fmt: skip
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise UserError(f"{option} {path} is a PyTorch file but not a Lightning checkpoint (it has no state_dict); "
                        "pass a .ckpt file written by train.py")  # fmt: skip
    return checkpoint
