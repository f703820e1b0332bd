"""The command line: LightningCLI with flat Trainer flags, and `fit` then `test` when no subcommand is given."""

import inspect
import json
import os
import sys
import traceback
import warnings
from argparse import ArgumentError
from pathlib import Path

import torch
from lightning import LightningDataModule, Trainer
from lightning.fabric.plugins import CheckpointIO
from lightning.fabric.plugins.environments import ClusterEnvironment, SLURMEnvironment
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import Checkpoint, LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback

from project.callbacks import PredictionTable, RunSummary
from project.callbacks.failed_run import RemoveFailedRun
from project.callbacks.last_checkpoint import LastCheckpoint, StepCheckpoint
from project.callbacks.non_finite import StopOnNonFiniteLoss
from project.callbacks.pictures import GradientNorm, InputGrid, ModelGraph, TestPictures, WeightHistograms
from project.callbacks.preemption import Preemption
from project.callbacks.random_state import RandomState
from project.classifier import ImageClassifier
from project.errors import SUBCOMMANDS, UserError, explain_parse_error, fail
from project.help import add_callback_switches, help_text
from project.resume import latest_run, read_checkpoint, recipe_of, run_folder_of, run_version, saved_config
from project.run_files import AtomicCheckpointIO

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
# Callbacks of every run, each of which `--<key>.enabled false` (or the same in a config file) leaves out.
DEFAULT_CALLBACKS = {
    "run_summary": RunSummary,  # results.json and the HPARAMS tab
    "prediction_table": PredictionTable,  # predict: the table and predictions.csv
    "lr_monitor": lambda: LearningRateMonitor("step"),
    "last_checkpoint": LastCheckpoint,  # last.ckpt after every epoch, for `--ckpt_path last`
    "random_state": RandomState,  # the random generators in every checkpoint: a resume draws what the run would
    "remove_failed_run": RemoveFailedRun,  # no run folder left by a run that failed before its first step
    "preemption": Preemption,  # SIGUSR1 (SLURM, before the time limit) or SIGTERM: save last.ckpt, exit
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
        self.checkpoint: dict | None = None  # the --ckpt_path file's contents, read once
        self.run_folder: Path | None = None  # the run folder of the --ckpt_path: fit continues, test writes in it
        self.parsers: list[LightningArgumentParser] = []  # one per subcommand, in LightningCLI.subcommands() order
        raise_errors = {"exit_on_error": False}  # parse errors come back as exceptions, for main()'s one line
        try:
            super().__init__(
                ImageClassifier,
                LightningDataModule,
                subclass_mode_data=True,  # any LightningDataModule, MNISTDataModule unless a config names another
                save_config_callback=KeepRunConfig,
                auto_configure_optimizers=False,  # the model's own configure_optimizers uses the injected ones
                seed_everything_default=0,  # the same numbers every run unless --seed_everything says otherwise
                parser_kwargs={
                    "description": DESCRIPTION,
                    **raise_errors,
                    **{name: dict(raise_errors) for name in SUBCOMMANDS},
                    "fit": {"description": DESCRIPTION, **raise_errors},
                },
                args=args,
                run=run,  # False: build model, data and Trainer only (project.lr_find, tune.py)
            )
        except (ValueError, TypeError) as error:
            if (message := self.as_option_error(error)) is None:
                raise
            raise UserError(message) from error

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        # Not add_lightning_class_args: instantiate_trainer registers only the callbacks that are on.
        parser.add_class_arguments(ModelCheckpoint, "checkpoint", fail_untyped=False, sub_configs=True)
        for key, callback in OPTIONAL_CALLBACKS.items():
            parser.add_class_arguments(callback, key, fail_untyped=False, sub_configs=True)
        add_callback_switches(parser, list(DEFAULT_CALLBACKS))
        parser.set_defaults(DEFAULTS)
        self.parsers.append(parser)

    def parse_arguments(self, parser: LightningArgumentParser, args: list[str]) -> None:
        # As LightningCLI's, minus its warning about args given beside sys.argv (main() derives them from
        # sys.argv on purpose, and does so again in every process DDP relaunches), with flat Trainer flags.
        if len(self.parsers) == 1:  # run=False: a parser without subcommands
            sub, head, rest = self.parsers[0], [], args
        else:
            sub, head, rest = dict(zip(self.subcommands(), self.parsers, strict=True))[args[0]], args[:1], args[1:]
        keys = [key.replace(".init_args.", ".") for key in sub.get_defaults().keys()]  # noqa: SIM118 (a Namespace)
        flat = {key.removeprefix("trainer.") for key in keys if key.count(".") == 1 and key.startswith("trainer.")}
        try:
            self.config = parser.parse_args([*head, *with_trainer_prefix(rest, flat)])
        except ArgumentError as error:
            options = [f"--{key}" for key in keys] + [f"--{name}" for name in flat]
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

    def as_option_error(self, error: Exception) -> str | None:
        """A one-line message naming the option, for an error that a configured class raised about its arguments
        (in its constructor, configure_optimizers, or a data module's prepare_data and setup); None for others.

        Reusable classes raise ValueError naming their own parameter ("batch_size must be at least 1, got 0");
        here that becomes "--data.batch_size must be ...". The class is found on the traceback (jsonargparse
        wraps a constructor's error in its own ValueError: the original is its innermost cause).
        """
        while error.__cause__ is not None and not isinstance(error, UserError):
            error = error.__cause__
        if isinstance(error, UserError):
            return str(error)
        config = self.config.get(str(self.config.get("subcommand")), self.config)
        sections = {"model": ImageClassifier, "checkpoint": ModelCheckpoint, **OPTIONAL_CALLBACKS}
        paths = {"data": config.data.class_path, "model.net": config.model.net.get("class_path")}
        paths |= {f"model.{key}": (config.model.get(key) or {}).get("class_path") for key in ("optimizer", "scheduler")}
        for frame, _ in reversed(list(traceback.walk_tb(error.__traceback__))):
            obj, function = frame.f_locals.get("self"), frame.f_code.co_name
            if obj is None or function not in ("__init__", "configure_optimizers", "prepare_data", "setup"):
                continue
            key = next((k for k, cls in sections.items() if type(obj) is cls), None)
            name = type(obj).__name__  # torch.optim.Adam is torch.optim.adam.Adam: compared by class name
            key = key or next((k for k, path in paths.items() if path and path.rsplit(".", 1)[-1] == name), None)
            if key is None:
                continue
            first = str(error).split(" ", 1)[0].split(".")[0].rstrip(":")
            if first in inspect.signature(type(obj)).parameters:
                return f"--{key}.{error}"
            return f"--{key}: {error}"
        return None

    def instantiate_trainer(self, **kwargs) -> Trainer:
        config = self.config_init[self.subcommand] if self.subcommand else self.config_init
        callbacks = list(config.trainer.callbacks or [])  # a config's own trainer.callbacks, beside these
        callbacks += [config[key] for key in ("checkpoint", *OPTIONAL_CALLBACKS)]
        callbacks += [make() for key, make in DEFAULT_CALLBACKS.items() if config[key].enabled]
        # A callback that is switched off is not registered: Lightning calls every registered callback's hooks on
        # every step. `--logger false`: no learning rates to log, and the monitor would refuse to run.
        # `--enable_checkpointing false`: Lightning refuses checkpoint callbacks.
        checkpoints, logged = config.trainer.enable_checkpointing is not False, config.trainer.logger is not False
        callbacks = [
            c for c in callbacks
            if is_on(c) and (checkpoints or not isinstance(c, Checkpoint))
            and (logged or not isinstance(c, LearningRateMonitor))
        ]  # fmt: skip
        # Preemption acts after every other checkpoint callback has saved at an epoch's end: last in the list.
        kwargs["callbacks"] = sorted(callbacks, key=lambda callback: isinstance(callback, Preemption))
        plugins = config.trainer.plugins or []
        plugins = list(plugins) if isinstance(plugins, list) else [plugins]
        if not any(isinstance(p, CheckpointIO) for p in plugins):
            plugins.append(AtomicCheckpointIO())  # checkpoints are written whole or not at all
        if SLURMEnvironment.detect() and not any(isinstance(p, ClusterEnvironment) for p in plugins):
            # Preemption saves into the run folder and requeues; Lightning's handler would save elsewhere.
            plugins.append(SLURMEnvironment(auto_requeue=False))
        kwargs["plugins"] = plugins
        return super().instantiate_trainer(**kwargs)

    def after_fit(self) -> None:
        if self.test_after_fit and not self.trainer.interrupted:
            # Evaluate the checkpoint that validated best (val/acc), not the weights of the last epoch.
            best = self.trainer.checkpoint_callback
            ckpt = (best.best_model_path or None) if isinstance(best, ModelCheckpoint) else None
            self.trainer.test(self.model, datamodule=self.datamodule, ckpt_path=ckpt, weights_only=True)


class KeepRunConfig(SaveConfigCallback):
    """Writes the run's config.yaml when the run starts; a resumed run, or a test of the run's checkpoint, keeps it
    as the run was started (resuming means "with the same config")."""

    def setup(self, trainer: Trainer, pl_module, stage: str) -> None:
        path = Path(trainer.log_dir) / self.config_filename  # log_dir on every process: a collective call
        if not trainer.strategy.broadcast(trainer.is_global_zero and path.is_file()):
            super().setup(trainer, pl_module, stage)


DESCRIPTION = """Train and test an MNIST-family image classifier.

`python train.py [options]` fits, then tests the best checkpoint on the official test set.
The default recipe, configs/cnn.yaml, is read first; --config files and flags given after it override it.
`python train.py fit|validate|test|predict [options]` runs one Lightning stage.
Trainer options work flat (--max_epochs 3) and prefixed (--trainer.max_epochs 3).
Options of the data module: `python train.py --data.help MNISTDataModule`; of a net: `--model.net.help MLP`.
An error prints one line; --debug shows its Python traceback instead.
"""


def with_trainer_prefix(args: list[str], trainer_options: set[str]) -> list[str]:
    """`--max_epochs 3` -> `--trainer.max_epochs 3` (and `--max_epochs=3`) for every Trainer option, so Trainer
    flags work flat; `--trainer.x` and every other word pass unchanged."""
    result = []
    for word in args:
        name, equals, value = word[2:].partition("=")
        result.append(f"--trainer.{name}{equals}{value}" if word.startswith("--") and name in trainer_options else word)
    return result


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
    """A GPU that is not there, or more CPU processes than cores (which would only slow DDP down): one line."""
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise UserError(
            f"--accelerator {accelerator} needs a GPU, but PyTorch sees none on this machine "
            "(torch.cuda.is_available() is False); leave out --accelerator to train on the CPU"
        )
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
    """With `--ckpt_path` to a checkpoint, the data options it was trained with (its run's config.yaml, or the
    data set saved in the checkpoint) go in after the default recipe, so that a checkpoint is evaluated on its own
    data set (class names, normalization) while `--config` files and flags given later still override them."""
    paths = [args[i + 1] for i, a in enumerate(args[:-1]) if a == "--ckpt_path"]
    paths += [a.split("=", 1)[1] for a in args if a.startswith("--ckpt_path=")]
    ckpt = Path(paths[-1]) if paths else None
    if ckpt is None or not ckpt.is_file():
        return args  # `last`, or no file: find_checkpoint says what is wrong
    run = run_folder_of(ckpt)
    data = saved_config(run).get("data") if run else None
    if not data:
        try:
            # mmap: the tensors are not read, only the saved hyper-parameters (find_checkpoint reads it all later).
            checkpoint = torch.load(ckpt, map_location="cpu", weights_only=True, mmap=True)
            saved = checkpoint.get("datamodule_hyper_parameters") or {}
        except Exception:  # not a checkpoint: read_checkpoint reports it once the arguments are parsed
            return args
        data = {"init_args": {"dataset": saved["dataset"]}} if "dataset" in saved else None
    return [*args[:3], "--data", json.dumps(data), *args[3:]] if data else args


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; a mistake the user can fix ends with one line on stderr and exit status 2.
    `--debug` shows the traceback instead."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    # torch 2.14 deprecates the LeafSpec class that Lightning 2.6 builds on every batch it moves to the device:
    # upstream noise on every run, silenced by its category and module (not its wording) until Lightning moves on.
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"lightning\.pytorch\.utilities\._pytree")
    if "-h" in argv or "--help" in argv:
        print(help_text(DESCRIPTION, {"checkpoint": ModelCheckpoint, **OPTIONAL_CALLBACKS}, list(DEFAULT_CALLBACKS)))
        return 0
    args, test_after_fit = split_command([word for word in argv if word != "--debug"])
    try:
        cli = ClassifierCLI(run_data_defaults(args), test_after_fit=test_after_fit)
    except (UserError, MisconfigurationException) as error:  # Lightning's own errors about a configuration
        if debug:
            raise
        return fail(str(error))
    if cli.trainer.is_global_zero and cli.trainer.logger is not None:
        print(f"run folder: {cli.trainer.logger.log_dir}", file=sys.stderr)
    return 0
