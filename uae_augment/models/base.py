"""The training protocol the reference models implement, read by :func:`uae_augment.fit`.

A trainable model is an ``nn.Module`` with three methods:

* ``default_fit(num_samples) -> FitSettings``: its release training settings
  (epochs, batch size) for a data set of ``num_samples`` items;
* ``configure_optimizers() -> list[Optimizer]``: fresh optimisers over its parameters;
* ``training_step(x, y, optimizers) -> dict[str, float]``: one optimisation step on
  a batch (forward, backward, optimiser update(s)); returns at least ``"loss"``.

and optionally ``on_fit_start(total_steps)``, called by ``fit`` with the number of
optimisation steps it is about to run (the concrete autoencoder's temperature
schedule needs it). :class:`ReferenceModel` implements the single-optimiser case.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, Protocol, runtime_checkable

import torch
from torch import nn

from .._validation import normalise_shape as normalise_shape
from .._validation import positive_int as positive_int

LossParts = dict[str, torch.Tensor]

ADAM_KERAS = {"lr": 1e-3, "eps": 1e-7}
"""Keras' Adam defaults, which the release uses (PyTorch's default eps is 1e-8)."""


@dataclass(frozen=True)
class FitSettings:
    """Release training settings of a model: number of epochs and batch size.

    Raises:
        ValueError: if either is not a positive integer.
    """

    epochs: int
    batch_size: int

    def __post_init__(self) -> None:
        positive_int(self.epochs, "FitSettings.epochs")
        positive_int(self.batch_size, "FitSettings.batch_size")


@runtime_checkable
class Trainable(Protocol):
    """What :func:`uae_augment.fit` needs from a model (see the module docstring)."""

    def default_fit(self, num_samples: int) -> FitSettings: ...

    def configure_optimizers(self) -> list[torch.optim.Optimizer]: ...

    def training_step(
        self, x: torch.Tensor, y: torch.Tensor | None, optimizers: Sequence[torch.optim.Optimizer]
    ) -> dict[str, float]: ...


class ReferenceModel(nn.Module, abc.ABC):
    """Base class of the reference models: one optimiser, one differentiable loss.

    Subclasses set :attr:`fit_settings`, implement :meth:`configure_optimizers`
    and :meth:`training_loss`; :meth:`training_step` does zero_grad, backward and
    the optimiser step. Models that need several updates per batch (the
    adversarial autoencoder) override :meth:`training_step`.
    """

    fit_settings: ClassVar[FitSettings]

    def default_fit(self, num_samples: int) -> FitSettings:
        """The release's epochs and batch size (independent of ``num_samples`` by default)."""
        return self.fit_settings

    @abc.abstractmethod
    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        """Fresh optimisers over the model's parameters (the release's choice)."""

    @abc.abstractmethod
    def training_loss(self, x: torch.Tensor, y: torch.Tensor | None) -> tuple[torch.Tensor, LossParts]:
        """The scalar training loss of a batch and its named parts (detached or not)."""

    def training_step(
        self, x: torch.Tensor, y: torch.Tensor | None, optimizers: Sequence[torch.optim.Optimizer]
    ) -> dict[str, float]:
        """One optimiser step on the batch; returns ``{"loss": ..., **parts}`` as floats."""
        (optimizer,) = optimizers
        optimizer.zero_grad(set_to_none=True)
        loss, parts = self.training_loss(x, y)
        loss.backward()
        optimizer.step()
        return {"loss": float(loss.detach()), **{k: float(v.detach()) for k, v in parts.items()}}


def keras_init_(module: nn.Module) -> nn.Module:
    """Keras' default initialisation, as in the release: glorot-uniform weights, zero biases.

    Applies to every ``nn.Linear`` and ``nn.Conv2d`` inside ``module``; returns ``module``.
    """
    for layer in module.modules():
        if isinstance(layer, (nn.Linear, nn.Conv2d)):
            nn.init.xavier_uniform_(layer.weight)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
    return module


def channels_last_(module: nn.Module) -> nn.Module:
    """Stores ``module``'s convolution weights channels-last (NHWC strides); returns ``module``.

    The values do not change, only their memory order, in which PyTorch's CPU
    convolutions (oneDNN) run faster: one thread on the 2-core test machine,
    medians of 16 alternating pairs (``benchmarks/results/conv_layout.json``),
    :class:`~uae_augment.models.ConvAutoencoder`'s victim work of an attack
    iteration on 16 digits 7.8 instead of 12.1 ms and its training step on 100
    digits 40 instead of 69 ms (a fast-preset attack, mostly MINE's own work,
    1.00-1.04x: within the noise); LeNet 1.26x and 1.41x, ``cw_mnist`` 1.09x and
    1.14x (input gradient and training step, 64 digits). A convolution with
    channels-last weights returns channels-last maps; models return their outputs
    contiguous. ``ConvAutoencoder``, ``CWClassifier`` and ``LeNet`` call it (all
    their convolutions have stride 1); ``CIFARResNet18`` does not: in this layout
    the backward pass of a 1x1 stride-2 convolution on 2 channels, the kind its
    shortcuts are, crashed the process (PyTorch 2.14.1's oneDNN, AVX2 kernels).
    Rows stay bitwise independent of the batch and of the thread count
    (tests/attacks/test_batch_independence.py).
    """
    return module.to(memory_format=torch.channels_last)


def check_input(x: torch.Tensor, input_shape: tuple[int, ...], model: str) -> None:
    """Raises ValueError unless ``x`` has shape (N, *input_shape)."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{model} expects a torch.Tensor, got {type(x).__name__}")
    if tuple(x.shape[1:]) != input_shape:
        raise ValueError(
            f"{model} expects inputs of shape (N, {', '.join(map(str, input_shape))}), got {tuple(x.shape)}"
        )


def flat_size(input_shape: tuple[int, ...]) -> int:
    """Number of features of one input of ``input_shape``."""
    return math.prod(input_shape)
