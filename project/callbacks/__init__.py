"""Trainer callbacks that the CLI adds to every run."""

from project.callbacks.run_summary import RunSummary

__all__ = ["RunSummary"]
