"""train.py's command line: the core's ClassifierCLI (project.cli) with the run layer around it. configs/train.yaml
after configs/base.yaml, flat Trainer flags, paths expanded, one folder per run (logs/<data set>_<net>/version_N)
that resume and test write into, `--ckpt_path last`, checks before any work, --help, and one line for every error."""

import functools
import os
import re
import signal
import sys
import warnings
from argparse import ArgumentError
from pathlib import Path
from typing import Optional

import torch
import yaml
from jsonargparse import Namespace
from lightning import Trainer
from lightning.pytorch.callbacks import Callback, Checkpoint, LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, SaveConfigCallback
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities.exceptions import SIGTERMException
from lightning.pytorch.utilities.rank_zero import rank_zero_only
from torch.utils.data import DataLoader, DistributedSampler

from project.cli import CONFIGS, SUBCOMMANDS, ClassifierCLI
from project.errors import UserError
from project.files import write_atomically
from project.run import resume
from project.run.errors import explain_failure, fail, in_torch_distributed, named_by_process_0, option_error
from project.run.help import help_text
from project.run.last_checkpoint import LastCheckpoint
from project.run.options import (
    PATH_KEYS,
    check_devices,
    check_writable,
    expand,
    fresh_classes,
    launched_by_slurm,
    with_trainer_prefix,
)
from project.run.parse_errors import before_its_class, explain
from project.run.signals import Stopped, hand_over_early_stops


class RunCLI(ClassifierCLI):
    """ClassifierCLI with the run layer: what train.py runs."""

    base_configs = (CONFIGS / "base.yaml", CONFIGS / "train.yaml")

    def __init__(self, args: list[str], test_after_fit: bool = False, run: bool = True) -> None:
        self.run_folder: Path | None = None  # the --ckpt_path's run folder: fit continues in it, test writes there
        self.claimed: Path | None = None  # the new run folder this process made
        self.logger: dict | None = None  # the run's TensorBoardLogger: its folder
        self.lock: int | None = None  # the run folder this process writes, locked until __init__ returns (the run)
        self.checkpoint: dict | None = None  # the --ckpt_path's contents, checked against the model once it is built
        self.parsers: list[LightningArgumentParser] = []  # the subcommand's (the one asked for), or run=False's
        self.asked = args[0] if run and args[:1] and args[0] in SUBCOMMANDS else None
        raise_errors = {"exit_on_error": False}  # parse errors come back as exceptions, for main()'s one line
        kwargs = {**raise_errors, **{name: raise_errors for name in self.subcommands()}}
        try:
            super().__init__(args, test_after_fit, save_config_callback=KeepRunConfig, run=run, parser_kwargs=kwargs)
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

    def subcommands(self) -> dict[str, set[str]]:
        # The parser of the subcommand asked for only: LightningCLI builds one for each of the four, every class's
        # arguments in each, 0.24 s of every start here (a fifth of a short run's time).
        return {name: keys for name, keys in super().subcommands().items() if name == self.asked or not self.asked}

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        super().add_arguments_to_parser(parser)
        # The callbacks registry is configs/train.yaml's `callbacks`: each name a class with options, or null.
        for name in yaml.safe_load(self.base_configs[-1].read_text()).get("callbacks") or {}:
            callback = Optional[Callback]  # noqa: UP045 (a typing form jsonargparse reads on every Python)
            parser.add_argument(f"--callbacks.{name}", type=callback, default=None, help=f"{name}, or null: off")
        self.parsers.append(parser)

    def parse_arguments(self, parser: LightningArgumentParser, args: list[str]) -> None:
        # LightningCLI's own, with flat Trainer flags, fresh arguments for a switched class and one-line errors.
        head, sub = args[:1] if self.asked else [], self.parsers[0]  # run=False: no subcommand
        keys = [key.replace(".init_args.", ".") for key in sub.get_defaults().keys()]  # noqa: SIM118 (a Namespace)
        flat = {key.removeprefix("trainer.") for key in keys if key.count(".") == 1 and key.startswith("trainer.")}
        rest = with_trainer_prefix(args[len(head) :], flat)
        shown = [word for word in rest if word.split("=")[0] == "--print_config" or word in ("-h", "--help")]
        rest = [word for word in rest if word not in shown]
        bases = self.with_base_configs([])
        try:
            rest = with_required_shown(parser, [*head, *bases], rest) if shown else rest
            config = parser.parse_args([*head, *bases, *rest])
            sub_config = config[head[0]] if head else config
            for key, value in fresh_classes(sub, bases, rest, sub_config).items():
                sub_config[key] = value
            for key in PATH_KEYS:  # one rule for paths: ~ and $VARS expanded once, here, for everything after
                if isinstance(value := sub_config.get(key), str) and value not in ("last", "best", "hpc", "registry"):
                    sub_config[key] = expand(value)
        except (ArgumentError, UnicodeDecodeError) as error:
            options = [f"--{key}" for key in keys] + [f"--{name}" for name in flat]
            first_word = args[1] if self.test_after_fit and len(args) > 1 else None  # main() put "fit" first
            line = explain(str(error), options, keys, first_word)
            raise UserError(before_its_class(line, args[len(head) :])) from error
        if shown:  # --help or --print_config: printed once the whole config is known, then nothing runs
            helps = {"-h", "--help"} & set(shown)
            print(help_text(sub_config) if helps else sub.dump(sub_config, skip_unset=False), end="")
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
            experiment = Path(config.trainer.default_root_dir) / resume.experiment_name(config.as_dict())
            run = resume.latest_run(experiment, resume.recipe_of(config.as_dict()))
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
        self.checkpoint = resume.read_checkpoint(Path(config.ckpt_path))  # one line now, not a page later
        data, contract = config.get("data.init_args") or {}, self.checkpoint.get("hyper_parameters", {}).get("contract")
        if self.config.subcommand == "predict" and contract and "contract" in data:  # a data module that takes it
            data.contract = contract  # predicts as the model was trained: the training pictures may be gone
        self.run_folder = resume.run_folder_of(Path(config.ckpt_path))
        if self.run_folder is not None and self.config.subcommand == "fit" and rank_zero_only.rank == 0:
            self.lock = resume.lock_run(self.run_folder)

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        if not isinstance(registry := config.get("callbacks"), Namespace):  # a list, as trainer.callbacks takes
            got = type(registry).__name__ if registry is not None else "null"
            raise UserError(f"callbacks: got {got}; it holds the callbacks by name (NAME: CLASS with options, or "
                            "NAME: null to leave one out; the names are configs/train.yaml's); a list of callbacks "
                            "goes under trainer.callbacks")  # fmt: skip
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
            root, name = config.trainer.default_root_dir, resume.experiment_name(config.as_dict())
            where = {"save_dir": root, "name": name}
            if run is None and rank_zero_only.rank == 0 and not config.trainer.fast_dev_run:  # process 0 names it
                self.claimed = resume.claim_run_folder(Path(root) / name)
                self.lock = resume.lock_run(self.claimed)  # a resume of it waits for this run to end (two writers)
                where["version"] = int(self.claimed.name.removeprefix("version_"))
            if run:
                number = resume.RUN_FOLDER.fullmatch(run.name)  # a number, which the progress bar shows whole
                version = int(number[1]) if number else run.name  # a string: its last 4 characters
                where = {"save_dir": str(run.parents[1]), "name": run.parent.name, "version": version}  # as named
            # Given to the Trainer, not written into config.yaml: a run of that file again is a run of its own.
            self.logger = {**where, "default_hp_metric": False}

    def instantiate_classes(self) -> None:
        super().instantiate_classes()
        if self.checkpoint is not None:  # before Lightning's page-long size mismatch
            resume.check_fits(self.checkpoint, self.model, self.subcommand == "fit")

    def instantiate_trainer(self, **kwargs) -> Trainer:
        config = self.config_init[self.subcommand] if self.subcommand else self.config_init
        given = config.trainer.callbacks  # a list, one callback or none: LightningCLI's Trainer takes each
        given = [given] if isinstance(given, Callback) else given or []
        callbacks = [*given, *filter(None, vars(config.callbacks).values())]
        # `--enable_checkpointing false`: Lightning refuses checkpoint callbacks; `--logger false`: no rates to log.
        checkpoints, logged = config.trainer.enable_checkpointing is not False, config.trainer.logger is not False
        if checkpoints:  # last.ckpt after every epoch: what `--ckpt_path last` resumes, whatever the callbacks
            # After the best checkpoint (the first ModelCheckpoint is the one test takes), before the other
            # checkpoint callbacks (preemption), which Lightning runs in this order at an epoch's end.
            after_best = [i + 1 for i, c in enumerate(callbacks) if isinstance(c, ModelCheckpoint)]
            before_others = [i for i, c in enumerate(callbacks) if isinstance(c, Checkpoint)]
            callbacks.insert((after_best or before_others or [len(callbacks)])[0], LastCheckpoint())
        callbacks.append(LogEveryEpoch())
        kwargs["callbacks"] = [c for c in callbacks if (checkpoints or not isinstance(c, Checkpoint))
                               and (logged or not isinstance(c, LearningRateMonitor))]  # fmt: skip
        if self.run_folder is not None:  # a resume or a later test: checkpoints/ holds the run's own
            own = self.run_folder.resolve()  # a callback's dirpath, where set, is a real path (None: the run's)
            for callback in kwargs["callbacks"]:
                if isinstance(callback, ModelCheckpoint) and Path(callback.dirpath or own).is_relative_to(own):
                    callback.load_state_dict = functools.partial(in_its_folder_now, callback, callback.load_state_dict)
                    if self.subcommand == "fit":
                        callback.setup = functools.partial(without_folder_warning, callback.setup)
        plugins = list(config.trainer.plugins) if isinstance(config.trainer.plugins, list) else [config.trainer.plugins]
        kwargs["plugins"] = [plugin for plugin in plugins if plugin is not None]
        if self.logger is not None:
            kwargs["logger"] = TensorBoardLogger(**self.logger)
        try:
            trainer = super().instantiate_trainer(**kwargs)
        except (TypeError, ValueError) as error:  # Lightning's check of a Trainer option (--devices -1 on the CPU)
            raise UserError(f"a Trainer option: {error}") from error
        hand_over_early_stops(lightning_requeues=launched_by_slurm())
        return trainer

    def best_checkpoint(self) -> str | None:
        return resume.best_checkpoint(self.trainer.checkpoint_callback)


def in_its_folder_now(callback: ModelCheckpoint, load_state_dict, state: dict) -> None:
    """ModelCheckpoint.load_state_dict for the run's own checkpoints, with the paths they saved put in the folder
    as it is named now. Lightning keeps the best score and the kept checkpoints only where the folder's name is
    unchanged: a run saved as logs/... and resumed as /home/me/logs/..., from another directory, or after its folder
    moved, would take its best from the resumed epochs alone and keep a second best checkpoint."""
    saved, now = state.get("dirpath"), callback.dirpath
    if saved and now and saved != now:

        def moved(path: str) -> str:  # both names hold the same files; relpath is lexical, as the saved paths are
            return os.path.join(now, os.path.relpath(path, saved)) if path else path

        paths = {key: moved(state[key]) for key in ("best_model_path", "kth_best_model_path", "last_model_path")
                 if key in state}  # fmt: skip
        kept = {moved(path): score for path, score in state.get("best_k_models", {}).items()}
        if all(Path(path).is_file() for path in kept):  # else they are in another folder: Lightning's rule holds
            state = {**state, **paths, "dirpath": now, "best_k_models": kept}
    load_state_dict(state)


def without_folder_warning(setup, *args, **kwargs) -> None:
    """ModelCheckpoint.setup without Lightning's warning that the checkpoint folder is not empty, for a resumed run
    whose checkpoints go into its own run folder: its checkpoints/ holds them by design. Lightning has no switch for
    it; the filter takes the warning's category and module, and setup raises no other warning (Lightning 2.6)."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", category=UserWarning, module=r"lightning\.pytorch\.callbacks\.model_checkpoint"
        )
        setup(*args, **kwargs)


def with_required_shown(parser: LightningArgumentParser, head: list[str], args: list[str]) -> list[str]:
    """`args` for --help or --print_config, with <required> for each required argument not given (a switched
    class's data_dir), so that the options of any class are shown before its values are known."""
    while True:
        try:
            parser.parse_args([*head, *args])
            return args
        except ArgumentError as error:
            missing = re.search(r'key "([^"]+)":.*the following arguments are required: ([\w, ]+)', str(error), re.S)
            if missing is None or f"--{missing[1]}.{missing[2].split(', ')[0]}" in args:
                return args  # another mistake: the parse after this one names it
            names = missing[2].split(", ")
            args = [*args, *(word for name in names for word in (f"--{missing[1]}.{name}", "<required>"))]


class LogEveryEpoch(Callback):
    """log_every_n_steps no longer than an epoch: a small picture folder's run (29 steps an epoch, under the
    default 50) logs train/loss and the learning rate as curves, not a point a run, and Lightning has nothing to
    warn about. Runs with longer epochs (MNIST's 430 steps) are unchanged."""

    def setup(self, trainer: Trainer, pl_module, stage: str) -> None:
        # Before configure_optimizers: a schedule over the whole run has Lightning load the training data then.
        if stage != "fit":
            return
        try:
            loader, limit = trainer.datamodule.train_dataloader(), trainer.limit_train_batches
            steps = len(loader)
        except (AttributeError, TypeError):  # loaders given to fit() directly, or with no length: Lightning's rule
            return
        if isinstance(loader, DataLoader) and not isinstance(loader.sampler, DistributedSampler):
            steps = -(-steps // trainer.world_size)  # under DDP, Lightning's sampler gives each process its share
        steps = min(steps, limit) if isinstance(limit, int) else int(steps * limit)
        if trainer.log_every_n_steps > 0:  # 0: logging off
            trainer.log_every_n_steps = max(1, min(trainer.log_every_n_steps, steps))


class KeepRunConfig(SaveConfigCallback):
    """Writes the run's config.yaml when the run starts; a resumed run, or a test of the run's checkpoint, keeps it
    as the run was started (resuming means "with the same config")."""

    def setup(self, trainer: Trainer, pl_module, stage: str) -> None:
        path = Path(trainer.log_dir) / self.config_filename  # log_dir on every process: a collective call
        if not trainer.strategy.broadcast(trainer.is_global_zero and path.is_file()) and trainer.is_global_zero:
            write_atomically(path, self.parser.dump(self.config, skip_unset=False))  # whole or not at all


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; a mistake the user can fix ends with one line on stderr and exit status 2 (`--debug`: the
    traceback instead)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug, args = "--debug" in argv, [word for word in argv if word != "--debug"]
    test_after_fit = not args or args[0] not in SUBCOMMANDS  # a subcommand is the first word only
    args = ["fit", *args] if test_after_fit else args
    try:
        cli = RunCLI(resume.run_data_defaults(args), test_after_fit=test_after_fit)
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
        if named_by_process_0(error, rank_zero_only.rank):
            return 2  # one line for the run, not one per process
        if in_torch_distributed(error):  # the others stay quiet (above): process 0 says what it knows
            first = (str(error).strip().splitlines() or [""])[0][:200]
            return fail(f"the processes of this run lost contact ({type(error).__name__}: {first}); one may have "
                        "ended on an error: run again with --debug to see each process's traceback")  # fmt: skip
        resumes = " (with --ckpt_path last, a run continues from its last saved checkpoint)" if args[0] == "fit" else ""
        return fail(explain_failure(error, then=f"run again{resumes}"))
    finally:  # under DDP, else gloo's threads may abort the process as Python exits (pytorch issue 190489)
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    if cli.trainer.is_global_zero and isinstance(folder := getattr(cli.trainer.logger, "log_dir", None), str):
        print(f"run folder: {folder}", file=sys.stderr)  # none under --fast_dev_run or --logger false
    return 0
