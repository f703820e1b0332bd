"""The command line: LightningCLI for ImageClassifier and any data module, configs/base.yaml read first, the data
contract linked into the model and its net, and `fit` then `test` of the best checkpoint when no subcommand is given.

    python -m project.cli                                   # the default recipe: fit, then test
    python -m project.cli fit --trainer.max_epochs 1        # one Lightning stage, with Lightning's own options

train.py is this plus the run layer (project/run/): named run folders, flat flags, one-line errors, the callbacks."""

import sys
import warnings
from pathlib import Path

from lightning import LightningDataModule, Trainer
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from project.classifier import ImageClassifier
from project.data.contract import CONTRACT_LINKS, contract_of

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
SUBCOMMANDS = ("fit", "validate", "test", "predict")


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
    """LightningCLI for ImageClassifier and any LightningDataModule, with `base_configs` as the first configs."""

    base_configs: tuple[Path, ...] = (CONFIGS / "base.yaml",)

    def __init__(self, args: list[str] | None = None, test_after_fit: bool = False, **kwargs) -> None:
        # torch 2.14 deprecates the LeafSpec class that Lightning 2.6 builds on every batch it moves to the device:
        # upstream noise on every run, silenced by its category and module (not its wording) until Lightning moves on.
        warnings.filterwarnings("ignore", category=FutureWarning, module=r"lightning\.pytorch\.utilities\._pytree")
        self.test_after_fit = test_after_fit
        # Any data module (subclass mode); ImageClassifier.configure_optimizers uses the optimizer and schedule
        # given as its arguments, so Lightning's automatic --optimizer/--lr_scheduler are off.
        super().__init__(ImageClassifier, LightningDataModule, subclass_mode_data=True, auto_configure_optimizers=False,
                         args=args, trainer_class=ClassifierTrainer, **kwargs)  # fmt: skip

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        # The data contract, from the built data module into the model and into the net where it takes the option.
        for target, part in CONTRACT_LINKS.items():
            parser.link_arguments("data", target, lambda data, part=part: contract_part(data, part), "instantiate")

    def parse_arguments(self, parser: LightningArgumentParser, args: list[str] | None) -> None:
        self.config = parser.parse_args(self.with_base_configs(sys.argv[1:] if args is None else args))

    def with_base_configs(self, args: list[str]) -> list[str]:
        """`--config` for each base config, after the subcommand: jsonargparse's default_config_files cannot hold
        a class whose parameter defaults to a class (the optimizer's: "Dict must include a class_path")."""
        head = args[:1] if args[:1] and args[0] in SUBCOMMANDS else []
        return [*head, *(word for path in self.base_configs for word in ("--config", str(path))), *args[len(head) :]]

    def after_fit(self) -> None:
        if self.test_after_fit and not self.trainer.interrupted:
            # The checkpoint that validated best (val/acc), not the weights of the last epoch.
            self.trainer.test(
                self.model, datamodule=self.datamodule, ckpt_path=self.best_checkpoint(), weights_only=True
            )  # a checkpoint of tensors and plain data: no code is loaded

    def best_checkpoint(self) -> str | None:
        return getattr(self.trainer.checkpoint_callback, "best_model_path", None) or None


def contract_part(datamodule: LightningDataModule, part: str | None):
    """The contract (as a checkpoint keeps it), or the part of it that a link fills in: the class count or shape."""
    contract = contract_of(datamodule)
    return contract if part is None else len(contract["classes"]) if part == "classes" else tuple(contract["shape"])


def main(args: list[str] | None = None) -> None:
    """Fit, then test, when the first word is no subcommand; else the one Lightning stage it names."""
    args = list(sys.argv[1:] if args is None else args)
    test_after_fit = not args[:1] or args[0] not in SUBCOMMANDS
    ClassifierCLI(["fit", *args] if test_after_fit else args, test_after_fit=test_after_fit)


if __name__ == "__main__":
    main()
