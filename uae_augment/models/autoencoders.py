"""Reference autoencoders of the release (docs/method.md section 5); inputs and outputs in [0, 1].

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

from .._validation import check_positive
from .base import (
    ADAM_KERAS,
    FitSettings,
    LossParts,
    ReferenceModel,
    channels_last_,
    check_input,
    flat_size,
    keras_init_,
    normalise_shape,
)

ADADELTA_KERAS = {"lr": 1.0, "rho": 0.95, "eps": 1e-7}
"""Keras' (pre-2.3) Adadelta defaults used by the release's conv AE (PyTorch's rho/eps differ)."""

RMSPROP_KERAS = {"lr": 2.5e-3, "alpha": 0.9, "eps": 1e-7}
"""The release's RMSprop for the dense AE: lr 2.5e-3 with Keras' rho 0.9 and eps 1e-7."""


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
    eps 1e-7), binary cross-entropy, 20 epochs, batch 100. The convolution
    weights are stored channels-last (:func:`~uae_augment.models.base.channels_last_`:
    same values, 1.5x faster forward and backward passes on a CPU).

    Args:
        in_channels: C, the number of image channels (1 for MNIST, 3 for SVHN/CIFAR).
        image_size: H = W, or (H, W); both divisible by 4.

    Attributes:
        first_layer: the first convolution and its ReLU, (B, C, H, W) -> (B, 16, H, W)
            (channels-last strides); MINE's feature-map mode uses it (K = 16 maps of H x W).

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
            conv(16, 8),
            nn.ReLU(),
            nn.MaxPool2d(2),
            conv(8, 8),
            nn.ReLU(),
        )
        self.decoder = nn.Sequential(
            nn.Upsample(scale_factor=2, mode="nearest"),
            conv(8, 16),
            nn.ReLU(),
            nn.Upsample(scale_factor=2, mode="nearest"),
            conv(16, in_channels),
            nn.Sigmoid(),
        )
        channels_last_(keras_init_(self))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstructs x (N, C, H, W) in [0, 1]; returns (N, C, H, W) in [0, 1], contiguous."""
        check_input(x, self.input_shape, type(self).__name__)
        return self.decoder(self.encoder(x)).contiguous()

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        return [torch.optim.Adadelta(self.parameters(), **ADADELTA_KERAS)]

    def training_loss(self, x: torch.Tensor, y: torch.Tensor | None) -> tuple[torch.Tensor, LossParts]:
        return F.binary_cross_entropy(self(x), x), {}


class DenseAutoencoder(ReferenceModel):
    """The release's dense autoencoder: d -> hidden sigmoid -> d sigmoid.

    Inputs of any shape are flattened inside and the reconstruction is given
    back in the input's shape. Training (release): RMSprop lr 2.5e-3 with Keras'
    rho 0.9 and eps 1e-7, MSE, 20 epochs, batch 100. The model has no
    convolution (``first_layer`` is None), so MINE uses random projections.

    Args:
        input_shape: shape of one input, e.g. (1, 28, 28), (3, 32, 32) or (617,).
        hidden: width of the code layer (release: 128).

    Raises:
        TypeError, ValueError: on a malformed ``input_shape`` or ``hidden``.

    Example:
        >>> import torch
        >>> model = DenseAutoencoder((617,))
        >>> model(torch.rand(4, 617)).shape, model.encode(torch.rand(4, 617)).shape
        (torch.Size([4, 617]), torch.Size([4, 128]))
    """

    fit_settings = FitSettings(epochs=20, batch_size=100)

    def __init__(self, input_shape: Sequence[int] | int = (1, 28, 28), hidden: int = 128):
        super().__init__()
        self.input_shape = normalise_shape(input_shape)
        (hidden,) = normalise_shape(hidden, name="hidden")
        features = flat_size(self.input_shape)
        self.first_layer = None
        self.encoder = nn.Sequential(nn.Flatten(), nn.Linear(features, hidden), nn.Sigmoid())
        self.decoder = nn.Sequential(nn.Linear(hidden, features), nn.Sigmoid(), nn.Unflatten(1, self.input_shape))
        keras_init_(self)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The code of x (N, *input_shape): (N, hidden) in (0, 1)."""
        check_input(x, self.input_shape, type(self).__name__)
        return self.encoder(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstructs x (N, *input_shape) in [0, 1]; returns (N, *input_shape) in [0, 1]."""
        return self.decoder(self.encode(x))

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        return [torch.optim.RMSprop(self.parameters(), **RMSPROP_KERAS)]

    def training_loss(self, x: torch.Tensor, y: torch.Tensor | None) -> tuple[torch.Tensor, LossParts]:
        return F.mse_loss(self(x), x), {}


class SparseAutoencoder(DenseAutoencoder):
    """The release's sparse autoencoder: d -> 128 sigmoid -> d sigmoid with sparsity penalties.

    Loss (release): MSE + ``sparsity_weight`` * sum_j KL(rho || rho_hat_j), where
    rho_hat_j is the batch mean of code unit j, plus an L1 activity penalty
    ``activity_l1`` * sum_j |h_j| averaged over the batch (Keras' activity
    regulariser; tf.keras averages it over the batch the same way). Adam lr 1e-3
    (Keras' eps 1e-7), 50 epochs, batch 100. No convolution: MINE uses random
    projections.

    Args:
        input_shape: shape of one input, e.g. (1, 28, 28) or (617,).
        hidden: width of the code layer (release: 128).
        sparsity: target mean activation rho (release: 0.1), in (0, 1).
        sparsity_weight: weight of the KL term (release: 3).
        activity_l1: weight of the L1 activity penalty (release: 1e-7).

    Raises:
        ValueError: if ``sparsity`` is not in (0, 1) or a weight is negative.

    Example:
        >>> import torch
        >>> model = SparseAutoencoder((1, 28, 28))
        >>> loss, parts = model.training_loss(torch.rand(8, 1, 28, 28), None)
        >>> sorted(parts)
        ['activity_l1', 'kl', 'mse']
    """

    fit_settings = FitSettings(epochs=50, batch_size=100)

    def __init__(
        self,
        input_shape: Sequence[int] | int = (1, 28, 28),
        hidden: int = 128,
        *,
        sparsity: float = 0.1,
        sparsity_weight: float = 3.0,
        activity_l1: float = 1e-7,
    ):
        super().__init__(input_shape, hidden)
        if not 0.0 < sparsity < 1.0:
            raise ValueError(f"sparsity must lie in (0, 1), got {sparsity}")
        check_positive(sparsity_weight, "sparsity_weight", allow_zero=True)
        check_positive(activity_l1, "activity_l1", allow_zero=True)
        self.sparsity = float(sparsity)
        self.sparsity_weight = float(sparsity_weight)
        self.activity_l1 = float(activity_l1)

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        return [torch.optim.Adam(self.parameters(), **ADAM_KERAS)]

    def training_loss(self, x: torch.Tensor, y: torch.Tensor | None) -> tuple[torch.Tensor, LossParts]:
        code = self.encode(x)
        mse = F.mse_loss(self.decoder(code), x)
        kl = kl_sparsity(self.sparsity, code.mean(dim=0))
        l1 = code.abs().sum(dim=1).mean()
        loss = mse + self.sparsity_weight * kl + self.activity_l1 * l1
        return loss, {"mse": mse, "kl": kl, "activity_l1": l1}


def kl_sparsity(rho: float, rho_hat: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """sum_j KL(Bernoulli(rho) || Bernoulli(rho_hat_j)) for mean activations rho_hat (H,)."""
    rho_hat = rho_hat.clamp(eps, 1.0 - eps)
    return (rho * torch.log(rho / rho_hat) + (1.0 - rho) * torch.log((1.0 - rho) / (1.0 - rho_hat))).sum()


def _mlp(sizes: Sequence[int]) -> list[nn.Module]:
    """Linear layers of ``sizes`` with a ReLU after every layer but the last."""
    layers: list[nn.Module] = []
    for position, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(fan_in, fan_out))
        if position < len(sizes) - 2:
            layers.append(nn.ReLU())
    return layers


class AdversarialAutoencoder(ReferenceModel):
    """The release's adversarial autoencoder (Makhzani et al. 2016) with a N(0, I) prior.

    Encoder d -> 1000 -> 1000 -> latent (ReLU hidden layers, linear code),
    decoder latent -> 1000 -> 1000 -> d sigmoid, discriminator latent -> 1000 ->
    1000 -> 1 (a logit). Each training step runs the three phases of an AAE on
    the batch, each with its own Adam (lr 1e-4, Keras' eps 1e-7):

    1. reconstruction: encoder + decoder minimise the MSE of the reconstruction;
    2. discriminator: tells prior samples z ~ N(0, I) (label 1) from codes (label 0);
    3. generator: the encoder makes its codes pass for prior samples.

    The ``loss`` reported is the reconstruction MSE (with ``discriminator`` and
    ``generator`` beside it). 50 epochs, batch 100. The release does not fix the
    hidden activations or the reconstruction loss; ReLU and MSE are this
    library's choice. No convolution: MINE uses random projections.

    Args:
        input_shape: shape of one input, e.g. (1, 28, 28) or (617,).
        latent_dim: code size (release: 2).
        hidden: width of every hidden layer (release: 1000).

    Example:
        >>> import torch
        >>> model = AdversarialAutoencoder((1, 28, 28))
        >>> model(torch.rand(2, 1, 28, 28)).shape, model.encode(torch.rand(2, 1, 28, 28)).shape
        (torch.Size([2, 1, 28, 28]), torch.Size([2, 2]))
    """

    fit_settings = FitSettings(epochs=50, batch_size=100)

    def __init__(
        self,
        input_shape: Sequence[int] | int = (1, 28, 28),
        latent_dim: int = 2,
        hidden: int = 1000,
    ):
        super().__init__()
        self.input_shape = normalise_shape(input_shape)
        (latent_dim,) = normalise_shape(latent_dim, name="latent_dim")
        (hidden,) = normalise_shape(hidden, name="hidden")
        features = flat_size(self.input_shape)
        self.latent_dim = latent_dim
        self.first_layer = None
        self.encoder = nn.Sequential(nn.Flatten(), *_mlp([features, hidden, hidden, latent_dim]))
        self.decoder = nn.Sequential(
            *_mlp([latent_dim, hidden, hidden, features]),
            nn.Sigmoid(),
            nn.Unflatten(1, self.input_shape),
        )
        self.discriminator = nn.Sequential(*_mlp([latent_dim, hidden, hidden, 1]))
        keras_init_(self)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The code of x (N, *input_shape): (N, latent_dim)."""
        check_input(x, self.input_shape, type(self).__name__)
        return self.encoder(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstructs x (N, *input_shape) in [0, 1]; returns (N, *input_shape) in [0, 1]."""
        return self.decoder(self.encode(x))

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        """Adam for (encoder, decoder), for the discriminator and for the encoder as generator."""
        autoencoder = list(self.encoder.parameters()) + list(self.decoder.parameters())
        return [
            torch.optim.Adam(autoencoder, lr=1e-4, eps=ADAM_KERAS["eps"]),
            torch.optim.Adam(self.discriminator.parameters(), lr=1e-4, eps=ADAM_KERAS["eps"]),
            torch.optim.Adam(self.encoder.parameters(), lr=1e-4, eps=ADAM_KERAS["eps"]),
        ]

    def training_loss(self, x: torch.Tensor, y: torch.Tensor | None) -> tuple[torch.Tensor, LossParts]:
        """The reconstruction phase's loss (MSE)."""
        return F.mse_loss(self(x), x), {}

    def training_step(
        self, x: torch.Tensor, y: torch.Tensor | None, optimizers: Sequence[torch.optim.Optimizer]
    ) -> dict[str, float]:
        """Reconstruction, discriminator and generator phases on one batch."""
        autoencoder_opt, discriminator_opt, generator_opt = optimizers
        reconstruction = super().training_step(x, y, [autoencoder_opt])["loss"]

        with torch.no_grad():
            code = self.encode(x)
        prior = torch.randn(code.shape, device=code.device, dtype=code.dtype)
        logits = self.discriminator(torch.cat([prior, code]))
        labels = torch.cat([torch.ones(len(prior), 1), torch.zeros(len(code), 1)]).to(logits)
        discriminator_loss = F.binary_cross_entropy_with_logits(logits, labels)
        discriminator_opt.zero_grad(set_to_none=True)
        discriminator_loss.backward()
        discriminator_opt.step()

        self.discriminator.requires_grad_(False)
        try:
            logits = self.discriminator(self.encode(x))
            generator_loss = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits))
            generator_opt.zero_grad(set_to_none=True)
            generator_loss.backward()
            generator_opt.step()
        finally:
            self.discriminator.requires_grad_(True)
        return {
            "loss": reconstruction,
            "discriminator": float(discriminator_loss.detach()),
            "generator": float(generator_loss.detach()),
        }
