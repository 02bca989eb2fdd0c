"""Reference classifiers: the C&W 4-conv nets, a LeNet-style MNIST net and a small MLP.

All return logits (N, classes) for inputs in [0, 1] and train with
cross-entropy through the protocol of :mod:`uae_augment.models.base`; dataset
items must be (x, y) with integer labels.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

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
    positive_int,
)

CW_MNIST_WIDTHS = (32, 32, 64, 64, 200, 200)
"""Carlini & Wagner's MNIST net: conv widths 32, 32, 64, 64 and dense widths 200, 200."""

CW_CIFAR_WIDTHS = (64, 64, 128, 128, 256, 256)
"""Carlini & Wagner's CIFAR-10 net: conv widths 64, 64, 128, 128 and dense widths 256, 256."""


class _Classifier(ReferenceModel):
    """Cross-entropy training on (x, y) batches; reports the batch accuracy beside the loss."""

    input_shape: tuple[int, ...]

    def training_loss(self, x: torch.Tensor, y: torch.Tensor | None) -> tuple[torch.Tensor, LossParts]:
        if y is None:
            raise ValueError(f"{type(self).__name__} needs labels: train it on a data set of (x, y) items")
        logits = self(x)
        accuracy = (logits.detach().argmax(dim=1) == y).float().mean()
        return F.cross_entropy(logits, y), {"accuracy": accuracy}


def _image_shape(input_shape: Sequence[int] | int, model: str) -> tuple[int, int, int]:
    shape = normalise_shape(input_shape)
    if len(shape) != 3:
        raise ValueError(f"{model} needs an image input_shape (C, H, W), got {shape}")
    return shape  # type: ignore[return-value]


class CWClassifier(_Classifier):
    """Carlini & Wagner's 4-conv classifier (the release's supervised victims).

    Conv3x3(w0) ReLU, Conv3x3(w1) ReLU, max-pool 2, Conv3x3(w2) ReLU,
    Conv3x3(w3) ReLU, max-pool 2 (valid convolutions), then Dense(w4) ReLU,
    Dropout(0.5), Dense(w5) ReLU, Dense(classes) logits. The dropout is the one
    of C&W's ``train_models.py``. Training (release): SGD lr 0.01, momentum 0.9,
    Nesterov, cross-entropy, 50 epochs, batch 128 (C&W's lr decay of 1e-6 per
    step, a 2% change over a full run, is left out). Convolution weights are
    stored channels-last (:func:`~uae_augment.models.base.channels_last_`).

    Args:
        input_shape: (C, H, W), e.g. (1, 28, 28) or (3, 32, 32).
        widths: the six widths; default :data:`CW_MNIST_WIDTHS` for one channel,
            :data:`CW_CIFAR_WIDTHS` otherwise.
        classes: number of classes.
        dropout: dropout after the first dense layer (C&W: 0.5).

    Attributes:
        first_layer: the first convolution and its ReLU, (B, C, H, W) ->
            (B, w0, H - 2, W - 2): MNIST 32 maps of 26 x 26, CIFAR-10 64 of 30 x 30.

    Raises:
        ValueError: on a non-image shape, six widths not given, or an image too
            small for the two poolings (H, W >= 10).

    Example:
        >>> import torch
        >>> model = cw_mnist()
        >>> model(torch.rand(2, 1, 28, 28)).shape, model.first_layer(torch.rand(2, 1, 28, 28)).shape
        (torch.Size([2, 10]), torch.Size([2, 32, 26, 26]))
    """

    fit_settings = FitSettings(epochs=50, batch_size=128)

    def __init__(
        self,
        input_shape: Sequence[int] | int = (1, 28, 28),
        widths: Sequence[int] | None = None,
        classes: int = 10,
        dropout: float = 0.5,
    ):
        super().__init__()
        channels, height, width = self.input_shape = _image_shape(input_shape, "CWClassifier")
        if widths is None:
            widths = CW_MNIST_WIDTHS if channels == 1 else CW_CIFAR_WIDTHS
        widths = normalise_shape(widths, name="widths")
        if len(widths) != 6:
            raise ValueError(f"widths must hold 6 sizes (4 conv, 2 dense), got {widths}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {dropout}")
        side_h, side_w = ((height - 4) // 2 - 4) // 2, ((width - 4) // 2 - 4) // 2
        if min(side_h, side_w) < 1:
            raise ValueError(f"CWClassifier needs images of at least 10 x 10, got {height} x {width}")
        self.widths, self.classes = widths, positive_int(classes, "classes")
        c0, c1, c2, c3, d0, d1 = widths
        self.first_layer = nn.Sequential(nn.Conv2d(channels, c0, 3), nn.ReLU())
        self.features = nn.Sequential(
            self.first_layer,
            nn.Conv2d(c0, c1, 3),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 3),
            nn.ReLU(),
            nn.Conv2d(c2, c3, 3),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(c3 * side_h * side_w, d0),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(d0, d1),
            nn.ReLU(),
            nn.Linear(d1, classes),
        )
        channels_last_(keras_init_(self))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (N, classes) of images x (N, C, H, W) in [0, 1]."""
        check_input(x, self.input_shape, type(self).__name__)
        return self.head(self.features(x))

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        return [torch.optim.SGD(self.parameters(), lr=0.01, momentum=0.9, nesterov=True)]


def cw_mnist(classes: int = 10) -> CWClassifier:
    """C&W's MNIST classifier for (1, 28, 28) inputs (first layer: 32 maps of 26 x 26)."""
    return CWClassifier((1, 28, 28), CW_MNIST_WIDTHS, classes)


def cw_cifar(classes: int = 10) -> CWClassifier:
    """C&W's CIFAR-10 classifier for (3, 32, 32) inputs (first layer: 64 maps of 30 x 30)."""
    return CWClassifier((3, 32, 32), CW_CIFAR_WIDTHS, classes)


class LeNet(_Classifier):
    """The LeNet-style MNIST net of ``references/harnessing-adversarial-examples.md``.

    Its layer table (MatConvNet's ``cnn_mnist``): Conv5x5(20), max-pool 2,
    Conv5x5(50), max-pool 2, Conv4x4(500), ReLU, Conv1x1(classes), softmax — no
    padding, stride 1. For 28 x 28 inputs the maps are 24, 12, 8, 4 and 1 pixels
    wide; for other sizes the third convolution spans the whole remaining map
    (the table's 4 x 4 at 28 x 28), so it stays a dense layer. Returns logits.
    Training: the reference trains 30 epochs and names no optimiser; this
    library uses MatConvNet's ``cnn_mnist`` defaults, SGD lr 1e-3, momentum 0.9,
    weight decay 5e-4, batch 100. The reference subtracts the mean image; here
    inputs stay in [0, 1] (put a normalisation in front if wanted). Convolution
    weights are stored channels-last (:func:`~uae_augment.models.base.channels_last_`).

    Args:
        input_shape: (C, H, W), default (1, 28, 28); H, W >= 16.
        classes: number of classes.

    Attributes:
        first_layer: the first convolution (no activation follows it in this
            net): (B, C, H, W) -> (B, 20, H - 4, W - 4), 20 maps of 24 x 24 for MNIST.

    Example:
        >>> import torch
        >>> model = LeNet()
        >>> model(torch.rand(2, 1, 28, 28)).shape, model.first_layer(torch.rand(2, 1, 28, 28)).shape
        (torch.Size([2, 10]), torch.Size([2, 20, 24, 24]))
    """

    fit_settings = FitSettings(epochs=30, batch_size=100)

    def __init__(self, input_shape: Sequence[int] | int = (1, 28, 28), classes: int = 10):
        super().__init__()
        channels, height, width = self.input_shape = _image_shape(input_shape, "LeNet")
        side_h, side_w = ((height - 4) // 2 - 4) // 2, ((width - 4) // 2 - 4) // 2
        if min(side_h, side_w) < 1:
            raise ValueError(f"LeNet needs images of at least 16 x 16, got {height} x {width}")
        self.classes = positive_int(classes, "classes")
        self.first_layer = nn.Conv2d(channels, 20, 5)
        self.layers = nn.Sequential(
            self.first_layer,
            nn.MaxPool2d(2),
            nn.Conv2d(20, 50, 5),
            nn.MaxPool2d(2),
            nn.Conv2d(50, 500, (side_h, side_w)),
            nn.ReLU(),
            nn.Conv2d(500, classes, 1),
            nn.Flatten(),
        )
        channels_last_(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (N, classes) of images x (N, C, H, W) in [0, 1]."""
        check_input(x, self.input_shape, type(self).__name__)
        return self.layers(x)

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        return [torch.optim.SGD(self.parameters(), lr=1e-3, momentum=0.9, weight_decay=5e-4)]


class MLPClassifier(_Classifier):
    """A small fully connected classifier for images or tabular rows (not from the release).

    Flatten, then Linear + activation for each hidden width, then Linear(classes)
    logits. Training (this library's choice): Adam lr 1e-3, cross-entropy,
    20 epochs, batch 128. No convolution: MINE uses random projections.

    Args:
        input_shape: shape of one input, e.g. (1, 28, 28) or (561,).
        hidden: hidden widths (may be empty for a linear classifier).
        classes: number of classes.
        activation: ``"relu"`` or ``"sigmoid"`` (Szegedy et al.'s cross-training nets).

    Raises:
        ValueError: on an unknown activation.

    Example:
        >>> import torch
        >>> MLPClassifier((561,), hidden=(64,), classes=6)(torch.rand(3, 561)).shape
        torch.Size([3, 6])
    """

    fit_settings = FitSettings(epochs=20, batch_size=128)

    def __init__(
        self,
        input_shape: Sequence[int] | int,
        hidden: Sequence[int] = (256,),
        classes: int = 10,
        activation: str = "relu",
    ):
        super().__init__()
        activations = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid}
        if activation not in activations:
            raise ValueError(f"activation must be one of {sorted(activations)}, got {activation!r}")
        self.input_shape = normalise_shape(input_shape)
        empty = isinstance(hidden, Sequence) and len(hidden) == 0
        hidden = () if empty else normalise_shape(hidden, name="hidden")
        self.classes = positive_int(classes, "classes")
        self.first_layer = None
        layers: list[nn.Module] = [nn.Flatten()]
        sizes = (flat_size(self.input_shape), *hidden)
        for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
            layers += [nn.Linear(fan_in, fan_out), activations[activation]()]
        self.layers = nn.Sequential(*layers, nn.Linear(sizes[-1], classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (N, classes) of inputs x (N, *input_shape) in [0, 1]."""
        check_input(x, self.input_shape, type(self).__name__)
        return self.layers(x)

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        return [torch.optim.Adam(self.parameters(), **ADAM_KERAS)]
