"""Trainer callbacks that the CLI adds to every run."""

from project.callbacks.prediction_table import PredictionTable
from project.callbacks.run_summary import RunSummary

__all__ = ["PredictionTable", "RunSummary"]
