from collections.abc import Sequence

from torch import Tensor, nn


class CNN(nn.Module):
    """A small CNN: 3x3 convs of 32, 64 and 128 channels, each then 2x2 max-pool, then fc 128 -> fc classes.

    The defaults are the default recipe's (found with tune.py: docs/results.md); the classic two-convolution
    MNIST CNN (conv 32 -> conv 64 -> fc 128 -> fc 10) is `channels=(32, 64)`.

    Args:
        channels: output channels of each 3x3 convolution (each followed by 2x2 max-pooling).
        hidden: width of the fully connected layer.
        dropout: dropout before each fully connected layer.
        batch_norm: batch norm after each convolution (the conv then has no bias).
        input_shape: (channels, height, width) of the input images (linked from the data contract).
        num_classes: number of class scores (linked from the data contract).
    """

    def __init__(self, channels: Sequence[int] = (32, 64, 128), hidden: int = 128, dropout: float = 0.08,
                 batch_norm: bool = True, input_shape: tuple[int, int, int] = (1, 28, 28),
                 num_classes: int = 10) -> None:  # fmt: skip
        super().__init__()
        layers: list[nn.Module] = []
        in_channels, height, width = input_shape
        for out_channels in channels:
            # Pooling right after each conv keeps the 2-core CPU budget: the next layer, the batch norm and the
            # ReLU all see 4x fewer positions (max-pool and ReLU commute, so only the norm's place changes).
            layers += [nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=not batch_norm), nn.MaxPool2d(2)]
            if batch_norm:
                layers.append(nn.BatchNorm2d(out_channels))
            layers.append(nn.ReLU())
            in_channels, height, width = out_channels, height // 2, width // 2
        if height < 1 or width < 1:
            raise ValueError(f"images of shape {tuple(input_shape)} are too small for {len(channels)} poolings by 2; "
                             "give fewer channels or larger images")  # fmt: skip
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(dropout),
            nn.Linear(in_channels * height * width, hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, images: Tensor) -> Tensor:
        return self.classifier(self.features(images))
