"""Reference classifiers: C&W nets, LeNet, MLP — architecture, first layers, training."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.nn.functional import cross_entropy
from torch.utils.data import TensorDataset

from uae_augment import fit
from uae_augment.mine import find_feature_layer
from uae_augment.models.classifiers import (
    CW_CIFAR_WIDTHS,
    CW_MNIST_WIDTHS,
    CWClassifier,
    LeNet,
    MLPClassifier,
    cw_cifar,
    cw_mnist,
)


def _colour(x: torch.Tensor) -> torch.Tensor:
    """Real digits as (N, 3, 32, 32) images (zero-padded, grey in every channel)."""
    return nn.functional.pad(x, (2, 2, 2, 2)).repeat(1, 3, 1, 1)


@pytest.mark.parametrize(
    ("build", "shape", "maps"),
    [
        (cw_mnist, (1, 28, 28), (32, 26, 26)),
        (cw_cifar, (3, 32, 32), (64, 30, 30)),
        (LeNet, (1, 28, 28), (20, 24, 24)),
    ],
)
def test_first_layers_match_the_mine_feature_maps(build, shape, maps):
    model = build()
    x = torch.rand(2, *shape)
    assert model(x).shape == (2, 10)
    assert model.first_layer(x).shape == (2, *maps)
    assert find_feature_layer(model) is model.first_layer
    conv = model.first_layer[0] if isinstance(model.first_layer, nn.Sequential) else model.first_layer
    expected = nn.functional.conv2d(x, conv.weight, conv.bias)
    if isinstance(model.first_layer, nn.Sequential):
        expected = expected.relu()
    torch.testing.assert_close(model.first_layer(x), expected)


def test_cw_architecture_and_optimiser():
    model = cw_mnist()
    convs = [(m.in_channels, m.out_channels, m.kernel_size) for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert convs == [(1, 32, (3, 3)), (32, 32, (3, 3)), (32, 64, (3, 3)), (64, 64, (3, 3))]
    dense = [(m.in_features, m.out_features) for m in model.modules() if isinstance(m, nn.Linear)]
    assert dense == [(64 * 4 * 4, 200), (200, 200), (200, 10)]
    cifar_dense = [(m.in_features, m.out_features) for m in cw_cifar().modules() if isinstance(m, nn.Linear)]
    assert cifar_dense == [(128 * 5 * 5, 256), (256, 256), (256, 10)]
    assert CWClassifier((3, 32, 32)).widths == CW_CIFAR_WIDTHS
    assert CWClassifier((1, 28, 28)).widths == CW_MNIST_WIDTHS
    (sgd,) = model.configure_optimizers()
    assert isinstance(sgd, torch.optim.SGD)
    assert (sgd.defaults["lr"], sgd.defaults["momentum"], sgd.defaults["nesterov"]) == (
        0.01,
        0.9,
        True,
    )
    assert (model.fit_settings.epochs, model.fit_settings.batch_size) == (50, 128)


def test_lenet_layer_table():
    model = LeNet()
    convs = [(m.in_channels, m.out_channels, m.kernel_size) for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert convs == [(1, 20, (5, 5)), (20, 50, (5, 5)), (50, 500, (4, 4)), (500, 10, (1, 1))]
    sizes, h = [], torch.rand(1, 1, 28, 28)
    for layer in model.layers:
        h = layer(h)
        if h.dim() == 4:
            sizes.append(h.shape[-1])
    assert sizes == [24, 12, 8, 4, 1, 1, 1]  # the table's "data size" row (relu keeps 1)


@pytest.mark.parametrize(
    ("build", "n", "steps", "ratio"),
    [
        (cw_mnist, 16, 10, 0.97),
        (cw_cifar, 8, 8, 0.97),
        (LeNet, 16, 20, 0.985),
        (lambda: MLPClassifier((1, 28, 28)), 16, 10, 0.6),
    ],
)
def test_classifiers_learn_a_real_batch(build, n, steps, ratio, mnist):
    x, y = mnist
    torch.manual_seed(0)
    model = build()
    images = x[:n] if model.input_shape == (1, 28, 28) else _colour(x[:n])
    with torch.no_grad():
        before = cross_entropy(model.eval()(images), y[:n])
    history = fit(model, TensorDataset(images, y[:n]), batch_size=n, max_steps=steps, progress=False)
    with torch.no_grad():
        after = cross_entropy(model(images), y[:n])
    assert after < ratio * before
    assert 0.0 <= history.metrics[-1]["accuracy"] <= 1.0


def test_mlp_on_tabular_rows_and_labels_are_required(digits):
    x, y = digits
    rows = x[:200].reshape(200, 64)
    torch.manual_seed(0)
    model = MLPClassifier((64,), hidden=(32,), classes=10)
    assert model.first_layer is None and find_feature_layer(model) is None
    history = fit(model, TensorDataset(rows, y[:200]), epochs=5, batch_size=20, progress=False)
    assert history.metrics[-1]["accuracy"] > history.metrics[0]["accuracy"]
    linear = MLPClassifier((64,), hidden=(), classes=10)
    assert [type(m) for m in linear.layers] == [nn.Flatten, nn.Linear]
    sigmoid = MLPClassifier((64,), hidden=(16, 8), activation="sigmoid")
    assert [type(m) for m in sigmoid.layers] == [
        nn.Flatten,
        nn.Linear,
        nn.Sigmoid,
        nn.Linear,
        nn.Sigmoid,
        nn.Linear,
    ]
    with pytest.raises(ValueError, match="needs labels"):
        fit(model, rows, epochs=1, progress=False)


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda: CWClassifier((784,)), ValueError),
        (lambda: CWClassifier((1, 8, 8)), ValueError),
        (lambda: CWClassifier((1, 28, 28), widths=(32, 32)), ValueError),
        (lambda: CWClassifier((1, 28, 28), dropout=1.0), ValueError),
        (lambda: LeNet((1, 12, 12)), ValueError),
        (lambda: MLPClassifier((64,), classes=0), ValueError),
        (lambda: MLPClassifier((64,), hidden="wide"), TypeError),
        (lambda: MLPClassifier((64,), activation="tanh"), ValueError),
        (lambda: cw_mnist()(torch.rand(2, 3, 32, 32)), ValueError),
    ],
)
def test_bad_arguments(call, error):
    with pytest.raises(error):
        call()


@pytest.mark.parametrize(("build", "colour"), [(cw_mnist, False), (cw_cifar, True), (LeNet, False)])
def test_conv_classifiers_store_channels_last_weights(mnist, build, colour):
    x, _ = mnist
    images = _colour(x[:6]) if colour else x[:6]
    model = build().eval()
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert convs and all(c.weight.is_contiguous(memory_format=torch.channels_last) for c in convs)
    contiguous = copy.deepcopy(model).to(memory_format=torch.contiguous_format)
    torch.testing.assert_close(model(images), contiguous(images))  # same weights, same function
    delta = torch.zeros_like(images, requires_grad=True)
    (grad,) = torch.autograd.grad(model(images + delta).logsumexp(dim=1).sum(), delta)
    assert grad.shape == images.shape and torch.isfinite(grad).all()
