"""Small real batches for the model tests (mnist-5k and digits need no download)."""

from __future__ import annotations

import pytest
import torch

from uae_augment import load_dataset


@pytest.fixture(scope="session")
def mnist() -> tuple[torch.Tensor, torch.Tensor]:
    """The first 512 real mnist-5k training digits, (512, 1, 28, 28) in [0, 1], and labels."""
    data = load_dataset("mnist-5k")
    return data.data[:512].clone(), data.targets[:512].clone()


@pytest.fixture(scope="session")
def digits() -> tuple[torch.Tensor, torch.Tensor]:
    """All 1,437 real 8x8 digits of the digits training split, (N, 1, 8, 8), and labels."""
    data = load_dataset("digits")
    return data.data.clone(), data.targets.clone()
