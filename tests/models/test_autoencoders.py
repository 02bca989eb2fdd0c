"""Reference autoencoders: architecture, shapes, ranges, first layers, training."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from uae_augment import fit
from uae_augment.mine import FeatureMapSampler, find_feature_layer
from uae_augment.models import (
    AdversarialAutoencoder,
    ConvAutoencoder,
    DenseAutoencoder,
    SparseAutoencoder,
)


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
        (1, 16, (5, 5), (2, 2)),
        (16, 8, (5, 5), (2, 2)),
        (8, 8, (5, 5), (2, 2)),
        (8, 16, (5, 5), (2, 2)),
        (16, 1, (5, 5), (2, 2)),
    ]
    assert sum(isinstance(m, nn.MaxPool2d) for m in model.modules()) == 2
    assert sum(isinstance(m, nn.Upsample) for m in model.modules()) == 2
    assert all(torch.count_nonzero(c.bias) == 0 for c in convs)  # Keras init: zero biases
    (optimizer,) = model.configure_optimizers()
    assert isinstance(optimizer, torch.optim.Adadelta)
    assert optimizer.defaults["lr"] == 1.0 and optimizer.defaults["rho"] == 0.95


def test_conv_autoencoder_stores_channels_last_and_returns_contiguous(mnist):
    x, _ = mnist
    colour = x[:5].repeat(1, 3, 1, 1)
    for images in (x[:5], colour):
        model = ConvAutoencoder(in_channels=images.shape[1])
        convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
        assert all(c.weight.is_contiguous(memory_format=torch.channels_last) for c in convs)
        assert not all(c.weight.is_contiguous() for c in convs)  # the layout is really NHWC
        nchw = copy.deepcopy(model).to(memory_format=torch.contiguous_format)
        out = model(images)
        assert out.is_contiguous()  # callers may .view() it
        torch.testing.assert_close(out, nchw(images))  # same weights, same function
        state = ConvAutoencoder(in_channels=images.shape[1])
        state.load_state_dict(nchw.state_dict())  # an NCHW checkpoint loads into the NHWC layout
        assert state.first_layer[0].weight.is_contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(state(images), out, rtol=0, atol=0)
    maps = FeatureMapSampler(model.first_layer)(colour)
    assert maps.is_contiguous() and not model.first_layer(colour).is_contiguous()


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


DENSE = [DenseAutoencoder, SparseAutoencoder, AdversarialAutoencoder]


@pytest.mark.parametrize("cls", DENSE)
@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32), (617,)])
def test_dense_models_keep_the_input_shape_and_range(cls, shape):
    model = cls(shape)
    x = torch.rand(3, *shape)
    out = model(x)
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1
    assert model.first_layer is None and find_feature_layer(model) is None
    with pytest.raises(ValueError, match="expects inputs of shape"):
        model(torch.rand(3, 5))


def test_dense_architectures():
    dense = DenseAutoencoder((1, 28, 28))
    linears = [m for m in dense.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(784, 128), (128, 784)]
    (rmsprop,) = dense.configure_optimizers()
    assert isinstance(rmsprop, torch.optim.RMSprop) and rmsprop.defaults["lr"] == 2.5e-3
    aae = AdversarialAutoencoder((1, 28, 28))
    sizes = {
        part: [(m.in_features, m.out_features) for m in getattr(aae, part) if isinstance(m, nn.Linear)]
        for part in ("encoder", "decoder", "discriminator")
    }
    assert sizes == {
        "encoder": [(784, 1000), (1000, 1000), (1000, 2)],
        "decoder": [(2, 1000), (1000, 1000), (1000, 784)],
        "discriminator": [(2, 1000), (1000, 1000), (1000, 1)],
    }
    assert [type(o) for o in aae.configure_optimizers()] == [torch.optim.Adam] * 3
    assert [o.defaults["lr"] for o in aae.configure_optimizers()] == [1e-4] * 3
    assert (SparseAutoencoder.fit_settings.epochs, DenseAutoencoder.fit_settings.epochs) == (50, 20)


def test_sparse_loss_matches_an_independent_computation(mnist):
    x, _ = mnist
    model = SparseAutoencoder((1, 28, 28))
    loss, parts = model.training_loss(x[:50], None)
    flat = x[:50].reshape(50, -1)
    code = torch.sigmoid(flat @ model.encoder[1].weight.T + model.encoder[1].bias)
    recon = torch.sigmoid(code @ model.decoder[0].weight.T + model.decoder[0].bias)
    rho, rho_hat = 0.1, code.mean(0)
    kl = (rho * (rho / rho_hat).log() + (1 - rho) * ((1 - rho) / (1 - rho_hat)).log()).sum()
    expected = ((recon - flat) ** 2).mean() + 3 * kl + 1e-7 * code.abs().sum() / 50
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(parts["kl"], kl)


@pytest.mark.parametrize(
    ("cls", "batch", "steps", "ratio"),
    [
        (DenseAutoencoder, 50, 20, 0.5),
        (SparseAutoencoder, 50, 20, 0.9),
        (AdversarialAutoencoder, 25, 12, 0.96),
    ],
)
def test_dense_models_learn_real_digits(cls, batch, steps, ratio, mnist):
    x, _ = mnist
    torch.manual_seed(0)
    model = cls((1, 28, 28))
    with torch.no_grad():
        before = nn.functional.mse_loss(model(x[:200]), x[:200])
    history = fit(model, x[:200], batch_size=batch, max_steps=steps, progress=False)
    with torch.no_grad():
        after = nn.functional.mse_loss(model(x[:200]), x[:200])
    assert history.steps == steps and after < ratio * before
    if cls is AdversarialAutoencoder:
        assert {"loss", "discriminator", "generator"} <= set(history.metrics[-1])


def test_adversarial_phases_update_the_right_parts(mnist):
    x, _ = mnist
    model = AdversarialAutoencoder((1, 28, 28), hidden=64)
    optimizers = model.configure_optimizers()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    values = model.training_step(x[:32], None, optimizers)
    after = model.state_dict()
    changed = {k.split(".")[0] for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"encoder", "decoder", "discriminator"}
    assert values["discriminator"] > 0 and values["generator"] > 0


def test_tabular_autoencoder_on_real_digit_rows(digits):
    x, _ = digits
    rows = x[:300].reshape(300, 64)
    torch.manual_seed(0)
    model = DenseAutoencoder((64,))
    history = fit(model, rows, epochs=8, batch_size=50, progress=False)
    assert history.losses[-1] < 0.7 * history.losses[0]
    assert model(rows[:5]).shape == (5, 64)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"input_shape": ()}, TypeError),
        ({"input_shape": (1, 0, 28)}, ValueError),
        ({"input_shape": "28x28"}, TypeError),
        ({"input_shape": (1, 28, 28), "sparsity": 1.5}, ValueError),
        ({"input_shape": (1, 28, 28), "sparsity_weight": -1.0}, ValueError),
    ],
)
def test_dense_bad_arguments(kwargs, error):
    with pytest.raises(error):
        SparseAutoencoder(**kwargs)
