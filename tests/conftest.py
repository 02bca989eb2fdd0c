"""Shared fixtures: the real data sets in ../shared/datasets when they exist."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_DATASETS = REPO.parent / "shared" / "datasets"


def _shared_root() -> Path | None:
    configured = os.environ.get("UAE_DATA_ROOT")
    if configured and Path(configured).is_dir():
        return Path(configured)
    return SHARED_DATASETS if SHARED_DATASETS.is_dir() else None


@pytest.fixture(scope="session")
def data_root() -> Path:
    """Folder with the canonical .npz files; skips the test when none is available."""
    root = _shared_root()
    if root is None:
        pytest.skip("real data sets not found: set UAE_DATA_ROOT or provide ../shared/datasets")
    return root


@pytest.fixture(scope="module")
def cifar(data_root: Path) -> torch.Tensor:
    """24 real CIFAR-10 training images (3, 32, 32) in [0, 1] (a module may override it)."""
    from uae_augment import load_dataset

    return load_dataset("cifar10", root=data_root).data[:24].clone()


@pytest.fixture(autouse=True)
def _deterministic_threads() -> None:
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _default_logger_levels() -> None:
    """A recipe's ``main`` (run by some module fixtures) sets the "uae_augment" and "recipes"
    logger levels to its --log-level; every test starts from the default (NOTSET) instead, so
    that no test's logging depends on which tests ran before it."""
    for name in ("uae_augment", "recipes"):
        logging.getLogger(name).setLevel(logging.NOTSET)
