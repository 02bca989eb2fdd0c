"""Where a data set's file is: the data root, the canonical ``.npz`` read/check/atomic write, and the splits.

Every split is served in a fixed shuffled order (:data:`ORDER_SEED`), because
several canonical files are sorted by class.
"""

from __future__ import annotations

import logging
import os
import zipfile
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .spec import CANONICAL_KEYS, DatasetFormatError, _Arrays, _Spec

logger = logging.getLogger(__name__)

ENV_DATA_ROOT = "UAE_DATA_ROOT"
"""Environment variable naming the data root when no ``root`` argument is given."""

HELD_OUT_FRACTION = 0.2
"""Share of the rows that go to the test split of sets without an upstream split."""
ORDER_SEED = 0
"""Seed of the fixed permutation in which :func:`~uae_augment.data.load_dataset` serves every split."""

UPSTREAM_FOLDER = "upstream"
"""Sub-folder of the data root where ``download=True`` keeps the raw upstream files."""

_REPO_DATASETS = Path(__file__).resolve().parents[3] / "datasets"


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
        np.arange(len(every.y)),
        test_size=HELD_OUT_FRACTION,
        stratify=every.y,
        random_state=seed,
        shuffle=True,
    )
    return {
        part: _Rows(every.x[chosen], every.y[chosen].astype(np.int64), every.index[chosen])
        for part, chosen in (("train", np.sort(train_idx)), ("test", np.sort(test_idx)))
    }


def _served_order(rows: _Rows) -> _Rows:
    """The rows permuted by ``default_rng(ORDER_SEED).permutation(n)``: no class blocks at the start."""
    order = np.random.default_rng(ORDER_SEED).permutation(len(rows.y))
    return _Rows(rows.x[order], rows.y[order], rows.index[order])
