"""The command line: LightningCLI with flat Trainer flags, and `fit` then `test` when no subcommand is given."""

import re
import sys
from pathlib import Path

import torch
from lightning import LightningDataModule, Trainer
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from project.callbacks import PredictionTable, RunSummary
from project.callbacks.non_finite import StopOnNonFiniteLoss
from project.callbacks.pictures import GradientNorm, InputGrid, ModelGraph, TestPictures, WeightHistograms
from project.classifier import ImageClassifier
from project.errors import UserError

SUBCOMMANDS = ("fit", "validate", "test", "predict")
# Callbacks with their own switch (--<key>.enabled true|false) and options, in --help and in config files.
OPTIONAL_CALLBACKS = {
    "non_finite": StopOnNonFiniteLoss,
    "input_grid": InputGrid,
    "test_pictures": TestPictures,
    "grad_norm": GradientNorm,
    "histograms": WeightHistograms,
    "graph": ModelGraph,
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
    "checkpoint.save_last": True,
    "checkpoint.filename": "epoch={epoch}-val_acc={val/acc:.4f}",
    "checkpoint.auto_insert_metric_name": False,
}


class ClassifierCLI(LightningCLI):
    """LightningCLI for ImageClassifier and MNISTDataModule, with the template's defaults."""

    def __init__(self, args: list[str], test_after_fit: bool = False, run: bool = True) -> None:
        self.test_after_fit = test_after_fit
        self.dataset_given = any(a.startswith("--data.dataset") for a in args)
        super().__init__(
            ImageClassifier,
            LightningDataModule,
            subclass_mode_data=True,  # any LightningDataModule, MNISTDataModule unless a config names another
            trainer_defaults={"callbacks": [RunSummary(), PredictionTable(), LearningRateMonitor("step")]},
            auto_configure_optimizers=False,  # the model's own configure_optimizers uses the injected ones
            save_config_kwargs={"overwrite": False},
            parser_kwargs={"description": DESCRIPTION, "fit": {"description": DESCRIPTION}},
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
        self.config = parser.parse_args(args)

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        ckpt_path = config.get("ckpt_path")
        if ckpt_path and Path(ckpt_path).is_file() and not self.dataset_given and "dataset" in config.data.init_args:
            # A checkpoint is evaluated on the data set it was trained on (its class names, its normalization),
            # unless --data.dataset says otherwise.
            data = torch.load(ckpt_path, weights_only=True, map_location="cpu").get("datamodule_hyper_parameters")
            if data and "dataset" in data:
                config.data.init_args.dataset = data["dataset"]
        if self.subcommand and config.get("weights_only") is None:
            # Checkpoints hold tensors and plain data only: load them without running code from the file.
            config.weights_only = True
        if config.trainer.logger is None or config.trainer.logger is True:
            # TensorBoard under default_root_dir/<data set>_<model>/version_N, without the -1 "hp_metric"
            # placeholder (RunSummary logs real metrics against the hyper-parameters).
            net = str(config.model.net.class_path).rsplit(".", 1)[-1].lower()
            dataset = config.data.init_args.get("dataset", "data")
            config.trainer.logger = {
                "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
                "init_args": {
                    "save_dir": config.trainer.default_root_dir,
                    "name": f"{dataset}_{net}",
                    "default_hp_metric": False,
                },
            }

    def instantiate_trainer(self, **kwargs) -> Trainer:
        trainer = super().instantiate_trainer(**kwargs)
        if not trainer.loggers:  # `--logger false`: no learning rates to log, and the monitor would refuse to run
            trainer.callbacks = [c for c in trainer.callbacks if not isinstance(c, LearningRateMonitor)]
        return trainer

    def after_fit(self) -> None:
        if self.test_after_fit and not self.trainer.interrupted:
            # Evaluate the checkpoint that validated best, not the weights of the last epoch.
            ckpt = "best" if self.trainer.checkpoint_callback.best_model_path else None
            self.trainer.test(self.model, datamodule=self.datamodule, ckpt_path=ckpt, weights_only=True)


DESCRIPTION = """Train and test an MNIST-family image classifier.

`python train.py [options]` fits, then tests the best checkpoint on the official test set.
The default recipe, configs/cnn.yaml, is read first; --config files and flags given after it override it.
`python train.py fit|validate|test|predict [options]` runs one Lightning stage.
Trainer options work flat (--max_epochs 3) and prefixed (--trainer.max_epochs 3).
Options of the data module: `python train.py --data.help MNISTDataModule`; of a net: `--model.net.help MLP`.
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


def split_command(argv: list[str]) -> tuple[list[str], bool]:
    """Arguments for LightningCLI, and whether to test after fitting (only when no subcommand was named)."""
    test_after_fit = not any(word in SUBCOMMANDS for word in argv)
    if test_after_fit:
        argv = ["fit", *argv]
    where = next(i for i, word in enumerate(argv) if word in SUBCOMMANDS) + 1
    return [*argv[:where], "--config", str(DEFAULT_CONFIG), *argv[where:]], test_after_fit


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; a mistake the user can fix ends with one line on stderr and exit status 2."""
    args, test_after_fit = split_command(sys.argv[1:] if argv is None else argv)
    try:
        ClassifierCLI(args, test_after_fit=test_after_fit)
    except UserError as error:
        return fail(str(error))
    except MisconfigurationException as error:
        message = " ".join(str(error).split())
        if "gpu" in message.lower() and not torch.cuda.is_available():
            message = (
                "--accelerator gpu needs a GPU, but PyTorch sees none on this machine "
                f"(torch.cuda.is_available() is False; Lightning said: {message}). "
                "Leave out --accelerator gpu to train on the CPU."
            )
        return fail(message)
    return 0


def fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2
