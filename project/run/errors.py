"""One line for every error that ends a run: the exit, the option named for an error that a configured class
raised, and what a full disk or a path that cannot be means for the user."""

import errno
import importlib
import inspect
import os
import sys
import traceback

from jsonargparse import Namespace
from lightning.fabric.utilities.exceptions import MisconfigurationException

from project.errors import UserError
from project.run.options import CLASS_KEYS
from project.run.signals import DISK_FAULTS

# A path that cannot be: a file where a folder goes, a name too long, a link loop.
PATH_FAULTS = (errno.ENOTDIR, errno.EISDIR, errno.EEXIST, errno.ENAMETOOLONG, errno.ELOOP)


def fail(message: str) -> int:
    """The one-line error exit of every entry point: `error: <message>` on stderr, status 2."""
    print(f"error: {' '.join(message.split())}", file=sys.stderr)
    return 2


def named_by_process_0(error: BaseException, rank: int) -> bool:
    """Under DDP, an error that process 0 names in its own line (the processes share the terminal): a mistake of
    the user's, which every process meets alike, or a failed call of torch.distributed, which is another process's
    end. One line, not one per process."""
    return rank != 0 and (isinstance(error, UserError) or in_torch_distributed(error))


def in_torch_distributed(error: BaseException) -> bool:
    """An error raised in a call of torch.distributed: under DDP, mostly another process's end."""
    frames = traceback.extract_tb(error.__traceback__)
    return any(f"{os.sep}torch{os.sep}distributed{os.sep}" in frame.filename for frame in frames)


def missing_extra(error: ImportError, extra: str) -> str:
    """What to install where an optional dependency is missing: the extra of pyproject.toml that brings it."""
    return f'{error.name} is not installed: pip install -e ".[{extra}]" (".[dev]" has every extra)'


LOADERS = ("train_dataloader", "val_dataloader", "test_dataloader", "predict_dataloader")


def option_error(error: BaseException, config) -> str | None:
    """One line naming the option, for an error that a configured class raised about its arguments (in its
    constructor, configure_optimizers, or a data module's prepare_data and setup); None for any other error.

    Reusable classes raise ValueError naming their own parameter ("batch_size must be at least 1, got 0"):
    here that becomes "--data.batch_size must be ...". The class is the `self` of the innermost such method on
    the traceback (jsonargparse wraps a constructor's error in its own: the original is its innermost cause)."""
    while error.__cause__ is not None and not isinstance(error, UserError):
        error = error.__cause__
    if isinstance(error, UserError) or config is None:
        return str(error) if isinstance(error, UserError) else None
    keys = [*CLASS_KEYS, *(f"callbacks.{k}" for k in vars(config.callbacks))]
    # The configured classes by name (torch.optim.Adam is torch.optim.adam.Adam).
    paths = {"model": "ImageClassifier"} | {k: v.class_path.rsplit(".", 1)[-1] for k in keys
                                            if isinstance(v := config.get(k), Namespace)}  # fmt: skip
    message = named_option(error, paths)
    net = config.get("model.net")
    if message is None and isinstance(net, Namespace):
        # A net's own error reaches here as "not a subclass of CNN" (jsonargparse reports a union type, CNN | MLP |
        # nn.Module, by its first member's error): building the net again shows its own.
        module, _, name = net.class_path.rpartition(".")
        try:
            getattr(importlib.import_module(module), name)(**vars(net.get("init_args") or Namespace()))
        except (ValueError, TypeError) as own:
            return named_option(own, paths)
    return message


def named_option(error: BaseException, paths: dict[str, str]) -> str | None:
    """The error as "--key.option ..." (or "--key: ..."), from the innermost method of a configured class (by
    `paths`, option key -> class name) on its traceback; None where no such method raised it."""
    for frame, _ in reversed(list(traceback.walk_tb(error.__traceback__))):
        obj = frame.f_locals.get("self")
        name = frame.f_code.co_name  # a data loader's arguments are the data module's (its num_workers)
        if obj is None or name not in ("__init__", "configure_optimizers", "prepare_data", "setup") + LOADERS:
            continue
        key = next((k for k, name in paths.items() if type(obj).__name__ == name), None)
        if key is not None:
            first = str(error).split(" ", 1)[0].split(".")[0].rstrip(":")
            # The class's parameters, and those of the raising method (a base class's __init__ behind **kwargs).
            named = {*inspect.signature(type(obj)).parameters, *frame.f_code.co_varnames[: frame.f_code.co_argcount]}
            return f"--{key}.{error}" if first in named else f"--{key}: {error}"
    return None


def explain_failure(error: Exception, then: str = "run again") -> str:
    """The one line for an error that ends a run: the user's mistake as raised; a full or read-only disk, or a path
    that cannot be (a file where a folder goes), by what happened and `then` what to do; else its type and message."""
    if isinstance(error, UserError | MisconfigurationException):  # Lightning's own errors about a configuration
        return str(error)
    cause = next((e for e in (error, error.__cause__, error.__context__) if isinstance(e, OSError)), None)
    if cause is not None and cause.errno == errno.ENOENT and cause.filename:  # a folder gone while in use
        file = os.fsdecode(cause.filename)
        if os.path.dirname(file) and not os.path.isdir(os.path.dirname(file)):
            return f"cannot use {file}: its folder does not exist (removed while in use?); {then}"
    if cause is not None and cause.errno in (*DISK_FAULTS, *PATH_FAULTS):
        where, path = f" ({os.fsdecode(cause.filename)})" if cause.filename else "", cause.errno in PATH_FAULTS
        verb, fix = ("use", "pass another path") if path else ("write", "free space or make the folder writable")
        verb, fix = ("use", "give this user access to it") if cause.errno == errno.EACCES else (verb, fix)
        return f"cannot {verb}{where}: {cause.strerror}; {fix}, then {then}"
    return f"{type(error).__name__}: {error} (not a mistake this template knows; --debug shows the traceback)"
