"""Run folders and what `--ckpt_path` points at: a new run claims logs/<data>_<net>/version_N, `last` is the newest
unfinished run of this recipe, and any checkpoint is read once, weights only, and checked against the model it is
loaded into, with an error a person can act on when it does not fit."""

import contextlib
import fcntl
import functools
import json
import os
import re
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import yaml
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
from tensorboard.compat.proto.event_pb2 import Event

from project.data.contract import CONTRACT_LINKS
from project.errors import UserError
from project.run.options import expand

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
    """Whether the run's fit reached its end, by what Lightning saves: its last.ckpt holds as many epochs as its
    config.yaml's max_epochs, or max_steps steps, or an EarlyStopping that stopped it; with `tested`, its test after
    that too (test/ metrics in its TensorBoard events, newer than last.ckpt). Unreadable: not finished."""
    try:
        last = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True, mmap=True)
        trainer = saved_config(run).get("trainer") or {}
        epochs = last["loops"]["fit_loop"]["epoch_progress"]["current"]["processed"]
        saved = (run / "checkpoints" / "last.ckpt").stat().st_mtime
    except Exception:
        return False
    stopped = any(isinstance(s, dict) and s.get("stopped_epoch") for s in (last.get("callbacks") or {}).values())
    max_epochs, max_steps = trainer.get("max_epochs"), trainer.get("max_steps") or -1
    fitted = stopped or (max_epochs not in (None, -1) and epochs >= max_epochs) or 0 < max_steps <= last["global_step"]
    return fitted and (not tested or tested_since(run, saved))


def tested_since(run: Path, time: float) -> bool:
    """Whether a test wrote its metrics (test/...) into the run's TensorBoard events after `time`."""
    return any(e.wall_time >= time and any(v.tag.startswith("test/") for v in e.summary.value) for e in events(run))


def events(run: Path) -> Iterator[Event]:
    """The events of a run's TensorBoard files, read with TensorBoard's own reader (a damaged file: none of it)."""
    for path in sorted(run.glob("events.out.tfevents.*")):
        with contextlib.suppress(Exception):
            yield from EventFileLoader(str(path)).Load()


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


def check_fits(checkpoint: dict[str, Any], model: torch.nn.Module, fitting: bool) -> None:
    """A UserError where the checkpoint was trained on other data (`fitting`: another contract; else another shape
    or class count) or with another network, before Lightning loads it (its size-mismatch error is a page long)."""
    saved, current = checkpoint.get("hyper_parameters", {}).get("contract") or {}, model.hparams.get("contract") or {}
    sizes = [(len(contract.get("classes", ())), contract.get("shape")) for contract in (saved, current)]
    if saved and current and (sizes[0] != sizes[1] or (fitting and saved != current)):
        key = next(k for k in ("shape", "classes", *current) if saved.get(k) != current[k])
        raise UserError(f"the checkpoint was trained on other data: its {key} is {saved.get(key)}, this data's is "
                        f"{current[key]}; use the data it was trained on (its run folder's config.yaml)")  # fmt: skip
    weights, own = checkpoint["state_dict"], model.state_dict()
    problems = [f"this model has {name}, the checkpoint does not" if name not in weights else
                f"{name} is {tuple(weights[name].shape)} in the checkpoint, {tuple(tensor.shape)} in this model"
                for name, tensor in own.items()
                if name not in weights or weights[name].shape != tensor.shape]  # fmt: skip
    problems += [f"the checkpoint has {name}, this model does not" for name in weights if name not in own]
    if problems:
        raise UserError(f"the checkpoint was trained with a different network ({problems[0]}); build the model with "
                        "the net it was trained with (the run folder's config.yaml has it)")  # fmt: skip


def claim_run_folder(experiment: Path) -> Path:
    """A new experiment/version_N, made here: two runs started at once never share one (mkdir either makes the
    folder or fails, also on network file systems), so neither touches the other's files."""
    experiment.mkdir(parents=True, exist_ok=True)
    taken = [int(p.name[8:]) for p in experiment.glob("version_*") if p.name[8:].isdigit()]
    version = max(taken, default=-1) + 1
    while True:
        try:
            (experiment / f"version_{version}").mkdir()
            return experiment / f"version_{version}"
        except FileExistsError:
            version += 1


def run_data_defaults(args: list[str]) -> list[str]:
    """With `--ckpt_path FILE`, the data options the checkpoint was trained with (its run's config.yaml, or the
    data set saved in the checkpoint) go in first, so that a checkpoint is tested on its own data while later
    `--config` files and flags still override them."""
    paths = [b for a, b in zip(args, args[1:], strict=False) if a == "--ckpt_path"]
    given = [a.split("=", 1)[1] for a in args if a.startswith("--ckpt_path=")] + paths
    ckpt = Path(expand(given[-1])) if given else None
    if ckpt is None or not ckpt.is_file():
        return args  # `last`, or no file: find_checkpoint says what is wrong
    run = run_folder_of(ckpt)
    data = saved_config(run).get("data") if run else None
    if not data:  # a checkpoint away from its run folder: the data module and options it keeps
        checkpoint = read_checkpoint(ckpt)
        saved, path = checkpoint.get("datamodule_hyper_parameters") or {}, checkpoint.get("datamodule_class_path")
        arguments = {k: v for k, v in saved.items() if not k.startswith("_")}  # not Lightning's bookkeeping
        data = {"class_path": path, "init_args": arguments} if path else None
        if path is None and "dataset" in saved:  # older checkpoints: an MNIST-family data set
            data = {"init_args": {"dataset": saved["dataset"]}}
    return [*args[:1], "--data", json.dumps(data, default=str), *args[1:]] if data else args
