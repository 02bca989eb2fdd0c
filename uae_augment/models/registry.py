"""Build reference models by name, e.g. to load a checkpoint from the command line.

Example:
    >>> import io, torch
    >>> model = build_model("dense-ae", (1, 28, 28))
    >>> buffer = io.BytesIO(); torch.save(model.state_dict(), buffer); _ = buffer.seek(0)
    >>> again = build_model("dense-ae", (1, 28, 28))
    >>> again.load_state_dict(torch.load(buffer, weights_only=True))
    <All keys matched successfully>
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from types import MappingProxyType
from typing import Any

from torch import nn

from .autoencoders import (
    AdversarialAutoencoder,
    ConvAutoencoder,
    DenseAutoencoder,
    SparseAutoencoder,
)
from .base import normalise_shape
from .classifiers import CWClassifier, LeNet, MLPClassifier
from .concrete import ConcreteAutoencoder


def _conv_autoencoder(input_shape: Sequence[int] | int, **kwargs: Any) -> ConvAutoencoder:
    shape = normalise_shape(input_shape)
    if len(shape) != 3:
        raise ValueError(f"conv-ae needs an image input_shape (C, H, W), got {shape}")
    channels, height, width = shape
    return ConvAutoencoder(channels, (height, width), **kwargs)


def _simclr_resnet18(input_shape: Sequence[int] | int, **kwargs: Any) -> nn.Module:
    from .simclr import simclr_resnet18  # torchvision and lightly load on first use

    return simclr_resnet18(input_shape, **kwargs)


MODELS: MappingProxyType[str, Callable[..., nn.Module]] = MappingProxyType(
    {
        "conv-ae": _conv_autoencoder,
        "sparse-ae": SparseAutoencoder,
        "dense-ae": DenseAutoencoder,
        "adversarial-ae": AdversarialAutoencoder,
        "concrete-ae": ConcreteAutoencoder,
        "cw-classifier": CWClassifier,
        "lenet": LeNet,
        "mlp": MLPClassifier,
        "simclr-resnet18": _simclr_resnet18,
    }
)
"""Model name -> builder taking ``(input_shape, **kwargs)``."""


def available_models() -> list[str]:
    """The names :func:`build_model` accepts, sorted."""
    return sorted(MODELS)


def build_model(name: str, input_shape: Sequence[int] | int, **kwargs: Any) -> nn.Module:
    """A freshly initialised reference model by name.

    Args:
        name: one of :func:`available_models` (case and ``_``/``-`` are ignored).
        input_shape: shape of one input, e.g. (1, 28, 28), (3, 32, 32) or (617,).
        **kwargs: the model's own options, e.g. ``k=10`` for ``concrete-ae``,
            ``widths=...`` or ``classes=...`` for ``cw-classifier``.

    Returns:
        The model (train mode, CPU); load a checkpoint with
        ``model.load_state_dict(torch.load(path, weights_only=True))``.

    Raises:
        ValueError: for an unknown name (the message lists the available ones)
            or an input shape the model cannot take.
        TypeError: for an option the model does not have.
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, got {type(name).__name__}")
    key = name.strip().lower().replace("_", "-")
    if key not in MODELS:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(available_models())}")
    return MODELS[key](input_shape, **kwargs)
