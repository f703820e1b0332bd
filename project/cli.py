"""The command line: LightningCLI with flat Trainer flags, and `fit` then `test` when no subcommand is given."""

import json
import os
import re
import sys
from argparse import ArgumentError
from pathlib import Path

import torch
import yaml
from lightning import LightningDataModule, Trainer
from lightning.fabric.plugins import CheckpointIO
from lightning.fabric.plugins.environments import ClusterEnvironment, SLURMEnvironment
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from project.callbacks import PredictionTable, RunSummary
from project.callbacks.failed_run import RemoveFailedRun
from project.callbacks.last_checkpoint import LastCheckpoint, StepCheckpoint
from project.callbacks.non_finite import StopOnNonFiniteLoss
from project.callbacks.pictures import GradientNorm, InputGrid, ModelGraph, TestPictures, WeightHistograms
from project.callbacks.preemption import Preemption
from project.callbacks.random_state import RandomState
from project.checkpoint_io import AtomicCheckpointIO
from project.classifier import ImageClassifier
from project.errors import UserError, explain_parse_error
from project.help import help_text
from project.resume import latest_run, read_checkpoint, recipe_of, run_folder_of, run_version, saved_config

SUBCOMMANDS = ("fit", "validate", "test", "predict")
# Callbacks with their own switch (--<key>.enabled true|false) and options, in --help and in config files.
OPTIONAL_CALLBACKS = {
    "non_finite": StopOnNonFiniteLoss,
    "input_grid": InputGrid,
    "test_pictures": TestPictures,
    "grad_norm": GradientNorm,
    "histograms": WeightHistograms,
    "graph": ModelGraph,
    "step_checkpoint": StepCheckpoint,
}

# The recipe of a bare `python train.py` (net, optimizer, schedule, epochs) lives in configs/cnn.yaml, which
# main() passes as the first --config, so that later --config files and flags override it. DEFAULTS are the
# parts of every run that no recipe needs to repeat.
DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "cnn.yaml"
DEFAULTS = {
    "data": {"class_path": "project.data.MNISTDataModule"},
    "trainer.default_root_dir": "logs",
    "checkpoint.monitor": "val/acc",
    "checkpoint.mode": "max",
    "checkpoint.filename": "epoch={epoch}-val_acc={val/acc:.4f}",
    "checkpoint.auto_insert_metric_name": False,
}


class ClassifierCLI(LightningCLI):
    """LightningCLI for ImageClassifier and MNISTDataModule, with the template's defaults."""

    def __init__(self, args: list[str], test_after_fit: bool = False, run: bool = True) -> None:
        self.test_after_fit = test_after_fit
        self.dataset_given = names_a_dataset(args)
        self.checkpoint: dict | None = None  # the --ckpt_path file's contents, read once
        self.run_folder: Path | None = None  # the run folder of the --ckpt_path: fit continues, test writes in it
        raise_errors = {"exit_on_error": False}  # parse errors come back as exceptions, for main()'s one line
        callbacks = [RunSummary(), PredictionTable(), LearningRateMonitor("step")]
        # last.ckpt after every epoch, with the random state, for `--ckpt_path last`; no debris from failed runs.
        callbacks += [LastCheckpoint(), RandomState(), RemoveFailedRun()]
        # A SIGUSR1 (SLURM, before the time limit) or SIGTERM saves last.ckpt at the next step, and exits.
        callbacks.append(Preemption())
        super().__init__(
            ImageClassifier,
            LightningDataModule,
            subclass_mode_data=True,  # any LightningDataModule, MNISTDataModule unless a config names another
            trainer_defaults={"callbacks": callbacks},
            auto_configure_optimizers=False,  # the model's own configure_optimizers uses the injected ones
            seed_everything_default=0,  # the same numbers every run unless --seed_everything says otherwise
            save_config_kwargs={"overwrite": False},
            parser_kwargs={
                "description": DESCRIPTION,
                **raise_errors,
                **{name: dict(raise_errors) for name in SUBCOMMANDS},
                "fit": {"description": DESCRIPTION, **raise_errors},
            },
            args=args,
            run=run,  # False: build model, data and Trainer only (project.lr_find)
        )

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        for key, callback in OPTIONAL_CALLBACKS.items():
            parser.add_lightning_class_args(callback, key)
        parser.set_defaults(DEFAULTS)
        add_flat_trainer_flags(parser)

    def parse_arguments(self, parser: LightningArgumentParser, args: list[str]) -> None:
        # Same as LightningCLI's, minus its warning about args given beside sys.argv: main() derives args
        # from sys.argv on purpose (and does so again in every process DDP relaunches).
        try:
            self.config = parser.parse_args(args)
        except ArgumentError as error:
            unexpected = re.match(r"unrecognized arguments: (.*)", str(error))
            if unexpected and (word := next((w for w in unexpected[1].split() if w in SUBCOMMANDS), None)):
                raise UserError(
                    f"{word!r} after options is taken for an argument; a subcommand comes first: "
                    f"python train.py {word} [options]"
                ) from error
            subcommand = args[0] if args and args[0] in SUBCOMMANDS else None
            sub = parser._subcommands_action._name_parser_map.get(subcommand, parser) if subcommand else parser
            options = [o for o in sub._option_string_actions if o.startswith("--")]
            keys = [a.dest for a in sub._actions]
            raise UserError(explain_parse_error(str(error), options, keys)) from error
        if self.config.get("subcommand"):
            self.find_checkpoint(self.config[self.config.subcommand])

    def find_checkpoint(self, config) -> None:
        """Turn `--ckpt_path last` into a file, read the checkpoint once, and note the run folder to resume in."""
        ckpt_path = config.get("ckpt_path")
        if not ckpt_path or ckpt_path in ("best", "hpc", "registry"):  # Lightning's own names
            return
        if ckpt_path == "last":
            experiment = Path(config.trainer.default_root_dir) / experiment_name(config)
            run = latest_run(experiment, recipe_of(config.as_dict()))
            if run is None and self.config.subcommand == "fit":
                # Nothing to resume: a job script that always passes `--ckpt_path last` starts afresh.
                print(f"No run of this recipe under {experiment} has a last.ckpt: starting a new run.", file=sys.stderr)
                config.ckpt_path = None
                return
            if run is None:
                raise UserError(
                    f"--ckpt_path last: no run of this recipe under {experiment} has a checkpoints/last.ckpt; "
                    "train first, or give a checkpoint's path"
                )
            config.ckpt_path = str(run / "checkpoints" / "last.ckpt")
        self.checkpoint = read_checkpoint(Path(config.ckpt_path))
        self.run_folder = run_folder_of(Path(config.ckpt_path))

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        if self.checkpoint and not self.dataset_given and "dataset" in config.data.init_args:
            # A checkpoint is evaluated on the data set it was trained on (its class names, its normalization),
            # unless --data.dataset says otherwise.
            data = self.checkpoint.get("datamodule_hyper_parameters")
            if data and "dataset" in data:
                config.data.init_args.dataset = data["dataset"]
        if self.subcommand:
            check_writable(Path(config.trainer.default_root_dir))
            check_devices(config.trainer.accelerator, config.trainer.devices)
            if config.get("weights_only") is None:
                # Checkpoints hold tensors and plain data only: load them without running code from the file.
                config.weights_only = True
        if config.trainer.logger is None or config.trainer.logger is True:
            # TensorBoard under default_root_dir/<data set>_<model>/version_N, without the -1 "hp_metric"
            # placeholder (RunSummary logs real metrics against the hyper-parameters).
            # One run, one folder: a resumed fit continues in the checkpoint's run folder, and test, validate
            # and predict of a run's checkpoint write into it (same event files, checkpoints, results.json).
            run = self.run_folder
            config.trainer.logger = {
                "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
                "init_args": {
                    "save_dir": str(run.parents[1]) if run else config.trainer.default_root_dir,
                    "name": run.parent.name if run else experiment_name(config),
                    "version": run_version(run) if run else None,
                    "default_hp_metric": False,
                },
            }
            if run:
                # config.yaml stays as the run was started (resuming means "with the same config").
                self.save_config_callback = None

    def instantiate_classes(self) -> None:
        try:
            super().instantiate_classes()
        except ValueError as error:
            # jsonargparse wraps a constructor's UserError (e.g. batch size 0) in its own ValueError.
            cause = error.__cause__
            while cause is not None and not isinstance(cause, UserError):
                cause = cause.__cause__
            if cause is None:
                raise
            raise cause from error

    def instantiate_trainer(self, **kwargs) -> Trainer:
        config = self.config_init[self.subcommand] if self.subcommand else self.config_init
        plugins = config.trainer.plugins or []
        plugins = list(plugins) if isinstance(plugins, list) else [plugins]
        if not any(isinstance(p, CheckpointIO) for p in plugins):
            plugins.append(AtomicCheckpointIO())  # checkpoints are written whole or not at all
        if SLURMEnvironment.detect() and not any(isinstance(p, ClusterEnvironment) for p in plugins):
            # Preemption saves into the run folder and requeues; Lightning's handler would save elsewhere.
            plugins.append(SLURMEnvironment(auto_requeue=False))
        kwargs["plugins"] = plugins
        trainer = super().instantiate_trainer(**kwargs)
        # A callback that is switched off is not registered: Lightning calls every registered callback's hooks on
        # every step. `--logger false`: no learning rates to log, and the monitor would refuse to run.
        trainer.callbacks = [
            c for c in trainer.callbacks if is_on(c) and (trainer.loggers or not isinstance(c, LearningRateMonitor))
        ]
        # Preemption acts after every other checkpoint callback has saved at an epoch's end: last in the list.
        trainer.callbacks.sort(key=lambda callback: isinstance(callback, Preemption))
        return trainer

    def after_fit(self) -> None:
        if self.test_after_fit and not self.trainer.interrupted:
            # Evaluate the checkpoint that validated best (val/acc), not the weights of the last epoch.
            ckpt = self.trainer.checkpoint_callback.best_model_path or None
            self.trainer.test(self.model, datamodule=self.datamodule, ckpt_path=ckpt, weights_only=True)


DESCRIPTION = """Train and test an MNIST-family image classifier.

`python train.py [options]` fits, then tests the best checkpoint on the official test set.
The default recipe, configs/cnn.yaml, is read first; --config files and flags given after it override it.
`python train.py fit|validate|test|predict [options]` runs one Lightning stage.
Trainer options work flat (--max_epochs 3) and prefixed (--trainer.max_epochs 3).
Options of the data module: `python train.py --data.help MNISTDataModule`; of a net: `--model.net.help MLP`.
An error prints one line; --debug shows its Python traceback instead.
"""


def add_flat_trainer_flags(parser: LightningArgumentParser) -> None:
    """Give every `--trainer.x` option the flat alias `--x`, so `--accelerator gpu` works and shows in --help."""
    taken = set(parser._option_string_actions)
    for action in list(parser._actions):
        for option in list(action.option_strings):
            match = re.fullmatch(r"--trainer\.(\w+)", option)
            if match and f"--{match[1]}" not in taken:
                flat = f"--{match[1]}"
                action.option_strings.append(flat)
                parser._option_string_actions[flat] = action
                taken.add(flat)


def is_on(callback) -> bool:
    """False for the template's optional callbacks when switched off (`enabled: false`, step checkpoints every 0)."""
    if isinstance(callback, StepCheckpoint):
        return callback.every_n_steps > 0
    return getattr(callback, "enabled", True)


def experiment_name(config) -> str:
    """<data set>_<net>, e.g. fashion_mnist_cnn: the folder under logs/ that holds this recipe's runs."""
    net = str(config.model.net.class_path).rsplit(".", 1)[-1].lower()
    return f"{config.data.init_args.get('dataset', 'data')}_{net}"


def check_writable(folder: Path) -> None:
    """Fail before anything is written when the log folder cannot be created or written."""
    existing = folder.absolute()
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        why = "is a file, not a folder" if not existing.is_dir() else "is not writable"
        raise UserError(f"cannot write logs to {folder}: {existing} {why}; pass a writable --default_root_dir")


def check_devices(accelerator, devices) -> None:
    """More CPU processes than cores would only slow DDP down; say so instead of starting them."""
    on_cpu = accelerator == "cpu" or (accelerator == "auto" and not torch.cuda.is_available())
    count = int(devices) if str(devices).isdigit() else None
    if on_cpu and count and count > (os.cpu_count() or 1):
        raise UserError(
            f"--devices {count} asks for {count} processes on the CPU, but this machine has {os.cpu_count()} "
            f"cores; pass --devices {os.cpu_count()} or fewer"
        )


def split_command(argv: list[str]) -> tuple[list[str], bool]:
    """Arguments for LightningCLI, and whether to test after fitting (only when no subcommand was named).

    A subcommand is the first word; anywhere else a word such as `test` is a value (`--default_root_dir test`),
    and a subcommand placed after options is reported by the parser (see parse_arguments)."""
    test_after_fit = not argv or argv[0] not in SUBCOMMANDS
    if test_after_fit:
        argv = ["fit", *argv]
    return [argv[0], "--config", str(DEFAULT_CONFIG), *argv[1:]], test_after_fit


def run_data_defaults(args: list[str]) -> list[str]:
    """With `--ckpt_path` to a checkpoint in a run folder, that run's data options (its config.yaml) go in
    after the default recipe, so that `--config` files and flags given after them still override them."""
    paths = [args[i + 1] for i, a in enumerate(args[:-1]) if a == "--ckpt_path"]
    paths += [a.split("=", 1)[1] for a in args if a.startswith("--ckpt_path=")]
    run = run_folder_of(Path(paths[-1])) if paths else None
    data = saved_config(run).get("data") if run else None
    if not data:
        return args
    return [*args[:3], "--data", json.dumps(data), *args[3:]]  # after `SUBCOMMAND --config DEFAULT_CONFIG`


def names_a_dataset(args: list[str]) -> bool:
    """Whether the arguments choose a data set: a --data.dataset flag, or a --config file or --data value
    that sets one (the default recipe does not)."""
    for i, word in enumerate(args):
        if word.startswith(("--data.dataset", "--data.init_args.dataset")):
            return True
        value = args[i + 1] if i + 1 < len(args) else ""
        if word == "--data" and "dataset" in value:
            return True
        if word == "--config" and Path(value).is_file() and Path(value) != DEFAULT_CONFIG:
            try:
                data = (yaml.safe_load(Path(value).read_text()) or {}).get("data") or {}
            except (yaml.YAMLError, AttributeError):  # not a YAML mapping: the parser says what is wrong
                continue
            if isinstance(data, dict) and ("dataset" in data or "dataset" in (data.get("init_args") or {})):
                return True
    return False


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; a mistake the user can fix ends with one line on stderr and exit status 2.
    `--debug` shows the traceback instead."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    if "-h" in argv or "--help" in argv:
        print(help_text(DESCRIPTION, {"checkpoint": ModelCheckpoint, **OPTIONAL_CALLBACKS}))
        return 0
    args, test_after_fit = split_command([word for word in argv if word != "--debug"])
    try:
        cli = ClassifierCLI(run_data_defaults(args), test_after_fit=test_after_fit)
    except (UserError, MisconfigurationException) as error:
        if debug:
            raise
        message = " ".join(str(error).split())  # one line, whatever the message's own layout
        no_gpu = "gpu" in message.lower() and not torch.cuda.is_available()
        if isinstance(error, MisconfigurationException) and no_gpu:
            message = (
                "--accelerator gpu needs a GPU, but PyTorch sees none on this machine "
                f"(torch.cuda.is_available() is False; Lightning said: {message}). "
                "Leave out --accelerator gpu to train on the CPU."
            )
        return fail(message)
    if cli.trainer.is_global_zero and cli.trainer.logger is not None:
        print(f"run folder: {cli.trainer.logger.log_dir}", file=sys.stderr)
    return 0


def fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2
