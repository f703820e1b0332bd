"""Plain nn.Modules that map a batch of images (N, 1, 28, 28) to class scores (N, classes)."""

from project.models.cnn import CNN
from project.models.mlp import MLP

__all__ = ["CNN", "MLP"]
