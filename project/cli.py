"""The command line: LightningCLI reading configs/base.yaml first, flat Trainer flags, `fit` then `test` when no
subcommand is given, and one folder per run (logs/<data set>_<net>/version_N) that resume and test write into."""

import errno
import importlib
import inspect
import json
import os
import signal
import sys
import warnings
from argparse import ArgumentError
from collections.abc import Callable
from pathlib import Path
from typing import Optional

import torch
import yaml
from jsonargparse import ArgumentParser, Namespace
from lightning import LightningDataModule, Trainer
from lightning.fabric.plugins.environments import ClusterEnvironment, SLURMEnvironment, TorchElasticEnvironment
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import Callback, Checkpoint, LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities.exceptions import SIGTERMException
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from project import DISK_FAULTS, EARLY_STOPS, PATH_FAULTS, STOP_SIGNALS, Stopped, note, resume, stop_now
from project.classifier import ImageClassifier
from project.data.contract import CONTRACT_LINKS, contract_of
from project.errors import CLASS_KEYS, SUBCOMMANDS, UserError, fail, option_error
from project.files import write_atomically
from project.resume import (
    best_checkpoint,
    experiment_name,
    latest_run,
    read_checkpoint,
    recipe_of,
    run_folder_of,
    saved_config,
)

BASE_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "base.yaml"
PATH_KEYS = ("trainer.default_root_dir", "ckpt_path", "data.init_args.data_dir", "data.init_args.predict_path",
             "data.init_args.cache_dir")  # fmt: skip
DESCRIPTION = """Train and test an image classifier. Without a subcommand: fit, then test the best checkpoint.
`python train.py fit|validate|test|predict [options]` runs one Lightning stage. Trainer options work flat
(--max_epochs 3) and prefixed (--trainer.max_epochs 3). An error prints one line; --debug shows its traceback."""


class ClassifierTrainer(Trainer):
    """Lightning's Trainer with its batch limits typed int first: jsonargparse reads Lightning's `float | int` as
    float first, so `--limit_val_batches 1` became 1.0, all batches, where Lightning's 1 is one batch."""

    def __init__(self, *, limit_train_batches: int | float | None = None, limit_val_batches: int | float | None = None,
                 limit_test_batches: int | float | None = None, limit_predict_batches: int | float | None = None,
                 **kwargs) -> None:  # fmt: skip
        super().__init__(limit_train_batches=limit_train_batches, limit_val_batches=limit_val_batches,
                         limit_test_batches=limit_test_batches, limit_predict_batches=limit_predict_batches,
                         **kwargs)  # fmt: skip


class ClassifierCLI(LightningCLI):
    """LightningCLI for ImageClassifier and any LightningDataModule, with configs/base.yaml as the first config."""

    def __init__(self, args: list[str], test_after_fit: bool = False, run: bool = True) -> None:
        # torch 2.14 deprecates the LeafSpec class that Lightning 2.6 builds on every batch it moves to the device:
        # upstream noise on every run (train.py, tune.py, lr_find), silenced by its category and module (not its
        # wording) until Lightning moves on.
        warnings.filterwarnings("ignore", category=FutureWarning, module=r"lightning\.pytorch\.utilities\._pytree")
        self.test_after_fit = test_after_fit
        self.run_folder: Path | None = None  # the --ckpt_path's run folder: fit continues in it, test writes there
        self.claimed: Path | None = None  # the new run folder this process made
        self.logger: dict | None = None  # the run's TensorBoardLogger: its folder
        self.lock: int | None = None  # the run folder this process writes, locked until __init__ returns (the run)
        self.parsers: list[LightningArgumentParser] = []  # one per subcommand, in subcommands() order
        raise_errors = {"exit_on_error": False}  # parse errors come back as exceptions, for main()'s one line
        try:
            # Any data module (subclass mode); the model's own configure_optimizers uses the injected optimizer and
            # schedule; run=False builds model, data and Trainer only (lr_find, tune.py).
            super().__init__(ImageClassifier, LightningDataModule, save_config_callback=KeepRunConfig, args=args,
                             trainer_class=ClassifierTrainer, subclass_mode_data=True, run=run,
                             auto_configure_optimizers=False,
                             parser_kwargs={**raise_errors, "description": DESCRIPTION,
                                            **{k: raise_errors for k in SUBCOMMANDS}})  # fmt: skip
        except BaseException as error:
            for folder in (self.claimed, self.claimed and self.claimed.parent):  # for a run that never started
                if folder is not None and folder.is_dir() and not any(folder.iterdir()):
                    folder.rmdir()
            if not isinstance(error, ValueError | TypeError):
                raise
            # A configured class refused its arguments.
            config = getattr(self, "config", None)
            message = option_error(error, config.get(str(config.get("subcommand")), config) if config else None)
            if message is None:
                raise
            raise UserError(message) from error
        finally:
            if self.lock is not None:  # the run is free for the next process (a caller in Python: the next call)
                os.close(self.lock)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        # The callbacks registry is configs/base.yaml's `callbacks`: each name a class with options, or null.
        for name in yaml.safe_load(BASE_CONFIG.read_text()).get("callbacks") or {}:
            callback = Optional[Callback]  # noqa: UP045 (a typing form jsonargparse reads on every Python)
            parser.add_argument(f"--callbacks.{name}", type=callback, default=None, help=f"{name}, or null: off")
        # What --help prints, and what turns a parse error into one line (configs/base.yaml names both).
        for name in ("help_text", "explain_errors"):
            parser.add_argument(f"--{name}", type=Optional[Callable[..., str]], default=None)  # noqa: UP045
        # The data contract, from the built data module into the model and into the net where it takes the option.
        for target, part in CONTRACT_LINKS.items():
            parser.link_arguments("data", target, lambda data, part=part: contract_part(data, part), "instantiate")
        self.parsers.append(parser)

    def parse_arguments(self, parser: LightningArgumentParser, args: list[str]) -> None:
        # LightningCLI's own, with flat Trainer flags, fresh arguments for a switched class and one-line errors.
        head = [] if len(self.parsers) == 1 else args[:1]  # run=False: one parser, no subcommand
        sub = self.parsers[SUBCOMMANDS.index(head[0])] if head else self.parsers[0]
        keys = [key.replace(".init_args.", ".") for key in sub.get_defaults().keys()]  # noqa: SIM118 (a Namespace)
        flat = {key.removeprefix("trainer.") for key in keys if key.count(".") == 1 and key.startswith("trainer.")}
        rest = with_trainer_prefix(args[len(head) :], flat)
        shown = [word for word in rest if word.split("=")[0] == "--print_config" or word in ("-h", "--help")]
        rest = [word for word in rest if word not in shown]
        try:
            # configs/base.yaml as the first --config: jsonargparse's default_config_files cannot hold a class
            # whose parameter has a class default (the optimizer's: "Dict must include a class_path").
            config = parser.parse_args([*head, "--config", str(BASE_CONFIG), *rest])
            sub_config = config[head[0]] if head else config
            for key, value in fresh_classes(sub, rest, sub_config).items():
                sub_config[key] = value
            for key in PATH_KEYS:  # one rule for paths: ~ and $VARS expanded once, here, for everything after
                if isinstance(value := sub_config.get(key), str) and value not in ("last", "best", "hpc", "registry"):
                    sub_config[key] = expand(value)
        except (ArgumentError, UnicodeDecodeError) as error:  # base.yaml's explain_errors (the args do not parse)
            try:
                explain = sub.parse_args(["--config", str(BASE_CONFIG)]).explain_errors
            except ArgumentError:  # the base itself does not parse: jsonargparse's own words
                explain = None
            options = [f"--{key}" for key in keys] + [f"--{name}" for name in flat]
            raise UserError(explain(str(error), options, keys) if explain else " ".join(str(error).split())) from error
        if shown:  # --help or --print_config: printed once the whole config is known, then nothing runs
            helps = sub_config.help_text if {"-h", "--help"} & set(shown) else None
            print(helps(sub_config) if helps else sub.dump(sub_config, skip_none=False), end="")
            raise SystemExit(0)
        self.config = config
        if head:
            self.find_checkpoint(sub_config)

    def find_checkpoint(self, config: Namespace) -> None:
        """`--ckpt_path last` becomes the newest run of this recipe; any checkpoint is checked, its run folder noted."""
        if config.get("ckpt_path") is None and self.config.subcommand in ("test", "predict"):  # an untrained net's
            raise UserError(f"{self.config.subcommand} needs a trained model: pass --ckpt_path FILE, or last")
        if config.get("ckpt_path") in (None, "best", "hpc", "registry"):  # Lightning's own names
            return
        if config.ckpt_path == "last":
            experiment = Path(config.trainer.default_root_dir) / experiment_name(config.as_dict())
            run = latest_run(experiment, recipe_of(config.as_dict()))
            if self.config.subcommand == "fit" and (run is None or resume.finished(run, self.test_after_fit)):
                # Nothing to resume: a job script that always passes `--ckpt_path last` starts afresh. A longer
                # run of a finished one is asked for by its checkpoint's path.
                why = f"the newest, {run}, is finished" if run else f"none under {experiment} has a last.ckpt"
                print(f"--ckpt_path last: no unfinished run of this recipe ({why}): a new run", file=sys.stderr)
                config.ckpt_path = None
                return
            if run is None:
                raise UserError(f"--ckpt_path last: no run of this recipe under {experiment} has a checkpoints/"
                                "last.ckpt; train first, or give a checkpoint's path")  # fmt: skip
            config.ckpt_path = str(run / "checkpoints" / "last.ckpt")
        read_checkpoint(Path(config.ckpt_path))  # one line now for a file that is no checkpoint, not a page later
        self.run_folder = run_folder_of(Path(config.ckpt_path))
        if self.run_folder is not None and self.config.subcommand == "fit" and rank_zero_only.rank == 0:
            self.lock = resume.lock_run(self.run_folder)

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        trainer, lengths = config.trainer, ("max_epochs", "max_steps", "limit_train_batches")
        if self.subcommand in ("fit", None) and (zero := next((n for n in lengths if trainer.get(n) == 0), None)):
            raise UserError(f"--{zero} 0 trains nothing; give 1 or more (to test a checkpoint: "
                            "python train.py test --ckpt_path FILE)")  # fmt: skip
        for name in ("accumulate_grad_batches", "val_check_interval", "check_val_every_n_epoch"):
            if isinstance(value := trainer.get(name), int | float) and value <= 0:
                raise UserError(f"--{name} must be above 0, got {value}")
        if self.subcommand:
            check_writable(self.run_folder or Path(config.trainer.default_root_dir), run=self.run_folder is not None)
            check_devices(config.trainer.accelerator, config.trainer.devices, config.trainer.num_nodes)
            if config.get("weights_only") is None:
                config.weights_only = True  # checkpoints hold tensors and plain data: load no code from a file
        if config.trainer.logger is None or config.trainer.logger is True:
            # TensorBoard in default_root_dir/<data set>_<net>/version_N, without the -1 "hp_metric" placeholder.
            # One run, one folder: a resumed fit continues in its checkpoint's folder, a test writes into it.
            run = self.run_folder
            root, name = config.trainer.default_root_dir, experiment_name(config.as_dict())
            where = {"save_dir": root, "name": name}
            if run is None and rank_zero_only.rank == 0 and not config.trainer.fast_dev_run:  # process 0 names it
                self.claimed = claim_run_folder(Path(root) / name)
                self.lock = resume.lock_run(self.claimed)  # a resume of it waits for this run to end (two writers)
                where["version"] = int(self.claimed.name.removeprefix("version_"))
            if run:
                where = {"save_dir": str(run.parents[1]), "name": run.parent.name, "version": run.name}  # as named
            # Given to the Trainer, not written into config.yaml: a run of that file again is a run of its own.
            self.logger = {**where, "default_hp_metric": False}

    def instantiate_trainer(self, **kwargs) -> Trainer:
        config = self.config_init[self.subcommand] if self.subcommand else self.config_init
        callbacks = [*(config.trainer.callbacks or []), *(c for c in vars(config.callbacks).values() if c)]
        # `--enable_checkpointing false`: Lightning refuses checkpoint callbacks; `--logger false`: no rates to log.
        checkpoints, logged = config.trainer.enable_checkpointing is not False, config.trainer.logger is not False
        kwargs["callbacks"] = [c for c in callbacks if (checkpoints or not isinstance(c, Checkpoint))
                               and (logged or not isinstance(c, LearningRateMonitor))]  # fmt: skip
        plugins = list(config.trainer.plugins) if isinstance(config.trainer.plugins, list) else [config.trainer.plugins]
        kwargs["plugins"] = plugins = [plugin for plugin in plugins if plugin is not None]  # SLURM's added below
        if SLURMEnvironment.detect() and not any(isinstance(p, ClusterEnvironment) for p in plugins):
            # A callback that saves and requeues on SLURM's signal itself (preemption) replaces Lightning's handler.
            requeues = any(getattr(c, "requeues_slurm_jobs", False) for c in kwargs["callbacks"])
            plugins.append(SLURMEnvironment(auto_requeue=not requeues))
        if self.logger is not None:
            kwargs["logger"] = TensorBoardLogger(**self.logger)
        hand_over_early_stops(kwargs["callbacks"])
        try:
            return super().instantiate_trainer(**kwargs)
        except (TypeError, ValueError) as error:  # Lightning's check of a Trainer option (--devices -1 on the CPU)
            raise UserError(f"a Trainer option: {error}") from error

    def after_fit(self) -> None:
        if self.test_after_fit and not self.trainer.interrupted:
            # Evaluate the checkpoint that validated best (val/acc), not the weights of the last epoch.
            best = self.trainer.checkpoint_callback
            ckpt = best_checkpoint(best) if isinstance(best, ModelCheckpoint) else None
            self.trainer.test(self.model, datamodule=self.datamodule, ckpt_path=ckpt, weights_only=True)


class KeepRunConfig(SaveConfigCallback):
    """Writes the run's config.yaml when the run starts; a resumed run, or a test of the run's checkpoint, keeps it
    as the run was started (resuming means "with the same config")."""

    def setup(self, trainer: Trainer, pl_module, stage: str) -> None:
        path = Path(trainer.log_dir) / self.config_filename  # log_dir on every process: a collective call
        if not trainer.strategy.broadcast(trainer.is_global_zero and path.is_file()) and trainer.is_global_zero:
            write_atomically(path, self.parser.dump(self.config, skip_none=False))  # whole or not at all


def fresh_classes(parser: ArgumentParser, args: list[str], config: Namespace) -> dict[str, Namespace]:
    """The classes that `args` switch away from configs/base.yaml's, each with only the arguments given to it.

    jsonargparse keeps the arguments a newly named class shares with the one before it (SGD would inherit the
    base's AdamW weight_decay, a fork's data module MNIST's val_size). Where that happened, the arguments are
    read again one layer at a time (a --config file, a flag), and a layer that switches a class starts it
    afresh: what it gets is its own defaults and what this layer and the later ones say."""
    base = parser.parse_args(["--config", str(BASE_CONFIG)])
    if all(class_path(config, key) in (None, class_path(base, key)) for key in CLASS_KEYS):
        return {}
    layers: list[list[str]] = []
    for word in args:  # a layer: an option with its values and the options inside it (--x X --x.y 1)
        head = layers[-1][0].split("=")[0].rstrip("+") if layers else ""  # --trainer.callbacks+=X too
        layers.append([word]) if word.startswith("--") and not word.startswith(f"{head}.") else layers[-1].append(word)

    def flags(key: str, among: list[list[str]], accepted: set[str] | None = None) -> list[str]:
        """The words of the flags for a class's arguments (--key.name value) among these layers, in order."""
        names = [layer[0].split("=")[0].removeprefix(f"--{key}.").split(".")[0] for layer in among]
        chosen = [layer for layer, name in zip(among, names, strict=True) if layer[0].startswith(f"--{key}.")
                  and (accepted is None or name in accepted)]  # fmt: skip
        return [word for layer in chosen for word in layer]

    config = base
    for i, layer in enumerate(layers):
        later = [word for key in CLASS_KEYS for word in flags(key, layers[i + 1 :])]  # a required one may come later
        new = parser.parse_args([*layer, *later], namespace=config.clone(), defaults=False)
        for key in CLASS_KEYS:
            if class_path(new, key) not in (None, class_path(config, key)):
                # Flags before the switch carry over where the new class takes them (as jsonargparse's own rule).
                accepted = set(own_parameters(import_class(class_path(new, key))))
                words = [*flags(key, layers[:i], accepted), *layer, *flags(key, layers[i + 1 :])]
                start = config.clone()
                start[key] = Namespace(class_path=class_path(new, key))
                new[key] = parser.parse_args(words, namespace=start, defaults=False)[key]
        config = new
    switched = [key for key in CLASS_KEYS if class_path(config, key) not in (None, class_path(base, key))]
    for key in switched:  # what was not given is the class's own default, written out as in config.yaml
        params = own_parameters(import_class(config[key].class_path)).items()
        own = {name: p.default for name, p in params if p.default is not p.empty}
        config[key].init_args = Namespace(**{**own, **vars(config[key].get("init_args") or Namespace())})
    return {key: config[key] for key in switched}


def own_parameters(cls: type) -> dict[str, inspect.Parameter]:
    """A class's named arguments, its parents' too where it passes **kwargs on to them (as jsonargparse reads
    them), the nearest class's first."""
    own: dict[str, inspect.Parameter] = {}
    for klass in cls.__mro__:
        params = inspect.signature(klass.__init__).parameters.values()
        named = [p for p in params if p.name != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        own |= {p.name: p for p in named if p.name not in own}
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            return own
    return own


def contract_part(datamodule, part: str | None):
    contract = contract_of(datamodule)
    return contract if part is None else len(contract["classes"]) if part == "classes" else tuple(contract["shape"])


def class_path(config: Namespace, key: str) -> str | None:
    return value.get("class_path") if isinstance(value := config.get(key), Namespace) else None


def with_trainer_prefix(args: list[str], trainer_options: set[str]) -> list[str]:
    """`--max_epochs 3` -> `--trainer.max_epochs 3` for every Trainer option: flat flags, as Lightning's own
    Trainer(...) arguments read (LightningCLI has no such switch); every other word passes unchanged."""
    result = []
    for word in args:
        name, equals, value = word[2:].partition("=")
        result.append(f"--trainer.{name}{equals}{value}" if word.startswith("--") and name in trainer_options else word)
    return result


def check_writable(folder: Path, run: bool = False) -> None:
    """Fail before anything is written when the log folder (or the `run` a resume or test writes into) is not one."""
    existing = folder.absolute()
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        why = "is a file, not a folder" if not existing.is_dir() else "is not writable"
        fix = "make it writable (a resume or test writes into the run)" if run else "pass a writable --default_root_dir"
        raise UserError(f"cannot write logs to {folder}: {existing} {why}; {fix}")


def hand_over_early_stops(callbacks: list[Callback]) -> None:
    """Stop signals noted while the program loaded (train.py) go to the callbacks that act on them (`notice`,
    project.extras.preemption). With none, a stop signal ends the run as Ctrl-C does (project.Stopped: its
    clean-up runs, so a run that trained nothing leaves no folder), except SLURM's SIGUSR1, which Lightning's
    own SLURM handler requeues on."""
    takers = [callback for callback in callbacks if callable(getattr(callback, "notice", None))]
    for stop in STOP_SIGNALS:
        if signal.getsignal(stop) is note:  # nothing took it over
            lightnings = stop == signal.SIGUSR1 and SLURMEnvironment.detect()
            signal.signal(stop, signal.SIG_DFL if lightnings else stop_now)
    early, EARLY_STOPS[:] = list(EARLY_STOPS), []
    for signum in early:
        for callback in takers:
            callback.notice(signum, None)
        if not takers:
            stop_now(signum, None)


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


def check_devices(accelerator, devices, num_nodes: int = 1) -> None:
    """A GPU that is not there, more CPU processes than cores (which would only slow DDP down), or several
    machines with nothing that starts the others (Lightning would wait for them forever): one line."""
    launched = SLURMEnvironment.detect() or TorchElasticEnvironment.detect() or "NODE_RANK" in os.environ
    if num_nodes > 1 and not launched:
        raise UserError(f"--num_nodes {num_nodes}: nothing starts the other machines (no SLURM job, no torchrun); "
                        "launch each machine's process with srun or torchrun (docs/scaling.md)")  # fmt: skip
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise UserError(f"--accelerator {accelerator} needs a GPU, but PyTorch sees none on this machine "
                        "(torch.cuda.is_available() is False); leave out --accelerator for the CPU")  # fmt: skip
    on_cpu = accelerator == "cpu" or (accelerator == "auto" and not torch.cuda.is_available())
    count = int(devices) if str(devices).isdigit() else None
    if on_cpu and count and count > (os.cpu_count() or 1):
        raise UserError(f"--devices {count} asks for {count} processes on the CPU, but this machine has "
                        f"{os.cpu_count()} cores; pass --devices {os.cpu_count()} or fewer")  # fmt: skip


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


def expand(path: str) -> str:
    """~ and $VARS in a path, as a shell would expand them (it does not after `--option=`, YAML never does)."""
    return os.path.expanduser(os.path.expandvars(path))


def import_class(class_path: str) -> type:
    module, _, name = class_path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def explain_failure(error: Exception, then: str = "run again") -> str:
    """The one line for an error that ends a run: the user's mistake as raised; a full or read-only disk, or a path
    that cannot be (a file where a folder goes), by what happened and `then` what to do; else its type and message."""
    if isinstance(error, UserError | MisconfigurationException):  # Lightning's own errors about a configuration
        return str(error)
    cause = next((e for e in (error, error.__cause__, error.__context__) if isinstance(e, OSError)), None)
    if cause is not None and cause.errno in (*DISK_FAULTS, *PATH_FAULTS):
        where, path = f" ({os.fsdecode(cause.filename)})" if cause.filename else "", cause.errno in PATH_FAULTS
        verb, fix = ("use", "pass another path") if path else ("write", "free space or make the folder writable")
        verb, fix = ("use", "give this user access to it") if cause.errno == errno.EACCES else (verb, fix)
        return f"cannot {verb}{where}: {cause.strerror}; {fix}, then {then}"
    return f"{type(error).__name__}: {error} (not a mistake this template knows; --debug shows the traceback)"


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; a mistake the user can fix ends with one line on stderr and exit status 2 (`--debug`: the
    traceback instead)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug, args = "--debug" in argv, [word for word in argv if word != "--debug"]
    test_after_fit = not args or args[0] not in SUBCOMMANDS  # a subcommand is the first word only
    args = ["fit", *args] if test_after_fit else args
    try:
        cli = ClassifierCLI(run_data_defaults(args), test_after_fit=test_after_fit)
    except (Stopped, SIGTERMException) as stop:  # a stop signal that no callback saved on
        status = stop.code if isinstance(stop.code, int) else 128 + signal.SIGTERM  # Lightning's has none: 0
        why = "--callbacks.preemption is off" if isinstance(stop, Stopped) else "before training started"
        print(f"{signal.Signals(status - 128).name}: stopped, nothing saved on it ({why}); --ckpt_path last goes on "
              "from the newest epoch-end last.ckpt, if any", file=sys.stderr)  # fmt: skip
        return status
    except SystemExit as stop:
        if isinstance(stop.__context__, KeyboardInterrupt):  # Lightning's end of a stage at Ctrl-C: status 1
            return 128 + signal.SIGINT
        raise
    except Exception as error:
        if debug:
            raise
        resume = " (with --ckpt_path last, a run continues from its last saved checkpoint)" if args[0] == "fit" else ""
        return fail(explain_failure(error, then=f"run again{resume}"))
    finally:  # under DDP, else gloo's threads may abort the process as Python exits (pytorch issue 190489)
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    if cli.trainer.is_global_zero and isinstance(folder := getattr(cli.trainer.logger, "log_dir", None), str):
        print(f"run folder: {folder}", file=sys.stderr)  # none under --fast_dev_run or --logger false
    return 0
