"""Stop signals and Ctrl-C outside any stage: noted while torch and Lightning load, handed to the run once it is
built, and one line instead of a traceback. Imported first by every entry point (train.py, tune.py,
python -m project.extras.*): importing it sets the one-line hooks."""

import atexit
import contextlib
import errno
import signal
import sys
import threading

# Errors of a full or read-only disk, or of no permission: the run that meets them says so in its own line.
DISK_FAULTS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES)
EARLY_STOPS: list[int] = []  # stop signals noted while the program loads, handed to the run once it is built
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGHUP)  # a cluster's, a scheduler's, a closed terminal's


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
    atexit.register(ignore_stop_signals)  # exit handlers run last-registered first: this one, registered first, last


@contextlib.contextmanager
def ctrl_c_held():
    """Ctrl-C held until the block (the imports of torch and Lightning) is done, then raised as KeyboardInterrupt:
    one raised inside a library's import can be caught by that library's own fallbacks and leave a module
    half-imported, and the next import fails with a page of unrelated errors."""
    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:  # ignored (a background job): left so
        yield
        return
    held: list[int] = []

    def hold(signum: int, frame) -> None:
        if held:  # pressed again: at once (an import that hangs on a network file system)
            raise KeyboardInterrupt
        held.append(signum)

    signal.signal(signal.SIGINT, hold)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if held:
        raise KeyboardInterrupt


def ignore_stop_signals() -> None:
    for stop in STOP_SIGNALS:
        signal.signal(stop, signal.SIG_IGN)


def hand_over_early_stops(lightning_requeues: bool) -> None:
    """Once the run's callbacks are built: a stop signal that none of them took over ends the run as Ctrl-C does
    (Stopped: its clean-up runs, so a run that trained nothing leaves no folder), but for SIGUSR1 where Lightning's
    SLURM handler requeues the job (`lightning_requeues`: it installs itself only where no handler is). The signals
    noted while the program loaded are then raised again, for the handlers now in place."""
    for stop in STOP_SIGNALS:
        if signal.getsignal(stop) is note:  # nothing took it over
            signal.signal(stop, signal.SIG_DFL if lightning_requeues and stop == signal.SIGUSR1 else stop_now)
    early, EARLY_STOPS[:] = list(EARLY_STOPS), []
    for signum in early:
        if signal.getsignal(signum) is signal.SIG_DFL:  # Lightning's handler is not there yet: stop now
            stop_now(signum, None)
        signal.raise_signal(signum)


def one_line_interrupt(kind: type[BaseException], error: BaseException, trace) -> None:
    """A Ctrl-C that nothing handled: one line (the traceback with --debug). Python then ends the process by
    SIGINT, as a shell expects of a program that was interrupted (status 130 in the shell)."""
    if issubclass(kind, KeyboardInterrupt) and "--debug" not in sys.argv:
        print("\ninterrupted (Ctrl-C)", file=sys.stderr)
    else:
        sys.__excepthook__(kind, error, trace)


def one_line_thread_error(args: threading.ExceptHookArgs) -> None:
    """A background thread's error as one line, and none for TensorBoard's event writer thread: the writer hands
    its error (a full disk, a run folder removed) to the run at its next write, which ends with its own line."""
    error, writer = args.exc_value, type(args.thread).__module__.startswith("tensorboard.")
    if "--debug" in sys.argv:
        threading.__excepthook__(args)
    elif not writer:
        name = args.thread.name if args.thread else "a thread"
        print(f"note: {name} stopped: {type(error).__name__}: {error}", file=sys.stderr)


if sys.excepthook is sys.__excepthook__:  # not where a notebook or another program has its own
    sys.excepthook = one_line_interrupt
    threading.excepthook = one_line_thread_error
