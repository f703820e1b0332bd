"""An image classifier template on PyTorch Lightning: project.cli is the command line."""

import signal

EARLY_STOPS: list[int] = []  # stop signals noted while the program loads, handed to the run once it is built


def note(signum: int, frame) -> None:
    EARLY_STOPS.append(signum)


def note_stop_signals() -> None:
    """SIGTERM and SIGUSR1 noted, not fatal, while torch and Lightning load (a cluster may stop a job in its first
    seconds): the run's own handler takes them over (project.cli: ClassifierCLI.instantiate_trainer)."""
    for stop in (signal.SIGTERM, signal.SIGUSR1):
        signal.signal(stop, note)
