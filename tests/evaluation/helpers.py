"""Models shared by the evaluation tests."""

from __future__ import annotations

import functools

import torch
from torch import nn

from ..helpers import _train, digits


@functools.lru_cache(maxsize=1)
def digits_mlp() -> nn.Module:
    """A second, differently built classifier on the same digits (a dense net)."""
    torch.manual_seed(1)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    x, y = digits()
    return _train(model, x, y, nn.functional.cross_entropy, epochs=10)
