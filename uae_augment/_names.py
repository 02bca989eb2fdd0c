"""Names the command line offers, importable without torch (``uae-augment --help`` stays fast).

``tests/test_cli_startup.py`` checks them against :data:`uae_augment.data.DATASETS` and
:data:`uae_augment.PRESETS`.
"""

from __future__ import annotations

DATASET_NAMES: tuple[str, ...] = (
    "activity",
    "cifar10",
    "coil20",
    "digits",
    "fashion-mnist",
    "isolet",
    "mice-protein",
    "mnist",
    "mnist-5k",
    "svhn",
)
"""The names :func:`uae_augment.load_dataset` accepts, sorted."""

PRESET_NAMES: tuple[str, ...] = ("paper", "fast", "strong")
"""The presets of the MINE attacks (:data:`uae_augment.PRESETS`)."""

PRECOMPUTE_BATCH_SIZE = 16
"""Default rows per attack call of ``precompute``, ``UAEAugmented`` and the CLI: small enough that
the progress bar moves and the time estimate comes within seconds (16 fast-preset MNIST attacks
are about 13 CPU s at 0.8 s/image), large enough to keep the per-image cost (0.079 CPU s/image at
16 rows, 0.080 at 64, 4-iteration benchmark, ``benchmarks/results/attack_speed_fast.json``)."""
