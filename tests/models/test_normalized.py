"""Normalized: a data pipeline's Normalize moved into the model, so attacks see [0, 1]."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torchvision.transforms import Normalize as TorchvisionNormalize

import uae_augment
from uae_augment import FGSM, MINEUAE, Reconstruction
from uae_augment.mine import find_feature_layer
from uae_augment.models import Normalize, Normalized

MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)  # CIFAR-10's usual values


def _small_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 10))


def test_normalized_equals_torchvision_normalize_then_model() -> None:
    net = _small_cnn()
    x = torch.rand(5, 3, 8, 8)
    expected = net(torch.stack([TorchvisionNormalize(MEAN, STD)(row) for row in x]))
    assert torch.allclose(Normalized(net, MEAN, STD)(x), expected, atol=1e-6)
    assert uae_augment.Normalized is Normalized


def test_mean_and_std_are_buffers_that_follow_the_module() -> None:
    wrapped = Normalized(_small_cnn(), MEAN, STD)
    assert {"normalize.mean", "normalize.std"} <= set(wrapped.state_dict())
    assert all(not name.startswith("normalize.") for name, _ in wrapped.named_parameters())
    wrapped = wrapped.double()
    assert wrapped.normalize.mean.dtype == torch.float64
    assert wrapped(torch.rand(2, 3, 8, 8, dtype=torch.float64)).dtype == torch.float64


def test_a_single_value_applies_to_every_channel() -> None:
    x = torch.rand(2, 3, 4, 4)
    assert torch.allclose(Normalize(0.5, 0.25)(x), (x - 0.5) / 0.25)


@pytest.mark.parametrize(
    ("mean", "std", "pattern"),
    [
        ((0.5, 0.5), (0.2,), "same non-zero length"),
        ((), (), "same non-zero length"),
        ((0.5,), (0.0,), "std finite and > 0"),
        ((float("nan"),), (1.0,), "must be finite"),
    ],
)
def test_bad_mean_or_std_is_refused(mean, std, pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        Normalized(nn.Identity(), mean, std)


def test_wrong_channel_count_is_refused() -> None:
    with pytest.raises(ValueError, match="x has 1 channels .* mean/std have 3 values"):
        Normalized(nn.Identity(), MEAN, STD)(torch.rand(2, 1, 4, 4))


def test_feature_map_mine_sees_the_normalised_first_layer() -> None:
    net = _small_cnn()
    wrapped = Normalized(net, MEAN, STD)
    layer = find_feature_layer(wrapped)
    x = torch.rand(3, 3, 8, 8)
    assert torch.allclose(layer(x), net[1](net[0](Normalize(MEAN, STD)(x))), atol=1e-6)
    assert find_feature_layer(Normalized(nn.Linear(4, 4), 0.5, 0.5)) is None


def test_attacks_on_the_wrapped_model_stay_in_the_unit_box() -> None:
    torch.manual_seed(0)
    x = torch.rand(4, 3, 8, 8)
    classifier = Normalized(_small_cnn(), MEAN, STD)
    y = classifier(x).argmax(1)
    result = FGSM(classifier, epsilon=0.1)(x, y)
    assert float(result.adversarial.min()) >= 0.0 and float(result.adversarial.max()) <= 1.0
    autoencoder = Normalized(
        nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 3, 3, padding=1), nn.Sigmoid()),
        MEAN,
        STD,
    )
    uae = MINEUAE(Reconstruction(autoencoder), preset="fast", steps=2)(x)
    assert uae.adversarial.shape == x.shape
    assert float(uae.adversarial.min()) >= 0.0 and float(uae.adversarial.max()) <= 1.0
