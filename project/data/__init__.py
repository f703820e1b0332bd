"""Data: the MNIST-family LightningDataModule and the IDX files it reads."""

from project.data.mnist import DATASETS, MNISTDataModule

__all__ = ["DATASETS", "MNISTDataModule"]
