"""Data: the contract a data module meets, the MNIST family (IDX files) and folders of your own images."""

from project.data.contract import DataContract
from project.data.folder import ImageFolderDataModule
from project.data.mnist import DATASETS, MNISTDataModule

__all__ = ["DATASETS", "DataContract", "ImageFolderDataModule", "MNISTDataModule"]
