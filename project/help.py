"""`python train.py --help`: the options of the classes a run is built from, each once, by jsonargparse itself.

LightningCLI's own help lists every known subclass of a parameter's type: for the net (any `nn.Module`) that is
every class in torch.nn, hundreds of lines, while the data module's options are not shown at all (a subclass
is chosen by config). This help is made by jsonargparse from the same signatures the parser reads, so it cannot
disagree with it: Trainer flags (flat), the LightningModule's options, the nets' and the data module's, and the
callbacks' switches.
"""

from argparse import SUPPRESS, RawDescriptionHelpFormatter

from jsonargparse import ArgumentParser, DefaultHelpFormatter
from lightning import Trainer

from project.classifier import ImageClassifier
from project.data import MNISTDataModule
from project.models import CNN, MLP

USAGE = "python train.py [fit|validate|test|predict] [--config FILE ...] [options]"
CLASS_OPTIONS = """How classes are chosen (then their own options follow, e.g. --model.optimizer.lr 0.01):
  --model.net CNN|MLP|CLASS_PATH      the network: CNN and MLP below, or any nn.Module by import path
  --model.optimizer NAME|CLASS_PATH   any torch.optim class (Adam, SGD, ...); --model.optimizer.help SGD lists
                                      its options
  --model.scheduler NAME|CLASS_PATH   any torch.optim.lr_scheduler class, project.optim.OneCycle (the default
                                      recipe's), project.optim.WarmupCosine, or null
  --data CLASS_PATH                   another LightningDataModule (MNISTDataModule below is the default)
  --config FILE                       a YAML recipe (configs/); several may be given, later ones win
  --seed_everything N                 the seed of the run (default 0)
  --ckpt_path PATH|last               the checkpoint to resume, test or predict (last: the newest run's)
  --print_config                      print the resolved configuration and run nothing
"""


def add_callback_switches(parser: ArgumentParser, keys: list[str]) -> None:
    """`--<key>.enabled true|false` for each callback every run has (the CLI's parser and this help share it)."""
    for key in keys:
        parser.add_argument(f"--{key}.enabled", type=bool, default=True, help=f"register the {key} callback")


class Formatter(RawDescriptionHelpFormatter, DefaultHelpFormatter):
    """jsonargparse's help layout, with the description's own line breaks kept."""


def help_text(description: str, callbacks: dict[str, type], default_callbacks: list[str]) -> str:
    """The help: description, how classes are chosen, then each class's options as its signature gives them."""
    parser = ArgumentParser(usage=USAGE, description=description + "\n" + CLASS_OPTIONS, add_help=False,
                            formatter_class=Formatter)  # fmt: skip
    parser.add_class_arguments(Trainer, skip={"callbacks", "logger", "plugins"}, sub_configs=False)
    parser.add_class_arguments(ImageClassifier, "model", skip={"net", "optimizer", "scheduler"})
    parser.add_class_arguments(MNISTDataModule, "data")
    for key, callback in callbacks.items():
        parser.add_class_arguments(callback, key)
    add_callback_switches(parser, default_callbacks)
    parts = [parser.format_help()]
    for net in (CNN, MLP):  # the same keys (--model.net.dropout): one parser each
        net_parser = ArgumentParser(usage=SUPPRESS, add_help=False, formatter_class=Formatter)
        net_parser.add_class_arguments(net, "model.net")
        parts.append(f"With --model.net {net.__name__}:\n" + net_parser.format_help())
    return "\n".join(parts)
