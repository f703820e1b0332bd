import pytest
import torch
from torch import nn

from project.models import CNN, MLP

IMAGES = torch.randn(4, 1, 28, 28)


def linear_shapes(net: nn.Module) -> list[tuple[int, int]]:
    return [(m.in_features, m.out_features) for m in net.modules() if isinstance(m, nn.Linear)]


def test_mlp_default_is_784_512_10():
    net = MLP()
    assert linear_shapes(net) == [(784, 512), (512, 10)]
    assert sum(p.numel() for p in net.parameters()) == 784 * 512 + 512 + 512 * 10 + 10
    assert net(IMAGES).shape == (4, 10)


def test_mlp_hidden_sizes_dropout_and_batch_norm():
    net = MLP(hidden_sizes=[256, 128], dropout=0.3, batch_norm=True)
    assert linear_shapes(net) == [(784, 256), (256, 128), (128, 10)]
    assert [m.num_features for m in net.modules() if isinstance(m, nn.BatchNorm1d)] == [256, 128]
    assert [m.p for m in net.modules() if isinstance(m, nn.Dropout)] == [0.3, 0.3]
    assert net(IMAGES).shape == (4, 10)


def test_cnn_default_is_the_recipes_and_channels_32_64_the_classic_conv32_conv64_fc128_fc10():
    default = CNN()
    assert [(m.in_channels, m.out_channels) for m in default.modules() if isinstance(m, nn.Conv2d)] == [
        (1, 32), (32, 64), (64, 128)
    ]  # fmt: skip
    net = CNN(channels=(32, 64))
    convs = [(m.in_channels, m.out_channels) for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert convs == [(1, 32), (32, 64)]
    # Two 2x2 poolings: 28 -> 14 -> 7, so the first fully connected layer sees 64 * 7 * 7 features.
    assert linear_shapes(net) == [(64 * 7 * 7, 128), (128, 10)]
    assert net(IMAGES).shape == (4, 10)


@pytest.mark.parametrize("batch_norm", [True, False])
def test_cnn_channels_and_options(batch_norm):
    net = CNN(channels=[8, 16, 32], hidden=64, dropout=0.0, batch_norm=batch_norm)
    assert [m.out_channels for m in net.modules() if isinstance(m, nn.Conv2d)] == [8, 16, 32]
    assert any(isinstance(m, nn.BatchNorm2d) for m in net.modules()) == batch_norm
    # Each block pools right after its conv, so the norm and the ReLU see a quarter of the positions.
    block = [nn.Conv2d, nn.MaxPool2d, nn.BatchNorm2d, nn.ReLU] if batch_norm else [nn.Conv2d, nn.MaxPool2d, nn.ReLU]
    assert [type(m) for m in net.features] == block * 3
    assert linear_shapes(net) == [(32 * 3 * 3, 64), (64, 10)]
    assert net(IMAGES).shape == (4, 10)


def test_models_learn_a_batch():
    """Both nets can fit a fixed batch: the loss falls well below chance (ln 10 = 2.3)."""
    torch.manual_seed(0)
    labels = torch.arange(8) % 10
    images = torch.randn(8, 1, 28, 28)
    for net in (MLP(), CNN(dropout=0.0)):
        optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
        for _ in range(30):
            loss = nn.functional.cross_entropy(net(images), labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        assert loss.item() < 0.1, type(net).__name__


def test_compile_and_channels_last_keep_outputs_and_checkpoint_keys():
    from project.classifier import ImageClassifier

    torch.manual_seed(0)
    plain = ImageClassifier(net=CNN())
    fast = ImageClassifier(net=CNN(), compile=True, channels_last=True)
    fast.load_state_dict(plain.state_dict())
    fast.configure_model()
    plain.eval(), fast.eval()
    assert fast.net.features[0].weight.is_contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        torch.testing.assert_close(fast(IMAGES), plain(IMAGES), rtol=1e-4, atol=1e-4)
    assert fast.state_dict().keys() == plain.state_dict().keys()  # no "_orig_mod." prefix


def test_cnn_refuses_images_too_small_for_its_poolings():
    with pytest.raises(ValueError, match=r"images of shape \(3, 6, 20\) are too small for 3 poolings by 2"):
        CNN(input_shape=(3, 6, 20))
    assert CNN(input_shape=(3, 8, 20))(torch.zeros(2, 3, 8, 20)).shape == (2, 10)  # non-square, 8 px is enough
