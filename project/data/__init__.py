"""Data: the contract a data module meets and the MNIST family (IDX files). Folders of your own pictures:
project.data.folder.ImageFolderDataModule (`--data ImageFolderDataModule`)."""

from project.data.contract import DataContract
from project.data.mnist import DATASETS, MNISTDataModule

__all__ = ["DATASETS", "DataContract", "MNISTDataModule"]
