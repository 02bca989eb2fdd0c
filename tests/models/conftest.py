"""Small real batches for the model tests (mnist-5k and digits need no download)."""

from __future__ import annotations

import pytest
import torch

from uae_augment import load_dataset


@pytest.fixture(scope="session")
def mnist() -> tuple[torch.Tensor, torch.Tensor]:
    """512 real mnist-5k training digits (a fixed random subset: the file is sorted by class).

    Returns (512, 1, 28, 28) floats in [0, 1] and their (512,) labels.
    """
    data = load_dataset("mnist-5k")
    rows = torch.randperm(len(data), generator=torch.Generator().manual_seed(0))[:512]
    return data.data[rows].clone(), data.targets[rows].clone()


@pytest.fixture(scope="session")
def digits() -> tuple[torch.Tensor, torch.Tensor]:
    """All 1,437 real 8x8 digits of the digits training split, (N, 1, 8, 8), and labels."""
    data = load_dataset("digits")
    return data.data.clone(), data.targets.clone()
