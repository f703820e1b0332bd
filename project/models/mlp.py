import math
from collections.abc import Sequence

from torch import Tensor, nn


class MLP(nn.Module):
    """Multi-layer perceptron on the flattened image: 784-512-10 on MNIST.

    Args:
        hidden_sizes: width of each hidden layer.
        dropout: dropout after each hidden layer.
        batch_norm: batch norm after each hidden linear layer (which then has no bias).
        input_shape: (channels, height, width) of the input images (linked from the data contract).
        num_classes: number of class scores (linked from the data contract).
    """

    def __init__(self, hidden_sizes: Sequence[int] = (512,), dropout: float = 0.0, batch_norm: bool = False,
                 input_shape: tuple[int, int, int] = (1, 28, 28), num_classes: int = 10) -> None:  # fmt: skip
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = math.prod(input_shape)
        for hidden in hidden_sizes:
            # Linear -> BatchNorm -> ReLU -> Dropout; the norm's own shift makes the linear bias redundant.
            layers.append(nn.Linear(width, hidden, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm1d(hidden))
            layers.append(nn.ReLU())
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = hidden
        layers.append(nn.Linear(width, num_classes))
        self.layers = nn.Sequential(*layers)

    def forward(self, images: Tensor) -> Tensor:
        return self.layers(images)
