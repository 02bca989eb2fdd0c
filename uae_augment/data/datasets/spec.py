"""What a named data set is: its registry row, its build and preprocessing recipe, its canonical arrays."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

CANONICAL_KEYS = ("x_train", "y_train", "x_test", "y_test")
"""The four arrays of every canonical ``.npz`` file."""

COIL20_SIDE = 32
"""Side of the canonical COIL-20 images (stored flattened column-major, 1024 values)."""


class DatasetFormatError(ValueError):
    """A canonical ``.npz`` file (or a built array set) does not have the expected layout."""


@dataclass(frozen=True)
class DatasetInfo:
    """What a named data set is: one row of the registry.

    Attributes:
        name: the name :func:`load_dataset` takes.
        kind: ``"image"`` (samples (C, H, W)) or ``"tabular"`` (samples (D,)).
        shape: shape of one sample with the default options.
        num_classes: number of classes; labels are 0 .. num_classes - 1.
        class_names: name of each label.
        licence: licence or terms of use of the data.
        source: where the data comes from (and what ``download=True`` uses).
        file: canonical file name under the data root (``None``: embedded, no file).
        splits: how the train and test splits are formed.
        options: extra keyword options of :func:`load_dataset` with their defaults.
    """

    name: str
    kind: Literal["image", "tabular"]
    shape: tuple[int, ...]
    num_classes: int
    class_names: tuple[str, ...]
    licence: str
    source: str
    file: str | None
    splits: str
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class _Arrays:
    """Raw arrays in the canonical layout (see the module docstring)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray

    def as_dict(self) -> dict[str, np.ndarray]:
        return {key: getattr(self, key) for key in CANONICAL_KEYS}


# A fitted preprocessing: raw rows (and their labels) -> float32 samples in [0, 1].
_Preprocess = Callable[[np.ndarray, np.ndarray], torch.Tensor]


@dataclass(frozen=True)
class _Spec:
    info: DatasetInfo
    sample_shape: tuple[int, ...]  # trailing shape of x in the canonical arrays
    pixels: bool  # uint8 pixels (True) or float features (False)
    has_test_split: bool
    fit: Callable[..., _Preprocess]  # fit(x_train, y_train, **options) -> preprocess
    build: Callable[[Path], _Arrays] | None = None  # from upstream, into the cache dir
    embedded: Callable[[], _Arrays] | None = None
    allow_nan: bool = False
    check_options: Callable[..., None] | None = None  # check_options(**settings), before any I/O
