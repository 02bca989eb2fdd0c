"""Reference autoencoders of the release (SPEC.md section 5); inputs and outputs in [0, 1].

Every model maps a batch of shape (N, *input_shape) to a reconstruction of the
same shape in [0, 1], so :class:`uae_augment.Reconstruction` can wrap it, and
implements the training protocol of :mod:`uae_augment.models.base` with the
release's optimiser, loss, epochs and batch size. Weights start from Keras'
default initialisation (glorot-uniform, zero biases), as in the release.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .base import FitSettings, LossParts, ReferenceModel, check_input, keras_init_

ADADELTA_KERAS = {"lr": 1.0, "rho": 0.95, "eps": 1e-7}
"""Keras' (pre-2.3) Adadelta defaults used by the release's conv AE (PyTorch's rho/eps differ)."""


def _image_size(image_size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(image_size, int) and not isinstance(image_size, bool):
        return image_size, image_size
    size = tuple(image_size)
    if len(size) != 2 or not all(isinstance(s, int) for s in size):
        raise TypeError(f"image_size must be an int or (height, width), got {image_size!r}")
    return size  # type: ignore[return-value]


class ConvAutoencoder(ReferenceModel):
    """The release's convolutional autoencoder (5x5 convolutions, same padding).

    Encoder: Conv16-ReLU, max-pool 2, Conv8-ReLU, max-pool 2, Conv8-ReLU;
    decoder: nearest upsample 2, Conv16-ReLU, upsample 2, Conv(C)-sigmoid.
    Training (release): Adadelta with Keras' defaults (lr 1.0, rho 0.95,
    eps 1e-7), binary cross-entropy, 20 epochs, batch 100.

    Args:
        in_channels: C, the number of image channels (1 for MNIST, 3 for SVHN/CIFAR).
        image_size: H = W, or (H, W); both divisible by 4.

    Attributes:
        first_layer: the first convolution and its ReLU, (B, C, H, W) -> (B, 16, H, W);
            MINE's feature-map mode uses it (K = 16 maps of H x W).

    Raises:
        ValueError: if ``in_channels`` < 1 or a side is not a positive multiple of 4.

    Example:
        >>> import torch
        >>> model = ConvAutoencoder(in_channels=1, image_size=28)
        >>> model(torch.rand(2, 1, 28, 28)).shape
        torch.Size([2, 1, 28, 28])
        >>> model.first_layer(torch.rand(2, 1, 28, 28)).shape
        torch.Size([2, 16, 28, 28])
    """

    fit_settings = FitSettings(epochs=20, batch_size=100)

    def __init__(self, in_channels: int = 1, image_size: int | Sequence[int] = 28):
        super().__init__()
        height, width = _image_size(image_size)
        if isinstance(in_channels, bool) or not isinstance(in_channels, int) or in_channels < 1:
            raise ValueError(f"in_channels must be a positive int, got {in_channels!r}")
        if min(height, width) < 4 or height % 4 or width % 4:
            raise ValueError(
                f"ConvAutoencoder needs image sides that are positive multiples of 4 (two 2x"
                f" poolings), got {height}x{width}"
            )
        self.input_shape = (in_channels, height, width)

        def conv(cin: int, cout: int) -> nn.Conv2d:
            return nn.Conv2d(cin, cout, kernel_size=5, padding=2)

        self.first_layer = nn.Sequential(conv(in_channels, 16), nn.ReLU())
        self.encoder = nn.Sequential(
            self.first_layer,
            nn.MaxPool2d(2),
            conv(16, 8), nn.ReLU(),
            nn.MaxPool2d(2),
            conv(8, 8), nn.ReLU(),
        )
        self.decoder = nn.Sequential(
            nn.Upsample(scale_factor=2, mode="nearest"),
            conv(8, 16), nn.ReLU(),
            nn.Upsample(scale_factor=2, mode="nearest"),
            conv(16, in_channels), nn.Sigmoid(),
        )
        keras_init_(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstructs x (N, C, H, W) in [0, 1]; returns (N, C, H, W) in [0, 1]."""
        check_input(x, self.input_shape, type(self).__name__)
        return self.decoder(self.encoder(x))

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        return [torch.optim.Adadelta(self.parameters(), **ADADELTA_KERAS)]

    def training_loss(self, x: torch.Tensor, y: torch.Tensor | None) -> tuple[torch.Tensor, LossParts]:
        return F.binary_cross_entropy(self(x), x), {}
