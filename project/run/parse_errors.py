"""The one line the CLI prints for the parser's many-line complaints, with the closest valid name where there is
one."""

import contextlib
import difflib
import importlib
import inspect
import re
from pathlib import Path

import torch
from lightning import LightningDataModule
from torch import nn

import project.data
import project.models
import project.optim
from project.cli import SUBCOMMANDS
from project.run.options import SHORT_NAMES, switched_after

# Where a class key's short class names live (--model.optimizer SGD): the parser resolves them among these.
CLASS_MODULES = {"model.optimizer": (torch.optim,), "model.scheduler": (torch.optim.lr_scheduler, project.optim),
                 "model.net": (project.models,), "data": (project.data,)}  # fmt: skip

# Lines of jsonargparse's messages that describe its search, not the user's mistake.
NOISE = ("Does not validate against any of the Union subtypes", "Subtypes:", "Errors:", "Given value type:",
         "Given value:", "Expected a <class 'NoneType'>", "does not correspond to a subclass of", "Expected a path but",
         "Problem with given class_path")  # fmt: skip


def explain(message: str, options: list[str], keys: list[str], first_word: str | None = None) -> str:
    """One line for a parse error: what is wrong, and the closest valid name where there is one.

    `options` are the command line's option strings (--max_epochs), `keys` the config keys (trainer.max_epochs),
    `first_word` the command line's first word where it named no subcommand (a misspelt one: tset).
    jsonargparse reports errors as English text only (no error codes or fields), so this reads its wording;
    tests/core/test_bad_input.py::test_each_parse_error_wording_is_still_recognized fails, naming this function,
    when a jsonargparse release words a case differently.
    """
    first = message.strip().splitlines()[0]
    unexpected = re.match(r"unrecognized arguments: (.*)", first)
    if unexpected and (word := next((w for w in unexpected[1].split() if w in SUBCOMMANDS), None)):
        first_word = f"a subcommand comes first: python train.py {word} [options]"
        return f"{word!r} after options is taken for an argument; {first_word}"
    if match := unexpected:
        flags = [word.split("=")[0] for word in match[1].split() if word.startswith("-")]
        if flags and (entry := not_in_registry(flags[0].removeprefix("--"), keys)):
            return f"unknown option {flags[0]}: {entry}"
        if flags:
            return f"unknown option {flags[0]}{closest(flags[0], options)}; `python train.py --help` lists them all"
        typo = closest(first_word, list(SUBCOMMANDS)) if match[1].split()[0] == first_word else ""
        first_word = "options start with --, and a subcommand (fit, test, ...) comes first"
        return f"unexpected argument {match[1]!r}: {first_word}{typo}"
    if match := re.search(r"does not accept option '([^']+)'", first):
        if entry := not_in_registry(match[1], keys):  # the entry's key, not its deepest (callbacks.x.init_args.y)
            return f"unknown key {'.'.join(match[1].split('.')[:2])!r} in a config file: {entry}"
        return f"unknown key {match[1]!r} in a config file{closest(match[1], keys)}"
    if first.startswith("Unexpected config:"):  # YAML that is no mapping: nothing, a comment, a list or a word
        given = " ".join(first.removeprefix("Unexpected config:").split())
        return f"a --config file holds no options ({given[:60] or 'it is empty'}); write them as `key: value` lines"
    if "codec can't decode" in first:  # a --config file that is no text (a binary file, another encoding)
        return f"a --config file is not UTF-8 text ({first}); give a YAML file"
    if first.startswith("Problems parsing config"):
        where = re.findall(r"line (\d+), column (\d+)", message)
        place = f" at line {where[-1][0]}, column {where[-1][1]}" if where else ""
        problem = " ".join(message.split(":", 1)[1].split())
        return f"a --config file is not valid YAML{place} ({problem})"
    if match := re.match(r'Parser key "([^"]+)":\s*(.*)', message, re.S):
        return explain_key_error(match[1], match[2])
    return " ".join(message.split())


def not_in_registry(key: str, keys: list[str]) -> str | None:
    """For `callbacks.NAME` where NAME is no entry of the callbacks registry: what the registry holds, and where a
    callback of one's own goes (the registry's shape, NAME: CLASS, is not trainer.callbacks' list)."""
    registry = sorted({k.split(".")[1] for k in keys if k.startswith("callbacks.")})
    name = key.split(".")[1] if key.startswith("callbacks.") else None
    if name is None or name in registry:
        return None
    return (f"the callbacks registry has no {name!r}{closest(name, registry, cutoff=0.8)} (its names, from "
            f"configs/train.yaml: {', '.join(registry)}); a callback of your own goes under trainer.callbacks, a list "
            "(- class_path: CLASS, init_args: {...}), or into configs/train.yaml's callbacks by a name")  # fmt: skip


def explain_key_error(key: str, detail: str) -> str:
    """One line for jsonargparse's 'Parser key "x": ...' errors, which nest one level per class."""
    if key == "trainer.callbacks" and re.search(r"Given value: \{'(?!class_path')", detail):  # NAME: CLASS's shape
        return (
            "--trainer.callbacks: a list of callbacks (- class_path: CLASS, init_args: {...}), not callbacks "
            "by name; named entries (NAME: CLASS, or NAME: null) go into the top-level `callbacks:` registry"
        )
    lines = [line.strip().removeprefix("- ").strip() for line in detail.splitlines()]
    if nested := re.search(r'Parser key "([^"]+)"', detail):
        key = f"{key}.{nested[1]}"
    given_class = re.search(r"class_path(?: |=)'([^']+)'", detail)  # "given class_path 'x'" or "class_path='x'"
    lines = [line for line in lines if line and not any(noise in line for noise in NOISE) and "Parser key" not in line]
    if number := re.search(r"Expected a <class '(float|int)'>", detail):
        # A number that does not parse (lr: float | Tensor would otherwise read as "no class named ..."): the item
        # that is none where a list holds it ([4,a]: a), else the value as given.
        got = re.search(r"Expected a <class '(?:float|int)'>\. Got value: (.*?)(?:\. Got value:|$)", detail, re.M)
        given = got or re.search(r"Given value: (.*?)(?:\. Got value:|$)", detail, re.M)
        value = given[1].strip() if given else "the value"
        value = nested[1] if (nested := re.search(r"NestedArg\(key='[^']*', val='([^']*)'\)", value)) else value
        kind = "a number" if number[1] == "float" else "a whole number"
        return f"--{key}: {value!r} is not {kind}"
    if re.search(r"Expected a <class '(collections\.abc\.Sequence|list|tuple)'>", detail):  # channels: list[int]
        given = re.search(r"Got value: (.*?)(?:\. Got value:|$)", detail, re.M) or re.search(
            r"Given value: (.*)", detail
        )
        value = given[1].strip() if given else "the value"
        return f"--{key}: {value} is not a list; write one in brackets, as `python train.py --help` shows it"
    for line in lines:
        if match := re.match(r"Expected a dot import path string: (.+)", line):
            names = class_choices(key)
            hint = f"; choose one of {', '.join(names)} or give a full import path" if names else ""
            return f"--{key}: no class named {match[1]!r}{closest(match[1], names)}{hint}"
        if match := re.match(r"Expected a typing.Literal\[(.*)\]\. Got value: (.+)", line):
            choices = ", ".join(re.findall(r"'([^']*)'", match[1]))
            return f"--{key}: {match[2]!r} is not one of {choices}"
        if match := re.search(r"Option '([^']+)' is not accepted", line):  # a net's, an optimizer's, ...
            accepted = user_options(given_class[1]) if given_class else []
            takes = f" ({given_class[1].rsplit('.', 1)[-1]} takes {', '.join(accepted)})" if accepted else ""
            return f"--{key}: unknown option {match[1]!r}{closest(match[1], accepted) or takes}"
        if match := re.match(r"module '([\w.]+)' has no attribute '(\w+)'", line):  # a class_path one level off
            where, hint = SHORT_NAMES.get(match[2]), closest(match[2], class_choices(key))
            hint = f"; it is {where} (or by its short name, {match[2]})" if where else hint
            return f"--{key}: {match[1]} has no {match[2]}{hint}"
        if match := re.search(r"No module named '([^']+)'", line):  # a fork's own class, not found by Python
            given = re.search(r"Given value: (\S+)", detail)
            if given and not given[1].startswith(match[1].split(".")[0]):  # its module imports one not installed
                return f"--{key}: {given[1]} imports {match[1]!r}, which is not installed"
            return (
                f"--{key}: no module named {match[1]!r}: a class of your own is named by its import path "
                "(my_project.module.ClassName), from a module beside train.py or in a folder on PYTHONPATH"
            )
        file = re.match(r"(?:Invalid content in sub-config file|Unexpected import path format:) (\S+?\.py)\b", line)
        if file:  # a file given, not a class: its import path from the folder train.py runs in
            path = Path(file[1]).with_suffix("")
            module = path.name if path.is_absolute() else ".".join(part for part in path.parts if part not in ".")
            where = f", with {path.parent} on PYTHONPATH" if path.is_absolute() else ""
            return f"--{key}: {file[1]} is a file; name a class in it by its import path ({module}.ClassName{where})"
        if match := re.match(r"Unexpected import path format: (\S+)", line):
            return f"--{key}: {match[1]} is no import path; name a class as module.ClassName (dots, no slashes)"
        if match := re.match(r"File does not exist: (.+)", line):
            return f"--{key}: file not found: {match[1]}"
    return f"--{key}: {lines[-1] if lines else ' '.join(detail.split())}"


def before_its_class(line: str, args: list[str]) -> str:
    """`line`, an unknown option of a class, said again where the option came before a switch of its class that
    takes it (--model.optimizer.momentum 0.9 --model.optimizer SGD: read as AdamW's) or that has no such option
    either (then its own suggestion: --model.optimizer.momentun ... SGD: did you mean momentum?)."""
    unknown = re.match(r"--([\w.]+): unknown option '(\w+)'", line)
    if not unknown or not (switch := switched_after(args, unknown[1], unknown[2])):
        return line
    key, name, (words, value) = unknown[1], unknown[2], switch
    path = (
        value
        if "." in value
        else SHORT_NAMES.get(value)
        or next((f"{module.__name__}.{value}" for module in CLASS_MODULES.get(key, ()) if hasattr(module, value)), None)
    )
    takes = user_options(path) if path else []
    if not takes:  # a class that does not import: the parse after the user's fix names it
        return line
    if name in takes:
        return (f"--{key}.{name} comes before {words}: give a class's options after it (before it they are read "
                f"as the replaced class's, which has no {name})")  # fmt: skip
    return f"--{key}.{name}: {value.rsplit('.', 1)[-1]} has no option {name!r}{closest(name, takes)}"


def closest(name: str, candidates: list[str], cutoff: float = 0.6) -> str:
    """'; did you mean X?' for the most similar candidate, or nothing."""
    by_lower = {candidate.lower(): candidate for candidate in candidates}  # Adamw -> AdamW, not Adam
    match = difflib.get_close_matches(name.lower(), list(by_lower), n=1, cutoff=cutoff)
    return f"; did you mean {by_lower[match[0]]}?" if match else ""


def class_choices(key: str) -> list[str]:
    """Class names a key takes by their short name."""
    if key.endswith("optimizer"):
        return sorted(name for name, obj in vars(torch.optim).items() if is_subclass(obj, torch.optim.Optimizer))
    if key.endswith("scheduler"):
        schedules = vars(torch.optim.lr_scheduler).items()
        return sorted(name for name, obj in schedules if is_subclass(obj, torch.optim.lr_scheduler.LRScheduler))
    if key.endswith("net"):  # the nets of project.models, a fork's own among them
        return sorted(name for name, obj in vars(project.models).items() if is_subclass(obj, nn.Module))
    if key == "data":  # the data modules of project.data
        data = [name for name, obj in vars(project.data).items() if is_subclass(obj, LightningDataModule)]
        return sorted([*data, *SHORT_NAMES])
    return []


def is_subclass(obj: object, base: type) -> bool:
    return inspect.isclass(obj) and issubclass(obj, base) and obj is not base and not obj.__name__.startswith("_")


def user_options(class_path: str) -> list[str]:
    """A class's arguments that a user sets: not those the model gives an optimizer or a schedule."""
    return [p for p in init_parameters(class_path) or [] if p not in ("params", "optimizer", "total_steps")]


def init_parameters(class_path: str) -> list[str]:
    """The constructor arguments of the class at class_path (for suggestions), or none if it does not import."""
    module, _, name = class_path.rpartition(".")
    with contextlib.suppress(ImportError, AttributeError, ValueError):
        return [
            p for p in inspect.signature(getattr(importlib.import_module(module), name)).parameters if p != "kwargs"
        ]
    return []
