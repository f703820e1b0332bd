"""Plain nn.Modules that map a batch of images (N, C, H, W) to class scores (N, classes), sized by the data contract."""

from project.models.cnn import CNN
from project.models.mlp import MLP

__all__ = ["CNN", "MLP"]
