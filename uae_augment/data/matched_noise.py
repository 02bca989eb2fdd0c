"""Matched-noise controls as an attack: noise matched row by row to the UAEs of a cache."""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

from .. import controls
from ..attacks.base import Attack, padding_rows
from ..attacks.result import AttackResult
from ..criteria import Criterion
from .cache import UAECache, provenance_hash

MATCHES = {"l2": controls.l2_matched_noise, "cosine": controls.cosine_matched_noise}
"""The matched quantity: ``"l2"`` (||x'' - x||_2) or ``"cosine"`` (retained component of x and
orthogonal energy, hence cos(x, x''), ||x''|| and ||x'' - x||); see :mod:`uae_augment.controls`."""


class MatchedNoise(Attack):
    """Random noise matched, row by row, to the reference UAEs stored in a :class:`~uae_augment.UAECache`.

    The reference of dataset row ``i`` is row ``i`` of the cache (the cache
    :func:`~uae_augment.precompute` wrote for the same dataset, e.g. its MINE-UAEs);
    the attack reads it by the global index it is called with, so it plugs into
    the augmentation path like any other attack (``precompute``,
    ``UAEAugmented``): ``x'' = controls.l2_matched_noise(x, reference[index])`` or
    ``controls.cosine_matched_noise(...)``, seeded by ``(seed, index)``. Success
    is judged by the criterion, as for :class:`GaussianNoise` (f_x = 0); the MI
    is NaN. The config names the reference by the hash of its provenance, so a
    cache of this attack is rebuilt when the reference changes.

    Args:
        criterion: scores the noisy samples (f_x = 0 is success).
        reference: the finished reference cache (path or ``UAECache``).
        match: ``"l2"`` or ``"cosine"`` (see :data:`MATCHES`).
        seed: base seed of the noise.
        batch_size, progress: see :class:`~uae_augment.attacks.base.Attack`.

    Raises:
        ValueError: an unknown ``match``; (on call) x whose sample shape differs
            from the cache's, or values the control rejects (see
            :mod:`uae_augment.controls`).
        IndexError: (on call) an index beyond the cache's rows.
        CacheError: the reference cache is unfinished or unreadable.
    """

    def __init__(
        self,
        criterion: Criterion,
        reference: str | os.PathLike[str] | Any,
        *,
        match: str = "cosine",
        seed: int = 0,
        batch_size: int | None = 1024,
        progress: bool = False,
    ):
        super().__init__(seed=seed, batch_size=batch_size, progress=progress)
        if match not in MATCHES:
            raise ValueError(f"match must be one of {sorted(MATCHES)}, got {match!r}")
        self.criterion = criterion
        self.match = match
        self.reference = reference if isinstance(reference, UAECache) else UAECache(reference)
        self.reference_hash = provenance_hash(self.reference.provenance)
        self.requires_labels = criterion.requires_labels

    def models(self) -> list[nn.Module]:
        return self.criterion.models()

    def _config(self) -> dict[str, Any]:
        return {"match": self.match, "reference": self.reference_hash, **self.criterion.config()}

    def _attack_batch(self, x: torch.Tensor, y: torch.Tensor | None, index: torch.Tensor) -> AttackResult:
        if tuple(x.shape[1:]) != tuple(self.reference.sample_shape):
            raise ValueError(
                f"samples of shape {tuple(x.shape[1:])} do not match the reference cache's {self.reference.sample_shape}"
            )
        rows = int((~padding_rows(index)).sum())  # the padding rows repeat the last index: drop, then copy
        reference, _ = self.reference.rows(index[:rows])
        matched = MATCHES[self.match](
            x[:rows],
            reference.to(device=x.device, dtype=x.dtype),
            seed=self.seed,
            index=index[:rows],
        )
        adversarial = torch.cat([matched, matched[-1:].expand(x.shape[0] - rows, *matched.shape[1:])])
        with torch.no_grad():
            f = self.criterion(adversarial, self.criterion.prepare(x, y, index))
        return AttackResult(
            adversarial=adversarial,
            success=f <= 0,
            mi=torch.full_like(f, float("nan")),
            criterion=f,
        )
