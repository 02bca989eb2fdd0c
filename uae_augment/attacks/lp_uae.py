"""The L2-UAE baseline: the MinMax loop with the MINE term replaced by an L2 term."""

from __future__ import annotations

from typing import Any

import torch

from ..criteria import Criterion
from ._minmax_loop import L2Similarity
from .minmax import MinMaxAttack

_MINE_KEYS = (
    "mine_steps",
    "mine_lr",
    "statistics_hidden",
    "sampler",
    "projections",
    "projection_dim",
    "mi",
    "select",
)


class LpUAE(MinMaxAttack):
    """Unsupervised adversarial examples that maximise the L2 distance instead of minimising MI.

    Exact objective (the release does not contain this baseline): with
    x' = clip(x + delta, 0, 1),

        L(delta, c) = c * f_x(x') - ||x' - x||_2^2,

    minimised by the same MinMax loop as :class:`MINEUAE` (plain gradient steps
    on delta, projection onto the epsilon-ball, dual update of c). The kept
    iterate is, among those with f_x = 0, the one farthest from x in L2; if none
    succeeded, the one with the smallest f_x. ``result.mi`` is NaN (no MINE).

    Args:
        criterion: the unsupervised criterion (e.g. ``Reconstruction``).
        **kwargs: :class:`MinMaxAttack` arguments (preset, epsilon, steps, alpha,
            beta, c0, delta_init, delta_update, seed, batch_size, progress, ...);
            MINE settings are ignored.

    Example:
        >>> from torch import nn
        >>> from uae_augment import Reconstruction
        >>> ae = nn.Sequential(nn.Flatten(), nn.Linear(16, 16), nn.Sigmoid(), nn.Unflatten(1, (1, 4, 4)))
        >>> LpUAE(Reconstruction(ae), steps=5)(torch.rand(3, 1, 4, 4)).mi.isnan().all().item()
        True
    """

    def __init__(self, criterion: Criterion, **kwargs: Any):
        if kwargs.pop("mode", "unsupervised") != "unsupervised":
            raise ValueError("LpUAE is an unsupervised attack")
        kwargs.setdefault("batch_size", 1024)
        if kwargs.get("select") not in (None, "running"):
            raise ValueError("LpUAE keeps the successful iterate farthest from x in L2; it takes no select=")
        kwargs["select"] = "running"  # its own score, -||x' - x||^2, is the common scale
        super().__init__(criterion, mode="unsupervised", **kwargs)

    def _config(self) -> dict[str, Any]:
        config = super()._config()
        for key in _MINE_KEYS:
            config.pop(key, None)
        return {**config, "similarity": "l2"}

    def similarity(self, x: torch.Tensor, index: torch.Tensor, init_round: int = 0) -> L2Similarity:  # type: ignore[override]
        return L2Similarity(x)
