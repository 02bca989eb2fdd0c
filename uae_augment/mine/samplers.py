"""MINE's paired samples: how a pair (x, x') becomes K pairs (u_k, v_k) for the statistics network.

Two constructions (docs/method.md section 1): the victim's first-layer feature
maps (:class:`FeatureMapSampler`, K = its output channels) and shared Gaussian
random projections (:class:`RandomProjectionSampler`) for dense models;
:func:`build_sampler` chooses between them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from .._seeding import Stream, derive_seed

_ACTIVATIONS = (
    nn.ReLU,
    nn.LeakyReLU,
    nn.ELU,
    nn.GELU,
    nn.SiLU,
    nn.Sigmoid,
    nn.Tanh,
    nn.Softplus,
    nn.PReLU,
)


def find_feature_layer(model: nn.Module) -> nn.Module | None:
    """The victim's first layer for MINE's feature-map mode, or None for dense models.

    Uses ``model.first_layer`` when the model defines it (all reference models
    do). Otherwise takes the first ``nn.Conv2d`` in module order, followed by its
    activation when the two are consecutive children of an ``nn.Sequential``.
    Returns None when the model has no convolution (use random projections).
    """
    declared = getattr(model, "first_layer", None)
    if isinstance(declared, nn.Module):
        return declared
    for parent in model.modules():
        children = list(parent.children())
        for position, child in enumerate(children):
            if isinstance(child, nn.Conv2d):
                following = children[position + 1] if position + 1 < len(children) else None
                if isinstance(parent, nn.Sequential) and isinstance(following, _ACTIVATIONS):
                    return nn.Sequential(child, following)
                return child
    return None


class FeatureMapSampler:
    """K = the first layer's output channels; u_k, v_k are its H' x W' maps for x and x'.

    Args:
        layer: maps (B, C, H, W) to (B, K, H', W') (the victim's first conv + activation).
    """

    mode = "feature_maps"

    def __init__(self, layer: nn.Module):
        self.layer = layer

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        maps = self.layer(x)
        if maps.dim() != 4:
            raise ValueError(
                "feature-map MINE needs a first layer returning (B, K, H', W') maps, got shape"
                f" {tuple(maps.shape)}; use sampler='random_projection' for dense models"
            )
        return maps.contiguous()  # channels-last layers' maps: MINE reads each map's rows


class RandomProjectionSampler:
    """u_k = standardise(vec(x) R_k) with R of shape (K, d, dim), entries N(0, 1/dim).

    R is drawn once from ``(seed, Stream.PROJECTION)`` and shared by every sample
    (the release redraws it at every step; one draw per attack has lower variance
    and keeps a sample's result independent of its batch). Memory: K * d * dim floats.

    Args:
        num_features: d, the flattened input size.
        projections: K, the number of paired samples.
        dim: length of each projected sample.
        seed: attack seed.
    """

    mode = "random_projection"

    def __init__(self, num_features: int, projections: int = 500, dim: int = 128, seed: int = 0):
        if projections < 2 or dim < 2:
            raise ValueError("random projections need projections >= 2 and dim >= 2")
        self.num_features = num_features
        self.projections = projections
        self.dim = dim
        self.seed = seed
        self._matrix: dict[torch.device, torch.Tensor] = {}

    def matrix(self, device: torch.device) -> torch.Tensor:
        """R as a (d, K * dim) matrix on ``device`` (drawn once, cached per device)."""
        if device not in self._matrix:
            generator = torch.Generator().manual_seed(derive_seed(self.seed, int(Stream.PROJECTION)))
            matrix = torch.randn(self.num_features, self.projections * self.dim, generator=generator) / math.sqrt(
                self.dim
            )
            self._matrix[device] = matrix.to(device)
        return self._matrix[device]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(x.shape[0], -1)
        if flat.shape[1] != self.num_features:
            raise ValueError(f"expected {self.num_features} features per sample, got {flat.shape[1]}")
        projected = (flat @ self.matrix(x.device)).view(x.shape[0], self.projections, self.dim)
        mean = projected.mean(dim=-1, keepdim=True)
        std = projected.std(dim=-1, unbiased=False, keepdim=True)
        return (projected - mean) / (std + 1e-8)


Sampler = FeatureMapSampler | RandomProjectionSampler


def build_sampler(
    kind: str,
    feature_layer: nn.Module | None,
    sample_shape: Sequence[int],
    *,
    projections: int = 500,
    projection_dim: int = 128,
    seed: int = 0,
) -> Sampler:
    """Chooses the MINE sampler: 'auto' uses feature maps when a first conv layer exists.

    Raises:
        ValueError: on an unknown ``kind`` or 'feature_maps' without a feature layer.
    """
    if kind not in ("auto", "feature_maps", "random_projection"):
        raise ValueError(f"sampler must be 'auto', 'feature_maps' or 'random_projection', got {kind!r}")
    if kind == "feature_maps" and feature_layer is None:
        raise ValueError("sampler='feature_maps' needs a model with a first convolution (or first_layer)")
    if kind != "random_projection" and feature_layer is not None:
        return FeatureMapSampler(feature_layer)
    return RandomProjectionSampler(math.prod(sample_shape), projections, projection_dim, seed)
