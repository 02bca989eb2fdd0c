"""Input normalisation as a model's first layer, so that attacks see inputs in [0, 1]."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..mine import find_feature_layer


class Normalize(nn.Module):
    """``(x - mean) / std`` per channel (dimension 1) of (N, C, ...) inputs; mean and std are buffers.

    Args:
        mean: per-channel means (length C), or one value for every channel.
        std: per-channel standard deviations (length C, all > 0), or one value.

    Raises:
        ValueError: if ``mean`` and ``std`` differ in length, are empty, are
            not finite, or ``std`` has a value <= 0.
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, mean: float | Sequence[float], std: float | Sequence[float]):
        super().__init__()
        mean_t = torch.as_tensor(mean, dtype=torch.float32).flatten()
        std_t = torch.as_tensor(std, dtype=torch.float32).flatten()
        if mean_t.numel() == 0 or mean_t.numel() != std_t.numel():
            raise ValueError(
                "mean and std must have the same non-zero length (one value per channel), "
                f"got {mean_t.numel()} and {std_t.numel()}"
            )
        if not (torch.isfinite(mean_t).all() and torch.isfinite(std_t).all()) or bool((std_t <= 0).any()):
            raise ValueError(
                f"mean must be finite and std finite and > 0, got mean={mean_t.tolist()}, std={std_t.tolist()}"
            )
        self.register_buffer("mean", mean_t)
        self.register_buffer("std", std_t)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalises ``x`` (N, C, ...) per channel.

        Raises:
            ValueError: if ``x`` has fewer than 2 dimensions, or C differs from
                the number of values of ``mean``/``std`` (when that is > 1).
        """
        if x.dim() < 2:
            raise ValueError(f"x must be (N, C, ...) with a channel dimension, got shape {tuple(x.shape)}")
        channels = self.mean.numel()
        if channels > 1 and x.shape[1] != channels:
            raise ValueError(f"x has {x.shape[1]} channels (dimension 1) but mean/std have {channels} values")
        view = (1, channels) + (1,) * (x.dim() - 2)
        return (x - self.mean.view(view)) / self.std.view(view)

    def extra_repr(self) -> str:
        return f"mean={self.mean.tolist()}, std={self.std.tolist()}"


class Normalized(nn.Module):
    """``model(Normalize(mean, std)(x))``: a data pipeline's ``Normalize`` moved into the model.

    Every attack of this library takes inputs in [0, 1] (its ε-ball, pixel box
    and MINE work in pixel space). A model trained on normalised inputs (e.g.
    with ``torchvision.transforms.Normalize(mean, std)`` in its transform) is
    attacked by wrapping it: drop ``Normalize`` from the transform and attack
    ``Normalized(model, mean, std)``, which normalises as its first layer. The
    outputs are the wrapped model's. ``mean`` and ``std`` are buffers (saved in
    the state dict as ``normalize.mean``/``normalize.std``, moved by ``.to()``).
    MINE's feature-map mode uses :attr:`first_layer`: the normalisation
    followed by the wrapped model's first layer.

    Args:
        model: the network that expects normalised inputs.
        mean: per-channel means (length C), or one value for every channel.
        std: per-channel standard deviations (length C, all > 0), or one value.

    Raises:
        ValueError: if ``mean`` and ``std`` differ in length, are empty, are
            not finite, or ``std`` has a value <= 0.

    Example:
        >>> from torch import nn
        >>> net = Normalized(nn.Identity(), mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
        >>> net(torch.full((1, 3, 2, 2), 0.75))[0, :, 0, 0]
        tensor([1., 1., 1.])
    """

    def __init__(self, model: nn.Module, mean: float | Sequence[float], std: float | Sequence[float]):
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.model = model

    @property
    def first_layer(self) -> nn.Module | None:
        """The normalisation and the wrapped model's first layer (None when it has no convolution)."""
        inner = find_feature_layer(self.model)
        return None if inner is None else nn.Sequential(self.normalize, inner)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Runs the wrapped model on ``x`` (N, C, ...) normalised per channel.

        Raises:
            ValueError: see :meth:`Normalize.forward`.
        """
        return self.model(self.normalize(x))
