"""What train.py's options mean beyond LightningCLI's: flat Trainer flags, a switched class's own defaults, paths
with ~ and $VARS, short data module names, batch limits read as Lightning reads them, and checks of the devices."""

import difflib
import importlib
import inspect
import os
import shlex
import sys
from pathlib import Path

import torch
from jsonargparse import ArgumentParser, Namespace
from lightning.fabric.plugins.environments import SLURMEnvironment, TorchElasticEnvironment
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from project.errors import UserError

CLASS_KEYS = ("model.net", "model.optimizer", "model.scheduler", "data")  # the classes a flag or config can switch
PATH_KEYS = ("trainer.default_root_dir", "ckpt_path", "data.init_args.data_dir", "data.init_args.predict_path",
             "data.init_args.cache_dir")  # fmt: skip
# Data modules known by their class name without being imported by the core (jsonargparse resolves a short name
# only among the subclasses already imported).
SHORT_NAMES = {"ImageFolderDataModule": "project.data.folder.ImageFolderDataModule"}


def with_trainer_prefix(args: list[str], trainer_options: set[str]) -> list[str]:
    """`--max_epochs 3` -> `--trainer.max_epochs 3` for every Trainer option, as Lightning's own Trainer(...)
    arguments read (LightningCLI has no such switch); a data module's short name -> its import path."""
    result = []
    for word in args:
        name, equals, value = word[2:].partition("=")
        if word.startswith("--") and name in trainer_options:
            word = f"--trainer.{name}{equals}{value}"
        elif name == "data" and value in SHORT_NAMES:  # --data=ImageFolderDataModule
            word = f"--data={SHORT_NAMES[value]}"
        elif result[-1:] == ["--data"]:  # --data ImageFolderDataModule
            word = SHORT_NAMES.get(word, word)
        result.append(word)
    return result


def fresh_classes(parser: ArgumentParser, bases: list[str], args: list[str], config: Namespace) -> dict[str, Namespace]:
    """The classes that `args` switch away from the base configs' (`bases`: their --config words), each with only
    the arguments given to it.

    jsonargparse keeps the arguments a newly named class shares with the one before it (SGD would inherit the
    base's AdamW weight_decay, a fork's data module MNIST's val_size). Where that happened, the arguments are
    read again one layer at a time (a --config file, a flag), and a layer that switches a class starts it
    afresh: what it gets is its own defaults and what this layer and the later ones say."""
    switches = ["--config", "-c", "--model", *(f"--{key}{end}" for key in CLASS_KEYS for end in ("", ".class_path"))]
    names = {word.split("=")[0] for word in args if word.startswith("-")}
    if not any(switch.startswith(name) for switch in switches for name in names):  # none, even abbreviated, can
        return {}  # switch a class: no second parse
    base = parser.parse_args(bases)
    if all(class_path(config, key) in (None, class_path(base, key)) for key in CLASS_KEYS):
        return {}
    layers: list[list[str]] = []
    for word in args:  # a layer: an option with its values and the options inside it (--x X --x.y 1)
        head = layers[-1][0].split("=")[0].rstrip("+") if layers else ""  # --trainer.callbacks+=X too
        if not layers or word == "-c" or word.startswith("--") and not word.startswith(f"{head}."):
            layers.append([word])
        else:
            layers[-1].append(word)

    def name_of(flag: str, key: str) -> str:  # --model.net.init_args.width, --model.net.width: width
        return flag.split("=")[0].removeprefix(f"--{key}.").removeprefix("init_args.").split(".")[0]

    def flags(key: str, among: list[list[str]], accepted: set[str] | None = None) -> list[str]:
        """The words of the flags for a class's arguments (--key.name value) among these layers, in order."""
        chosen = [layer for layer in among if layer[0].startswith(f"--{key}.")
                  and (accepted is None or name_of(layer[0], key) in accepted)]  # fmt: skip
        return [word for layer in chosen for word in layer]

    config, left_out = base, {}
    for i, layer in enumerate(layers):
        later = [word for key in CLASS_KEYS for word in flags(key, layers[i + 1 :])]  # a required one may come later
        new = parser.parse_args([*layer, *later], namespace=config.clone(), defaults=False)
        for key in CLASS_KEYS:
            if class_path(new, key) not in (None, class_path(config, key)):
                # Flags before the switch carry over where the new class takes them (as jsonargparse's own rule);
                # the others are left out, with a note (common flags, then --model.net MLP, is a way to write it).
                accepted = set(own_parameters(import_class(class_path(new, key))))
                earlier = [layer[0].split("=")[0] for layer in layers[:i] if layer[0].startswith(f"--{key}.")]
                left_out[key] = [(flag, name_of(flag, key), layer[:2], class_path(new, key), accepted)
                                 for flag in earlier
                                 if name_of(flag, key) not in accepted | {"class_path"}]  # fmt: skip
                words = [*flags(key, layers[:i], accepted), *layer, *flags(key, layers[i + 1 :])]
                start = config.clone()
                start[key] = Namespace(class_path=class_path(new, key))
                new[key] = parser.parse_args(words, namespace=start, defaults=False)[key]
        config = new
    for flag, name, switch, path, accepted in (entry for entries in left_out.values() for entry in entries):
        if rank_zero_only.rank == 0:  # as the class finally chosen takes them; once, not once per process
            near = difflib.get_close_matches(name, sorted(accepted), n=1)
            print(f"note: {flag} is left out: it came before {shlex.join(switch)}, and {path.rsplit('.', 1)[-1]} "
                  f"has no option {name!r}{f' (did you mean {near[0]}?)' if near else ''}; `python train.py "
                  f"{shlex.join(switch)} --help` lists its options", file=sys.stderr)  # fmt: skip
    switched = [key for key in CLASS_KEYS if class_path(config, key) not in (None, class_path(base, key))]
    for key in switched:  # what was not given is the class's own default, written out as in config.yaml
        params = own_parameters(import_class(config[key].class_path)).items()
        own = {name: p.default for name, p in params if p.default is not p.empty}
        config[key].init_args = Namespace(**{**own, **vars(config[key].get("init_args") or Namespace())})
    return {key: config[key] for key in switched}


def switched_after(args: list[str], key: str, name: str) -> tuple[str, str] | None:
    """The words that switch `key`'s class (--data ImageFolderDataModule) where they come after --key.name, and
    the class they name: an option given before its class, which the parser read as the replaced class's."""
    given = [i for i, word in enumerate(args) if word.split("=")[0] in (f"--{key}.{name}", f"--{key}.init_args.{name}")]
    if not given:
        return None
    for i in range(given[0] + 1, len(args)):
        flag, equals, value = args[i].partition("=")
        if flag in (f"--{key}", f"--{key}.class_path"):
            value = value if equals else (args[i + 1] if i + 1 < len(args) else "")
            return " ".join(args[i : i + (1 if equals else 2)]), value
    return None


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


def class_path(config: Namespace, key: str) -> str | None:
    return value.get("class_path") if isinstance(value := config.get(key), Namespace) else None


def import_class(class_path: str) -> type:
    module, _, name = class_path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def expand(path: str) -> str:
    """~ and $VARS in a path, as a shell would expand them (it does not after `--option=`, YAML never does)."""
    return os.path.expanduser(os.path.expandvars(path))


def check_writable(folder: Path, run: bool = False) -> None:
    """Fail before anything is written when the log folder (or the `run` a resume or test writes into) is not one."""
    existing = folder.absolute()
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        why = "is a file, not a folder" if not existing.is_dir() else "is not writable"
        fix = "make it writable (a resume or test writes into the run)" if run else "pass a writable --default_root_dir"
        raise UserError(f"cannot write logs to {folder}: {existing} {why}; {fix}")


def launched_by_slurm() -> bool:
    """SLURMEnvironment.detect() without its hint that srun goes unused, which it repeats at every call where srun
    is installed (the Trainer gives it once). The same rule as Lightning's: a SLURM task, not an interactive shell."""
    return "SLURM_NTASKS" in os.environ and SLURMEnvironment.job_name() not in ("bash", "interactive")


def check_devices(accelerator, devices, num_nodes: int = 1) -> None:
    """A GPU that is not there, more CPU processes than cores (which would only slow DDP down), or several
    machines with nothing that starts the others (Lightning would wait for them forever): one line."""
    launched = launched_by_slurm() or TorchElasticEnvironment.detect() or "NODE_RANK" in os.environ
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
