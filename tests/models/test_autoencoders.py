"""Reference autoencoders: architecture, shapes, ranges, first layers, training."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from uae_augment import fit
from uae_augment.mine import find_feature_layer
from uae_augment.models import ConvAutoencoder


@pytest.mark.parametrize(("channels", "size"), [(1, 28), (3, 32), (1, (8, 12))])
def test_conv_autoencoder_shapes_and_range(channels, size):
    model = ConvAutoencoder(in_channels=channels, image_size=size)
    h, w = (size, size) if isinstance(size, int) else size
    x = torch.rand(3, channels, h, w)
    out = model(x)
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1
    maps = model.first_layer(x)
    assert maps.shape == (3, 16, h, w) and maps.min() >= 0
    assert find_feature_layer(model) is model.first_layer


def test_conv_autoencoder_architecture():
    model = ConvAutoencoder()
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size, c.padding) for c in convs] == [
        (1, 16, (5, 5), (2, 2)), (16, 8, (5, 5), (2, 2)), (8, 8, (5, 5), (2, 2)),
        (8, 16, (5, 5), (2, 2)), (16, 1, (5, 5), (2, 2)),
    ]
    assert sum(isinstance(m, nn.MaxPool2d) for m in model.modules()) == 2
    assert sum(isinstance(m, nn.Upsample) for m in model.modules()) == 2
    assert all(torch.count_nonzero(c.bias) == 0 for c in convs)  # Keras init: zero biases
    (optimizer,) = model.configure_optimizers()
    assert isinstance(optimizer, torch.optim.Adadelta)
    assert optimizer.defaults["lr"] == 1.0 and optimizer.defaults["rho"] == 0.95


def test_conv_autoencoder_first_layer_is_its_first_conv(mnist):
    x, _ = mnist
    model = ConvAutoencoder()
    conv = model.first_layer[0]
    expected = torch.relu(nn.functional.conv2d(x[:4], conv.weight, conv.bias, padding=2))
    torch.testing.assert_close(model.first_layer(x[:4]), expected)


def test_conv_autoencoder_trains_on_real_cifar_shaped_input(mnist):
    x, _ = mnist
    colour = nn.functional.pad(x[:40], (2, 2, 2, 2)).repeat(1, 3, 1, 1)  # (40, 3, 32, 32)
    torch.manual_seed(0)
    model = ConvAutoencoder(in_channels=3, image_size=32)
    history = fit(model, colour, epochs=4, batch_size=20, progress=False)
    assert history.losses[-1] < history.losses[0]


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"image_size": 30}, ValueError),
        ({"in_channels": 0}, ValueError),
        ({"image_size": (28,)}, TypeError),
    ],
)
def test_conv_autoencoder_bad_arguments(kwargs, error):
    with pytest.raises(error):
        ConvAutoencoder(**kwargs)


def test_conv_autoencoder_rejects_wrong_input_shape():
    with pytest.raises(ValueError, match=r"\(N, 1, 28, 28\)"):
        ConvAutoencoder()(torch.rand(2, 3, 28, 28))
