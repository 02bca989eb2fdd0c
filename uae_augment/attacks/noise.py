"""Gaussian-noise augmentation (the GA baseline of docs/method.md section 4)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .._seeding import Stream, sample_generators, stacked_normal
from ..criteria import Criterion
from .base import Attack
from .result import AttackResult


class GaussianNoise(Attack):
    """x + N(0, sigma^2), clipped to [0, 1]; success judged by the same criterion f_x.

    Args:
        criterion: attack criterion used to score the noisy samples (f_x = 0 is success).
        sigma: noise standard deviation (the paper uses 0.01 and 0.001).
        seed: base seed; the noise of sample i depends only on (seed, index[i]).
        batch_size, progress: see :class:`~uae_augment.attacks.base.Attack`.

    Example:
        >>> from uae_augment import Reconstruction
        >>> ae = nn.Sequential(nn.Flatten(), nn.Linear(4, 4), nn.Sigmoid(), nn.Unflatten(1, (1, 2, 2)))
        >>> result = GaussianNoise(Reconstruction(ae), sigma=0.01)(torch.rand(5, 1, 2, 2))
        >>> result.adversarial.shape, result.success.dtype
        (torch.Size([5, 1, 2, 2]), torch.bool)
    """

    def __init__(
        self,
        criterion: Criterion,
        sigma: float = 0.01,
        *,
        seed: int = 0,
        batch_size: int | None = 1024,
        progress: bool = False,
    ):
        super().__init__(seed=seed, batch_size=batch_size, progress=progress)
        if sigma < 0:
            raise ValueError(f"sigma must be >= 0, got {sigma}")
        self.criterion = criterion
        self.sigma = float(sigma)
        self.requires_labels = criterion.requires_labels

    def models(self) -> list[nn.Module]:
        return self.criterion.models()

    def _config(self) -> dict[str, Any]:
        return {"sigma": self.sigma, **self.criterion.config()}

    def _attack_batch(self, x: torch.Tensor, y: torch.Tensor | None, index: torch.Tensor) -> AttackResult:
        generators = sample_generators(self.seed, index, Stream.NOISE)
        noise = stacked_normal(generators, x.shape[1:], self.sigma, device=x.device, dtype=x.dtype)
        adversarial = torch.clamp(x + noise, 0.0, 1.0)
        with torch.no_grad():
            reference = self.criterion.prepare(x, y, index)
            f = self.criterion(adversarial, reference)
        return AttackResult(
            adversarial=adversarial,
            success=f <= 0,
            mi=torch.full_like(f, float("nan")),
            criterion=f,
        )
