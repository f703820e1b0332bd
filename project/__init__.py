"""An image classifier template on PyTorch Lightning: project.cli is the command line.

Imported first by every entry point (train.py, tune.py, python -m project.extras.*), so that a Ctrl-C while
torch and Lightning load, or anywhere else that no stage handles, ends with one line, not a traceback."""

import atexit
import errno
import signal
import sys
import threading

EARLY_STOPS: list[int] = []  # stop signals noted while the program loads, handed to the run once it is built
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGHUP)  # a cluster's, a scheduler's, a closed terminal's
DISK_FAULTS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES)  # a full or read-only disk, no permission
PATH_FAULTS = (errno.ENOTDIR, errno.EISDIR, errno.EEXIST, errno.ENAMETOOLONG, errno.ELOOP)  # a path that cannot be


class Stopped(SystemExit):
    """A stop signal that no callback acts on (project.extras.preemption off): the process ends as at Ctrl-C,
    through the run's clean-up (a run that trained no step leaves no folder), with status 128 + its number."""


def stop_now(signum: int, frame) -> None:
    raise Stopped(128 + signum)


def note(signum: int, frame) -> None:
    EARLY_STOPS.append(signum)


def note_stop_signals() -> None:
    """Stop signals noted, not fatal, while torch and Lightning load, until the run takes them over (project.cli);
    ignored from the last exit handler on, where Python gives back their default action (a kill: a job FAILED)."""
    for stop in STOP_SIGNALS:
        signal.signal(stop, note)
    atexit.register(lambda: [signal.signal(stop, signal.SIG_IGN) for stop in STOP_SIGNALS])  # registered first: last


def one_line_interrupt(kind: type[BaseException], error: BaseException, trace) -> None:
    """A Ctrl-C that nothing handled: one line (the traceback with --debug). Python then ends the process by
    SIGINT, as a shell expects of a program that was interrupted (status 130 in the shell)."""
    if issubclass(kind, KeyboardInterrupt) and "--debug" not in sys.argv:
        print("\ninterrupted (Ctrl-C)", file=sys.stderr)
    else:
        sys.__excepthook__(kind, error, trace)


def one_line_thread_error(args: threading.ExceptHookArgs) -> None:
    """A background thread's error as one line, and none for a full or read-only disk under TensorBoard's event
    writer thread: the writer hands that error to the run, which ends with its own line."""
    error, writer = args.exc_value, type(args.thread).__module__.startswith("tensorboard.")
    if "--debug" in sys.argv:
        threading.__excepthook__(args)
    elif not (writer and isinstance(error, OSError) and error.errno in DISK_FAULTS):
        name = args.thread.name if args.thread else "a thread"
        print(f"note: {name} stopped: {type(error).__name__}: {error}", file=sys.stderr)


if sys.excepthook is sys.__excepthook__:  # not where a notebook or another program has its own
    sys.excepthook = one_line_interrupt
    threading.excepthook = one_line_thread_error
