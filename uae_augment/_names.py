"""Names the command line offers, importable without torch (``uae-augment --help`` stays fast).

``tests/test_cli_startup.py`` checks them against :data:`uae_augment.data.DATASETS` and
:data:`uae_augment.PRESETS`.
"""

from __future__ import annotations

DATASET_NAMES: tuple[str, ...] = (
    "activity", "cifar10", "coil20", "digits", "fashion-mnist", "isolet", "mice-protein", "mnist",
    "mnist-5k", "svhn",
)
"""The names :func:`uae_augment.load_dataset` accepts, sorted."""

PRESET_NAMES: tuple[str, ...] = ("paper", "fast", "strong")
"""The presets of the MINE attacks (:data:`uae_augment.PRESETS`)."""
