"""Small real models and data shared by the engine tests (trained once per session)."""

from __future__ import annotations

import functools

import torch
from sklearn.datasets import load_digits
from torch import nn


@functools.lru_cache(maxsize=1)
def digits() -> tuple[torch.Tensor, torch.Tensor]:
    """sklearn's 1,797 real 8x8 digits as (N, 1, 8, 8) in [0, 1] and int labels."""
    data = load_digits()
    x = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16.0
    return x, torch.tensor(data.target)


def _train(model: nn.Module, x: torch.Tensor, target: torch.Tensor, loss_fn, epochs: int) -> nn.Module:
    generator = torch.Generator().manual_seed(0)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=generator)
        for rows in order.split(64):
            optimizer.zero_grad()
            loss_fn(model(x[rows]), target[rows]).backward()
            optimizer.step()
    return model.eval()


@functools.lru_cache(maxsize=1)
def digits_classifier() -> nn.Module:
    """A conv classifier on digits (~97% train accuracy); first layer: conv 3x3 (8 maps 6x6) + ReLU."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, 10))
    x, y = digits()
    return _train(model, x, y, nn.functional.cross_entropy, epochs=15)


@functools.lru_cache(maxsize=1)
def digits_conv_autoencoder() -> nn.Module:
    """A small conv autoencoder on digits; first layer: conv 3x3 same (8 maps 8x8) + ReLU."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 1, 3, padding=1),
        nn.Sigmoid(),
    )
    x, _ = digits()
    return _train(model, x, x, nn.functional.mse_loss, epochs=5)


@functools.lru_cache(maxsize=1)
def digits_dense_autoencoder() -> nn.Module:
    """A dense autoencoder on flattened digits (no convolution: random-projection MINE)."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Flatten(),
        nn.Linear(64, 16),
        nn.Sigmoid(),
        nn.Linear(16, 64),
        nn.Sigmoid(),
        nn.Unflatten(1, (1, 8, 8)),
    )
    x, _ = digits()
    return _train(model, x, x, nn.functional.mse_loss, epochs=10)
