"""A resumable, shardable HDF5 cache of attack results, and a torch Dataset that reads it.

:func:`precompute` attacks every row of a dataset once and writes the results
into one HDF5 file; :class:`UAECache` reads them back (lazily, per process, so
DataLoader workers work). The file layout (format version 1):

* datasets, all preallocated with N rows and chunked along the sample axis:
  ``adversarial`` (N, ...) float32 or float16 (compressed: lzf, gzip + shuffle,
  or none), ``success`` bool, ``mi`` float32, ``criterion`` float32, ``label``
  int64, ``index`` int64 (the row's global dataset index) and ``done`` bool;
* root attributes: ``format``, ``format_version``, ``provenance`` (a JSON
  record: library and torch versions, attack config, seed, model state hash,
  dataset fingerprint, dtype; plus an ``environment`` part with python, h5py,
  HDF5 and numpy versions that is recorded but not compared) and
  ``provenance_hash`` (SHA-256 of the compared part).

Crash safety (a writer may be killed at any moment, e.g. ``kill -9``): every
chunk of ``adversarial`` is written as a whole, once its rows are all attacked;
after each batch the file is flushed, and only then the rows of the chunks it
completed are marked ``done`` (and flushed again). The per-row datasets are uncompressed with their space allocated at
creation, so writing them never touches the file's metadata. A resume re-attacks
exactly the rows not marked done. Files are created under a temporary name and
renamed into place once preallocated, and a lock file ``<path>.lock`` stops a
second writer.

Scale-out: when ``torch.distributed`` is initialised with more than one rank,
every rank attacks a contiguous slice of whole batches into its own (resumable)
shard ``<path>.rank{r}-of-{w}.h5``; after a barrier rank 0 copies the shards
into the final file and removes them. Attacks are per-index deterministic, so
the result equals the single-process one.
"""

from __future__ import annotations

import collections
import copy
import hashlib
import json
import logging
import math
import operator
import os
import platform
import socket
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from .._model_state import model_device, state_hash
from ..attacks.base import Attack
from . import _distributed, _lock
from .transforms import ensure_main_process

logger = logging.getLogger(__name__)

FORMAT = "uae-augment-cache"
FORMAT_VERSION = 1
DTYPES = ("float32", "float16")
COMPRESSIONS = ("lzf", "gzip", None)
CHUNK_BYTES = 64 * 1024
"""Target uncompressed size of one ``adversarial`` chunk (rows per chunk = CHUNK_BYTES // row bytes).

Small chunks keep random reads cheap when a cache does not fit a reader's memory
budget (a miss decompresses one chunk); 64 KiB is 20 MNIST rows or 5 CIFAR rows."""
ROW_CHUNK = 1 << 16
"""Rows per chunk of the small per-row datasets."""
READ_CACHE_BYTES = 256 * 1024 * 1024
"""Default per-process budget of :class:`UAECache`'s LRU cache of decompressed chunks."""
FINGERPRINT_ROWS = 64
"""Rows (evenly spaced, first and last included) hashed into the dataset fingerprint."""
GZIP_LEVEL = 4

_ROW_FIELDS: dict[str, tuple[np.dtype, Any]] = {
    "success": (np.dtype(bool), False),
    "mi": (np.dtype(np.float32), np.float32("nan")),
    "criterion": (np.dtype(np.float32), np.float32("nan")),
    "label": (np.dtype(np.int64), -1),
    "index": (np.dtype(np.int64), -1),
    "done": (np.dtype(bool), False),
}
_RESULT_FIELDS = ("adversarial", "success", "mi", "criterion", "label", "index")
_ENVIRONMENT = "environment"
_SHARD = "shard"


class CacheError(ValueError):
    """A cache file is missing parts, unreadable, unfinished, locked or does not match."""


class CacheLockedError(CacheError):
    """Another live process is writing the cache (its lock file exists)."""


class ProvenanceMismatchError(CacheError):
    """An existing cache was written for another dataset, model, attack, seed or dtype."""


# --------------------------------------------------------------------------- provenance


def dataset_fingerprint(dataset: Dataset, rows: int = FINGERPRINT_ROWS) -> dict[str, Any]:
    """A cheap identity of a dataset: length, sample shape and a hash of a few rows.

    The hash covers the samples (as float32) and labels of ``rows`` evenly spaced
    rows, the first and last included, so it is deterministic and costs
    ``rows`` item reads whatever the dataset's size.

    Args:
        dataset: a map-style dataset of (x, y[, extra...]) items, x a float tensor.
        rows: how many rows to hash.

    Returns:
        ``{"length", "sample_shape", "rows_hashed", "sha256"}`` (JSON-serialisable).

    Raises:
        ValueError: if the dataset is empty.
        TypeError: if its items are not (x, y, ...) with a float tensor x and an integer y.

    Example:
        >>> from uae_augment import load_dataset
        >>> fp = dataset_fingerprint(load_dataset("digits"))
        >>> fp["length"], fp["sample_shape"]
        (1437, [1, 8, 8])
    """
    length = _length(dataset)
    positions = sorted({round(k * (length - 1) / max(rows - 1, 1)) for k in range(min(rows, length))})
    digest = hashlib.sha256()
    shape: tuple[int, ...] | None = None
    for position in positions:
        x, y = _split_item(dataset[position], position)
        if shape is None:
            shape = tuple(x.shape)
        digest.update(f"{position}:{tuple(x.shape)}:{y};".encode())
        digest.update(x.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    assert shape is not None
    return {
        "length": length,
        "sample_shape": list(shape),
        "rows_hashed": len(positions),
        "sha256": digest.hexdigest(),
    }


def cache_provenance(dataset: Dataset, attack: Attack, dtype: str = "float32") -> dict[str, Any]:
    """The provenance record :func:`precompute` writes for ``(dataset, attack, dtype)``.

    Everything except the ``"environment"`` part is compared on resume; two
    runs with equal records produce equal rows.

    Raises:
        TypeError: if ``attack`` is not a uae_augment ``Attack`` or the items are malformed.
        ValueError: on an empty dataset or an unknown ``dtype``.
    """
    _check_attack(attack)
    dtype = _check_dtype(dtype)
    from .. import __version__

    return _normalise(
        {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "library_version": __version__,
            "torch_version": torch.__version__,
            "attack": attack.config(),
            "seed": attack.seed,
            "requires_labels": bool(attack.requires_labels),
            "model_state_hash": state_hash(attack.models()),
            "dataset": dataset_fingerprint(dataset),
            "dtype": dtype,
            _ENVIRONMENT: {
                "python": platform.python_version(),
                "h5py": h5py.__version__,
                "hdf5": h5py.version.hdf5_version,
                "numpy": np.__version__,
                "host": socket.gethostname(),
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            },
        }
    )


def _normalise(record: Any) -> Any:
    """A JSON round trip: tuples become lists, non-JSON values their repr."""
    return json.loads(json.dumps(record, sort_keys=True, default=repr))


def _identity(record: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k != _ENVIRONMENT}


def provenance_hash(record: dict[str, Any]) -> str:
    """SHA-256 of the compared part of a provenance record (canonical JSON)."""
    text = json.dumps(_identity(record), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def _differences(stored: Any, expected: Any, prefix: str = "") -> list[str]:
    if isinstance(stored, dict) and isinstance(expected, dict):
        found: list[str] = []
        for key in sorted(set(stored) | set(expected)):
            name = f"{prefix}{key}"
            if key not in stored or key not in expected:
                side = "file" if key in stored else "now"
                found.append(f"{name} (only in the {side}'s record)")
            else:
                found.extend(_differences(stored[key], expected[key], f"{name}."))
        return found
    if stored == expected:
        return []
    return [f"{prefix.rstrip('.')} (file: {_short(stored)}, now: {_short(expected)})"]


def _short(value: Any, limit: int = 60) -> str:
    text = json.dumps(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _check_provenance(path: Path, stored: dict[str, Any], expected: dict[str, Any]) -> None:
    if provenance_hash(stored) == provenance_hash(expected):
        return
    differing = _differences(_identity(stored), _identity(expected)) or ["(hash only)"]
    raise ProvenanceMismatchError(
        f"{path} was written for another configuration; differing fields: {'; '.join(differing)}."
        " Write to another path, or pass resume=False (CLI: --no-resume) to overwrite it"
    )


# --------------------------------------------------------------------------- file layout


@dataclass(frozen=True)
class _Layout:
    rows: int
    sample_shape: tuple[int, ...]
    dtype: str
    chunk_rows: int

    @property
    def chunks(self) -> int:
        return math.ceil(self.rows / self.chunk_rows)

    def chunk_range(self, chunk: int) -> tuple[int, int]:
        start = chunk * self.chunk_rows
        return start, min(start + self.chunk_rows, self.rows)


def _auto_chunk_rows(sample_shape: tuple[int, ...], dtype: str, rows: int) -> int:
    row_bytes = max(1, math.prod(sample_shape)) * np.dtype(dtype).itemsize
    return max(1, min(rows, CHUNK_BYTES // row_bytes))


def _create(path: Path, layout: _Layout, provenance: dict[str, Any], compression: str | None) -> None:
    """Writes a new, empty (nothing done) cache file to ``path``, atomically."""
    temporary = path.with_name(f".{path.name}.creating-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        with h5py.File(temporary, "w") as handle:
            handle.attrs["format"] = FORMAT
            handle.attrs["format_version"] = FORMAT_VERSION
            handle.attrs["provenance"] = json.dumps(provenance, sort_keys=True)
            handle.attrs["provenance_hash"] = provenance_hash(provenance)
            options: dict[str, Any] = {}
            if compression == "gzip":
                options = {"compression": "gzip", "compression_opts": GZIP_LEVEL, "shuffle": True}
            elif compression == "lzf":
                options = {"compression": "lzf"}
            else:
                options = {"dcpl": _early_allocation()}
            handle.create_dataset(
                "adversarial",
                shape=(layout.rows, *layout.sample_shape),
                dtype=layout.dtype,
                chunks=(layout.chunk_rows, *layout.sample_shape),
                fillvalue=np.nan,
                **options,
            )
            for name, (dtype, fill) in _ROW_FIELDS.items():
                handle.create_dataset(
                    name,
                    shape=(layout.rows,),
                    dtype=dtype,
                    chunks=(min(layout.rows, ROW_CHUNK),),
                    fillvalue=fill,
                    dcpl=_early_allocation(),
                )
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    logger.debug("created %s: %s, compression %s", path, layout, compression)


def _early_allocation() -> h5py.h5p.PropDCID:
    """A dataset creation property list that allocates all space at creation (in-place writes)."""
    dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
    return dcpl


def _open(path: Path, mode: str = "r") -> h5py.File:
    """Opens and checks a cache file; any failure is a :class:`CacheError` naming ``path``."""
    if not path.exists():
        raise FileNotFoundError(
            f"no UAE cache at {path}; create it with precompute(dataset, attack, {str(path)!r})"
            " or `uae-augment precompute ... --out PATH`"
        )
    try:
        handle = h5py.File(path, mode)
    except OSError as error:
        if "unable to lock" in str(error).lower():
            raise CacheLockedError(
                f"{path} is open for writing by another process ({error}); wait until it is done"
            ) from error
        raise CacheError(
            f"{path} is not a readable HDF5 file (truncated, corrupt or not HDF5 at all): {error}."
            " Delete it, or rerun precompute with resume=False (CLI: --no-resume) to rebuild it"
        ) from error
    try:
        _read_layout(handle, path)
    except BaseException:
        handle.close()
        raise
    return handle


def _open_for_writing(path: Path) -> h5py.File:
    """Opens a checked (or just created) cache file for writing; errors name the path."""
    try:
        return h5py.File(path, "r+")
    except OSError as error:
        raise CacheError(
            f"cannot open {path} for writing ({error}); close every UAECache or h5py.File on it"
            " in this process first"
        ) from error


def _read_layout(handle: h5py.File, path: Path) -> _Layout:
    """Checks the format, datasets, dtypes and shapes of an open cache file."""
    try:
        found_format = handle.attrs.get("format")
        version = handle.attrs.get("format_version")
        missing = [name for name in ("adversarial", *_ROW_FIELDS) if name not in handle]
    except (OSError, RuntimeError, KeyError) as error:
        raise CacheError(f"{path} is damaged: its structure cannot be read ({error})") from error
    if found_format != FORMAT:
        raise CacheError(
            f"{path} is an HDF5 file but not a uae-augment cache (attribute format={found_format!r},"
            f" expected {FORMAT!r})"
        )
    if version != FORMAT_VERSION:
        raise CacheError(
            f"{path} has cache format version {version!r}; this library reads version {FORMAT_VERSION}"
        )
    if missing:
        raise CacheError(f"{path} is not a complete uae-augment cache: missing datasets {missing}")
    _read_provenance(handle, path)
    adversarial = handle["adversarial"]
    if adversarial.ndim < 2 or adversarial.dtype.name not in DTYPES or adversarial.chunks is None:
        raise CacheError(
            f"{path}: dataset 'adversarial' must be chunked float32/float16 of shape (N, ...),"
            f" found {adversarial.dtype} {adversarial.shape} chunks={adversarial.chunks}"
        )
    rows = adversarial.shape[0]
    for name, (dtype, _) in _ROW_FIELDS.items():
        dataset = handle[name]
        if dataset.shape != (rows,) or dataset.dtype != dtype:
            raise CacheError(
                f"{path}: dataset {name!r} must be {dtype} of shape ({rows},), found"
                f" {dataset.dtype} {dataset.shape}"
            )
    return _Layout(rows, tuple(adversarial.shape[1:]), adversarial.dtype.name, adversarial.chunks[0])


def _read_provenance(handle: h5py.File, path: Path) -> dict[str, Any]:
    text = handle.attrs.get("provenance")
    try:
        record = json.loads(text)
    except (TypeError, ValueError) as error:
        raise CacheError(f"{path}: the provenance attribute is not a JSON record ({error})") from error
    if not isinstance(record, dict):
        raise CacheError(f"{path}: the provenance attribute is not a JSON object")
    return record


def _read_all(dataset: h5py.Dataset, path: Path) -> np.ndarray:
    try:
        return dataset[...]
    except (OSError, RuntimeError) as error:
        raise CacheError(f"{path} is damaged: reading {dataset.name!r} failed ({error})") from error


def shard_path(path: str | os.PathLike[str], rank: int, world_size: int) -> Path:
    """The shard file of ``rank`` (of ``world_size``) for the final cache ``path``."""
    final = Path(path)
    return final.with_name(f"{final.name}.rank{rank}-of-{world_size}.h5")


# --------------------------------------------------------------------------- reading the rows to attack


def _length(dataset: Dataset) -> int:
    try:
        length = len(dataset)  # type: ignore[arg-type]
    except TypeError as error:
        raise TypeError(
            f"dataset must be a map-style dataset with __len__, got {type(dataset).__name__}"
        ) from error
    if length == 0:
        raise ValueError("dataset is empty: there is nothing to precompute")
    return length


def _split_item(item: Any, position: int) -> tuple[torch.Tensor, int]:
    """(x, integer label) of a dataset item (x, y[, extra...])."""
    if not isinstance(item, (tuple, list)) or len(item) < 2:
        raise TypeError(
            f"item {position} of the dataset must be a tuple (x, y, ...), got {type(item).__name__}"
        )
    x, y = item[0], item[1]
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        found = f"a {x.dtype} tensor" if isinstance(x, torch.Tensor) else type(x).__name__
        raise TypeError(
            f"the sample of item {position} must be a float tensor with values in [0, 1], got {found}"
        )
    if isinstance(y, torch.Tensor) and y.numel() == 1 and not y.is_floating_point() and y.dtype != torch.bool:
        return x, int(y.item())
    try:
        return x, operator.index(y)
    except TypeError:
        raise TypeError(f"the label of item {position} must be an integer, got {y!r}") from None


class _Rows(Dataset):
    """The rows still to attack: item j is (global index, x, y) of ``dataset[indices[j]]``."""

    def __init__(self, dataset: Dataset, indices: np.ndarray):
        self.dataset = dataset
        self.indices = indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, j: int) -> tuple[int, torch.Tensor, int]:
        index = int(self.indices[j])
        x, y = _split_item(self.dataset[index], index)
        return index, x, y


def _collate(items: list[tuple[int, torch.Tensor, int]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    shapes = {tuple(x.shape) for _, x, _ in items}
    if len(shapes) > 1:
        raise ValueError(f"rows {items[0][0]}..{items[-1][0]} have different sample shapes {sorted(shapes)}")
    index = torch.tensor([i for i, _, _ in items], dtype=torch.long)
    x = torch.stack([x for _, x, _ in items]).float()
    y = torch.tensor([y for _, _, y in items], dtype=torch.long)
    return index, x, y


def _attack_device(attack: Attack) -> torch.device:
    models = attack.models()
    return model_device(models[0]) if models else torch.device("cpu")


# --------------------------------------------------------------------------- writing


class _ChunkWriter:
    """Collects attacked rows and writes each ``adversarial`` chunk once, when it is complete."""

    def __init__(self, handle: h5py.File, layout: _Layout, done: np.ndarray, path: Path):
        self.handle = handle
        self.datasets = {name: handle[name] for name in (*_RESULT_FIELDS, "done")}
        self.layout = layout
        self.done = done
        self.path = path
        self.pending: dict[int, dict[str, np.ndarray]] = {}
        self.missing: dict[int, int] = {}

    def add(self, positions: np.ndarray, values: dict[str, np.ndarray]) -> None:
        """Buffers a batch of rows; writes the chunks it completes, flushes, then marks them done.

        Only chunks that are not done are ever (re)written, so space HDF5 frees
        and reuses between two flushes never belongs to a chunk marked done.
        """
        chunk_of = positions // self.layout.chunk_rows
        complete: list[int] = []
        for chunk in np.unique(chunk_of):
            chunk = int(chunk)
            start, _ = self.layout.chunk_range(chunk)
            rows = chunk_of == chunk
            buffer = self.pending.get(chunk)
            if buffer is None:
                buffer = self.pending[chunk] = self._start(chunk)
            for name in _RESULT_FIELDS:
                buffer[name][positions[rows] - start] = values[name][rows]
            self.missing[chunk] -= int(rows.sum())
            if self.missing[chunk] == 0:
                self._write(chunk, self.pending.pop(chunk))
                complete.append(chunk)
        if not complete:
            return
        self.handle.flush()
        for chunk in complete:
            start, stop = self.layout.chunk_range(chunk)
            self.datasets["done"][start:stop] = True
            self.done[start:stop] = True
        self.handle.flush()
        logger.debug(
            "%s: rows %d..%d written and marked done",
            self.path.name, self.layout.chunk_range(complete[0])[0], self.layout.chunk_range(complete[-1])[1] - 1,
        )

    def _start(self, chunk: int) -> dict[str, np.ndarray]:
        start, stop = self.layout.chunk_range(chunk)
        self.missing[chunk] = int((~self.done[start:stop]).sum())
        if self.missing[chunk] < stop - start:  # some rows are done already: keep them
            return {name: self.datasets[name][start:stop] for name in _RESULT_FIELDS}
        shape = (stop - start, *self.layout.sample_shape)
        buffer = {"adversarial": np.empty(shape, dtype=self.layout.dtype)}
        for name in _RESULT_FIELDS[1:]:
            buffer[name] = np.empty(stop - start, dtype=_ROW_FIELDS[name][0])
        return buffer

    def _write(self, chunk: int, buffer: dict[str, np.ndarray]) -> None:
        start, stop = self.layout.chunk_range(chunk)
        for name in _RESULT_FIELDS:
            self.datasets[name][start:stop] = buffer[name]
        del self.missing[chunk]

    def close(self) -> None:
        if self.pending:
            raise RuntimeError(f"internal error: chunks {sorted(self.pending)} were left incomplete")


@dataclass(frozen=True)
class _WriteOptions:
    batch_size: int
    resume: bool
    dtype: str
    compression: str | None
    num_workers: int
    progress: bool
    chunk_rows: int | None


def _finished(path: Path, provenance: dict[str, Any]) -> bool:
    """Whether ``path`` is a finished cache with this provenance (no lock needed to reuse it).

    Raises:
        ProvenanceMismatchError: the file is for another configuration.
        CacheError: the file is damaged.
    """
    if not path.exists():
        return False
    try:
        handle = _open(path)
    except CacheLockedError:
        return False  # being written: the lock (taken next) gives the precise error
    with handle:
        _check_provenance(path, _read_provenance(handle, path), provenance)
        return bool(_read_all(handle["done"], path).all())


def _write_file(
    dataset: Dataset,
    attack: Attack,
    path: Path,
    start: int,
    stop: int,
    provenance: dict[str, Any],
    options: _WriteOptions,
) -> Path:
    """Attacks rows [start, stop) of ``dataset`` into ``path`` (created, resumed or reused)."""
    if options.resume and _finished(path, provenance):
        logger.info("%s is finished and matches: reusing it without attacking", path)
        return path
    try:
        owner = _lock.acquire(path)
    except _lock.LockHeldError as error:
        raise CacheLockedError(str(error)) from None
    try:
        layout, todo = _prepare(dataset, path, start, stop, provenance, options)
        if todo.size:
            _attack_rows(dataset, attack, path, layout, start, todo, options)
        else:
            logger.info("%s is finished and matches: reusing it without attacking", path)
    finally:
        _lock.release(path, owner)
    return path


def _prepare(
    dataset: Dataset,
    path: Path,
    start: int,
    stop: int,
    provenance: dict[str, Any],
    options: _WriteOptions,
) -> tuple[_Layout, np.ndarray]:
    """Creates or checks the file (holding its lock); returns its layout and the rows to do."""
    if options.resume and path.exists():
        with _open(path) as handle:
            _check_provenance(path, _read_provenance(handle, path), provenance)
            layout = _read_layout(handle, path)
            done = _read_all(handle["done"], path)
        logger.info("resuming %s: %d of %d rows done", path, int(done.sum()), layout.rows)
        return layout, np.flatnonzero(~done)
    rows = stop - start
    sample_shape = tuple(provenance["dataset"]["sample_shape"])
    chunk_rows = options.chunk_rows or _auto_chunk_rows(sample_shape, options.dtype, rows)
    layout = _Layout(rows, sample_shape, options.dtype, min(chunk_rows, rows))
    _create(path, layout, provenance, options.compression)
    with _open_for_writing(path) as handle:
        handle["index"][:] = np.arange(start, stop)
    return layout, np.arange(rows)


def _grid_batches(indices: np.ndarray, batch_size: int) -> list[list[int]]:
    """Positions in ``indices`` (sorted global rows) grouped by ``index // batch_size``.

    Batches sit on one global grid, so a sharded run and the untouched part of a
    resumed run hand the attack exactly the batches of one uninterrupted run
    (bitwise equal results even where kernels round differently per batch size).
    """
    cells = indices // batch_size
    bounds = [0, *(np.flatnonzero(np.diff(cells)) + 1).tolist(), len(indices)]
    return [list(range(a, b)) for a, b in zip(bounds[:-1], bounds[1:])]


def _attack_rows(
    dataset: Dataset,
    attack: Attack,
    path: Path,
    layout: _Layout,
    start: int,
    todo: np.ndarray,
    options: _WriteOptions,
) -> None:
    loader = DataLoader(
        _Rows(dataset, start + todo),
        batch_sampler=_grid_batches(start + todo, options.batch_size),
        num_workers=options.num_workers,
        collate_fn=_collate,
    )
    device = _attack_device(attack)
    bar = tqdm(
        total=layout.rows,
        initial=layout.rows - todo.size,
        desc=f"precompute {path.name}",
        unit="sample",
        disable=not options.progress,
        dynamic_ncols=True,
    )
    # Start the workers before the file is opened for writing: no process forks with it open.
    batches = iter(loader)
    with bar, _open_for_writing(path) as handle:
        done = handle["done"][...]
        writer = _ChunkWriter(handle, layout, done, path)
        for index, x, y in batches:
            labels = y.to(device) if attack.requires_labels else None
            result = attack(x.to(device), labels, index=index)
            adversarial = result.adversarial.detach().cpu()
            if tuple(adversarial.shape) != (len(index), *layout.sample_shape):
                raise ValueError(
                    f"{type(attack).__name__} returned adversarial examples of shape"
                    f" {tuple(adversarial.shape)} for inputs of shape {tuple(x.shape)}"
                )
            writer.add(
                index.numpy() - start,
                {
                    "adversarial": adversarial.numpy().astype(layout.dtype, copy=False),
                    "success": result.success.detach().cpu().numpy().astype(bool),
                    "mi": result.mi.detach().cpu().float().numpy(),
                    "criterion": result.criterion.detach().cpu().float().numpy(),
                    "label": y.numpy(),
                    "index": index.numpy(),
                },
            )
            bar.update(len(index))
        writer.close()
    logger.info("%s: all %d rows done", path, layout.rows)


def _join(path: Path, shards: list[tuple[Path, int, int]], provenance: dict[str, Any], options: _WriteOptions) -> None:
    """Copies finished shards (path, start, stop) into the final file ``path`` and removes them."""
    try:
        owner = _lock.acquire(path)
    except _lock.LockHeldError as error:
        raise CacheLockedError(str(error)) from None
    try:
        handles = [_open(shard) for shard, _, _ in shards]
        try:
            for handle, (shard, _, _) in zip(handles, shards):
                if not _read_all(handle["done"], shard).all():
                    raise CacheError(f"shard {shard} is unfinished; rerun the same command to resume")
            _copy_shards(path, handles, [(start, stop) for _, start, stop in shards], provenance, options)
        finally:
            for handle in handles:
                handle.close()
    finally:
        _lock.release(path, owner)
    for shard, _, _ in shards:
        shard.unlink()
    logger.info("joined %d shards into %s", len(shards), path)


def _copy_shards(
    path: Path,
    handles: list[h5py.File],
    ranges: list[tuple[int, int]],
    provenance: dict[str, Any],
    options: _WriteOptions,
) -> None:
    rows = ranges[-1][1]
    sample_shape = tuple(provenance["dataset"]["sample_shape"])
    chunk_rows = options.chunk_rows or _auto_chunk_rows(sample_shape, options.dtype, rows)
    layout = _Layout(rows, sample_shape, options.dtype, min(chunk_rows, rows))
    staging = path.with_name(f".{path.name}.joining-{os.getpid()}")
    try:
        _create(staging, layout, provenance, options.compression)
        with h5py.File(staging, "r+") as final:
            for name in _RESULT_FIELDS[1:]:
                for handle, (start, stop) in zip(handles, ranges):
                    final[name][start:stop] = handle[name][...]
            for chunk in range(layout.chunks):
                first, last = layout.chunk_range(chunk)
                parts = [
                    handle["adversarial"][max(first, start) - start : min(last, stop) - start]
                    for handle, (start, stop) in zip(handles, ranges)
                    if start < last and stop > first
                ]
                final["adversarial"][first:last] = np.concatenate(parts)
            final.flush()
            final["done"][:] = True
        os.replace(staging, path)
    finally:
        staging.unlink(missing_ok=True)


def _precompute_distributed(
    dataset: Dataset,
    attack: Attack,
    path: Path,
    provenance: dict[str, Any],
    options: _WriteOptions,
    rank: int,
    world_size: int,
) -> Path:
    _distributed.same_on_every_rank("precompute: provenance", provenance_hash(provenance))
    finished = _distributed.on_rank0(
        "checking the final cache", lambda: options.resume and _finished(path, provenance)
    )
    if finished:
        logger.info("%s is finished and matches: reusing it without attacking", path)
        return path
    rows = provenance["dataset"]["length"]
    ranges = [_distributed.split(rows, r, world_size, unit=options.batch_size) for r in range(world_size)]
    start, stop = ranges[rank]
    shards = [(shard_path(path, r, world_size), a, b) for r, (a, b) in enumerate(ranges) if b > a]
    mine = shard_path(path, rank, world_size)
    shard_provenance = {
        **provenance,
        _SHARD: {"rank": rank, "world_size": world_size, "start": start, "stop": stop},
    }
    shard_options = options if rank == 0 else _replace(options, progress=False)
    _distributed.every_rank(
        f"attacking the rows of the shards {path}.rank*-of-{world_size}.h5",
        lambda: _write_file(dataset, attack, mine, start, stop, shard_provenance, shard_options)
        if stop > start
        else mine,
    )
    _distributed.on_rank0(f"joining the shards into {path}", lambda: _join(path, shards, provenance, options))
    return path


def _replace(options: _WriteOptions, **changes: Any) -> _WriteOptions:
    values = {**options.__dict__, **changes}
    return _WriteOptions(**values)


def _check_attack(attack: object) -> None:
    if not isinstance(attack, Attack):
        raise TypeError(f"attack must be a uae_augment Attack, got {type(attack).__name__}")


def _check_dtype(dtype: object) -> str:
    name = {torch.float32: "float32", torch.float16: "float16"}.get(dtype, dtype)  # type: ignore[call-overload]
    if isinstance(name, np.dtype):
        name = name.name
    if name not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES} (never uint8: UAEs are not on the pixel grid), got {dtype!r}")
    return str(name)


def _check_compression(compression: object) -> str | None:
    if compression in ("none", "None"):
        compression = None
    if compression not in COMPRESSIONS:
        raise ValueError(f"compression must be one of {COMPRESSIONS}, got {compression!r}")
    return compression  # type: ignore[return-value]


def precompute(
    dataset: Dataset,
    attack: Attack,
    path: str | os.PathLike[str],
    *,
    batch_size: int = 256,
    resume: bool = True,
    dtype: str = "float32",
    compression: str | None = "lzf",
    num_workers: int = 0,
    progress: bool = True,
    chunk_rows: int | None = None,
) -> Path:
    """Attacks every row of ``dataset`` once and stores the results in an HDF5 cache.

    Rows are read with a DataLoader (``num_workers`` worker processes) over the
    rows still to do, attacked with their global indices
    (``attack(x, y, index=...)``) in batches of the rows ``[k * batch_size,
    (k + 1) * batch_size)`` still to do, and written; a row is marked done
    only after its data is written and flushed. With ``resume`` an existing file
    with the same provenance is continued (only rows not done are attacked) or,
    when finished, returned as is without running the attack. When
    ``torch.distributed`` is initialised with several ranks, every rank must
    call this with the same arguments: each attacks its slice (whole batches)
    into its own shard and rank 0 joins the shards (see the module docstring);
    every rank returns the final path. Because batches sit on that one grid of
    global rows, a sharded run gives the attack exactly the batches of a single
    uninterrupted run, so the rows are bitwise equal even where PyTorch kernels
    round differently for different batch sizes (a resumed run differs from an
    uninterrupted one at most in the batch that was cut).

    Args:
        dataset: a map-style dataset of (x, y[, extra...]) items: x a float
            tensor with values in [0, 1], y an integer label (stored in ``label``;
            passed to the attack when it requires labels).
        attack: a uae_augment :class:`~uae_augment.attacks.base.Attack`; it runs
            on the device of its models.
        path: the cache file (``.h5``).
        batch_size: rows per DataLoader batch handed to the attack.
        resume: continue or reuse an existing file; False overwrites it.
        dtype: storage dtype of ``adversarial``: ``"float32"`` or ``"float16"``.
        compression: ``"lzf"``, ``"gzip"`` (level 4, with shuffle) or None.
        num_workers: DataLoader workers reading the dataset (the attack itself
            always runs in this process).
        progress: show a tqdm bar (rows, rate, ETA).
        chunk_rows: rows per chunk of ``adversarial`` (default: about 64 KiB per chunk).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        TypeError: ``attack`` is not an Attack, or the items are not (x, y, ...)
            with a float tensor x and an integer y.
        ValueError: empty dataset, bad options, samples outside [0, 1] (from the attack).
        ProvenanceMismatchError: the existing file was written for another
            dataset, model state, attack config, seed or dtype (the message names
            the differing fields).
        CacheLockedError: another live process is writing ``path``.
        CacheError: the existing file is damaged (resume=False rebuilds it).
        RuntimeError: called inside a DataLoader worker.

    Example:
        >>> import tempfile, os
        >>> from torch import nn
        >>> from uae_augment import GaussianNoise, Reconstruction, load_dataset
        >>> ae = nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.Sigmoid(), nn.Unflatten(1, (1, 8, 8)))
        >>> attack = GaussianNoise(Reconstruction(ae), sigma=0.01)
        >>> path = os.path.join(tempfile.mkdtemp(), "digits.h5")
        >>> cache = UAECache(precompute(load_dataset("digits"), attack, path, progress=False))
        >>> len(cache), cache.done
        (1437, 1437)
    """
    ensure_main_process("precompute", "Call precompute once in the main process, before training.")
    _check_attack(attack)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
        raise ValueError(f"num_workers must be an int >= 0, got {num_workers!r}")
    if chunk_rows is not None and (not isinstance(chunk_rows, int) or chunk_rows < 1):
        raise ValueError(f"chunk_rows must be a positive int or None, got {chunk_rows!r}")
    options = _WriteOptions(
        batch_size=batch_size,
        resume=bool(resume),
        dtype=_check_dtype(dtype),
        compression=_check_compression(compression),
        num_workers=num_workers,
        progress=progress,
        chunk_rows=chunk_rows,
    )
    path = Path(path)
    provenance = cache_provenance(dataset, attack, options.dtype)
    group = _distributed.world()
    if group is not None:
        return _precompute_distributed(dataset, attack, path, provenance, options, *group)
    return _write_file(dataset, attack, path, 0, provenance["dataset"]["length"], provenance, options)


# --------------------------------------------------------------------------- reading


class UAECache(Dataset):
    """A torch Dataset over an HDF5 cache written by :func:`precompute`.

    Items are ``(uae, label)``, or ``(uae, label, success, mi)`` with
    ``return_flags``: ``uae`` a float32 tensor of the sample's shape in [0, 1]
    (float16 caches are converted), ``label`` an int, ``success`` a bool, ``mi``
    a float. The per-row arrays (labels, flags, done mask) are read into memory
    at construction; ``adversarial`` is read on demand through a per-process
    handle, opened lazily (so the object pickles without it and works in
    DataLoader workers), and kept decompressed in memory within
    ``cache_bytes``. Batched access (``__getitems__``, used by DataLoader, and
    :meth:`rows`) reads each touched chunk once; :meth:`preload` reads all rows
    up front so that forked workers share them.

    Args:
        path: the cache file.
        transform: callable applied to each ``uae`` on item access.
        target_transform: callable applied to each label on item access.
        return_flags: also return ``success`` and ``mi``.
        allow_partial: open an unfinished cache; reading a row that is not done
            raises :class:`CacheError`.
        cache_bytes: per-process memory budget for decompressed rows (default
            256 MiB). When the whole ``adversarial`` dataset (in its stored dtype)
            fits, each process keeps a lazily filled copy of it, so reads after a
            chunk's first touch are one in-memory gather; otherwise an LRU of
            decompressed chunks of this size is kept. 0 disables both.

    Raises:
        FileNotFoundError: no file at ``path``.
        CacheError: the file is not a readable uae-augment cache (truncated,
            corrupt, not HDF5, missing datasets), is being written, or is
            unfinished and ``allow_partial`` is False. The message names the path.

    Example:
        >>> import tempfile, os
        >>> from torch import nn
        >>> from uae_augment import GaussianNoise, Reconstruction, load_dataset
        >>> ae = nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.Sigmoid(), nn.Unflatten(1, (1, 8, 8)))
        >>> path = precompute(load_dataset("digits"), GaussianNoise(Reconstruction(ae)),
        ...                   os.path.join(tempfile.mkdtemp(), "c.h5"), progress=False)
        >>> cache = UAECache(path, return_flags=True)
        >>> uae, label, success, mi = cache[0]
        >>> uae.shape, type(label), cache.done == len(cache)
        (torch.Size([1, 8, 8]), <class 'int'>, True)
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        transform: Callable[[torch.Tensor], Any] | None = None,
        target_transform: Callable[[int], Any] | None = None,
        return_flags: bool = False,
        *,
        allow_partial: bool = False,
        cache_bytes: int = READ_CACHE_BYTES,
    ):
        self.path = Path(path)
        self.transform = transform
        self.target_transform = target_transform
        self.return_flags = return_flags
        self.allow_partial = allow_partial
        self.cache_bytes = int(cache_bytes)
        with _open(self.path) as handle:
            self._layout = _read_layout(handle, self.path)
            self._provenance = _read_provenance(handle, self.path)
            self.compression: str | None = handle["adversarial"].compression
            arrays = {name: _read_all(handle[name], self.path) for name in _ROW_FIELDS}
        self._done = torch.from_numpy(arrays["done"])
        self._labels = torch.from_numpy(arrays["label"])
        self._index = torch.from_numpy(arrays["index"])
        self._success = torch.from_numpy(arrays["success"])
        self._mi = torch.from_numpy(arrays["mi"])
        self._criterion = torch.from_numpy(arrays["criterion"])
        if not allow_partial and not bool(self._done.all()):
            raise CacheError(
                f"{self.path} is unfinished: {self.done} of {len(self)} rows done. Resume it with"
                " precompute(..., resume=True) (CLI: rerun the same `uae-augment precompute`),"
                " or pass allow_partial=True to read the done rows"
            )
        self._label_list: list[int] = self._labels.tolist()
        self._reset_handle()
        self._reset_blocks()

    # ------------------------------------------------------------------ pickling / handles

    def _reset_handle(self) -> None:
        self._handle: h5py.File | None = None
        self._pid: int | None = None

    def _reset_blocks(self) -> None:
        # Whole-file mirror when it fits the budget (rows stay in the stored dtype), else an
        # LRU of decompressed chunks. A forked DataLoader worker inherits what its parent
        # loaded (copy-on-write); a pickled copy starts empty.
        self._mirror: np.ndarray | None = None
        self._loaded: np.ndarray | None = None
        self._blocks: collections.OrderedDict[int, np.ndarray] = collections.OrderedDict()
        self._block_bytes = 0

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        for key in ("_handle", "_pid", "_mirror", "_loaded", "_blocks", "_block_bytes"):
            state.pop(key)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._reset_handle()
        self._reset_blocks()

    def _adversarial(self) -> h5py.Dataset:
        if self._handle is None or self._pid != os.getpid():
            self._reset_handle()  # a forked worker never uses its parent's HDF5 handle
            self._handle = _open(self.path)
            self._pid = os.getpid()
        return self._handle["adversarial"]

    def close(self) -> None:
        """Closes this process's file handle and drops its cached rows (reads reopen it)."""
        if self._handle is not None and self._pid == os.getpid():
            self._handle.close()
        self._reset_handle()
        self._reset_blocks()

    def __enter__(self) -> UAECache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ reads

    @property
    def _mirrored(self) -> bool:
        row_bytes = math.prod(self._layout.sample_shape) * np.dtype(self._layout.dtype).itemsize
        return 0 < self._layout.rows * row_bytes <= self.cache_bytes

    def _read_rows(self, start: int, stop: int) -> np.ndarray:
        try:
            return self._adversarial()[start:stop]
        except (OSError, RuntimeError) as error:
            raise CacheError(f"{self.path} is damaged: reading rows {start}..{stop - 1} failed ({error})") from error

    def _load_chunks(self, chunks: np.ndarray) -> None:
        """Reads the given (sorted, unique) chunks into the mirror, consecutive runs at once."""
        assert self._mirror is not None and self._loaded is not None
        missing = chunks[~self._loaded[chunks]]
        if not missing.size:
            return
        runs = np.split(missing, np.flatnonzero(np.diff(missing) > 1) + 1)
        for run in runs:
            start, _ = self._layout.chunk_range(int(run[0]))
            _, stop = self._layout.chunk_range(int(run[-1]))
            self._mirror[start:stop] = self._read_rows(start, stop)
            self._loaded[run] = True

    def _block(self, chunk: int) -> np.ndarray:
        block = self._blocks.get(chunk)
        if block is not None:
            self._blocks.move_to_end(chunk)
            return block
        block = self._read_rows(*self._layout.chunk_range(chunk))
        if self.cache_bytes > 0:
            self._blocks[chunk] = block
            self._block_bytes += block.nbytes
            while self._block_bytes > self.cache_bytes and len(self._blocks) > 1:
                _, evicted = self._blocks.popitem(last=False)
                self._block_bytes -= evicted.nbytes
        return block

    def preload(self) -> UAECache:
        """Reads every done row into this process's memory now (if it fits ``cache_bytes``).

        Call it before creating a DataLoader: forked workers then share the rows
        (copy-on-write) instead of each reading the file. Returns ``self``.
        """
        if not self._mirrored:
            logger.warning(
                "%s: %d rows do not fit cache_bytes=%d; preload() skipped", self.path, len(self), self.cache_bytes
            )
            return self
        done = self._done.numpy()
        chunks = np.unique(np.flatnonzero(done) // self._layout.chunk_rows)
        self._ensure_mirror()
        self._load_chunks(chunks)
        return self

    def _ensure_mirror(self) -> None:
        if self._mirror is None:
            self._mirror = np.empty((self._layout.rows, *self._layout.sample_shape), dtype=self._layout.dtype)
            self._loaded = np.zeros(self._layout.chunks, dtype=bool)

    def _positions(self, indices: Any) -> np.ndarray:
        positions = torch.as_tensor(indices)
        if positions.is_floating_point() or positions.dtype == torch.bool:
            raise TypeError(f"indices must be integers, got dtype {positions.dtype}")
        positions = positions.reshape(-1).long()
        n = len(self)
        if positions.numel() and (int(positions.min()) < -n or int(positions.max()) >= n):
            raise IndexError(f"indices out of range for a cache of {n} rows")
        positions = torch.where(positions < 0, positions + n, positions)
        not_done = positions[~self._done[positions]]
        if not_done.numel():
            raise CacheError(
                f"{self.path}: rows {not_done[:8].tolist()} are not done yet ({self.done} of {n} done);"
                " resume the cache with precompute(..., resume=True)"
            )
        return positions.numpy()

    def _read(self, positions: np.ndarray) -> torch.Tensor:
        """float32 (len(positions), ...) adversarial rows, in the order given."""
        chunk_rows = self._layout.chunk_rows
        if self._mirrored:
            self._ensure_mirror()
            self._load_chunks(np.unique(positions // chunk_rows))
            assert self._mirror is not None
            return torch.from_numpy(self._mirror[positions].astype(np.float32, copy=False))
        out = np.empty((len(positions), *self._layout.sample_shape), dtype=np.float32)
        order = np.argsort(positions, kind="stable")
        ordered = positions[order]
        unique, firsts = np.unique(ordered // chunk_rows, return_index=True)
        bounds = [*firsts.tolist(), len(ordered)]
        for chunk, first, last in zip(unique.tolist(), bounds[:-1], bounds[1:]):
            out[order[first:last]] = self._block(chunk)[ordered[first:last] - chunk * chunk_rows]
        return torch.from_numpy(out)

    def rows(self, indices: Sequence[int] | torch.Tensor | np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Vectorised read of several rows (any order, repeats allowed), without transforms.

        Args:
            indices: row indices (negative ones count from the end).

        Returns:
            ``(adversarial, labels)``: float32 (B, ...) and int64 (B,), in the order of ``indices``.

        Raises:
            IndexError: an index is out of range.
            CacheError: a row is not done, or the file is damaged.
        """
        positions = self._positions(indices)
        return self._read(positions), self._labels[positions].clone()

    def _item(self, position: int, uae: torch.Tensor) -> tuple[Any, ...]:
        label: Any = self._label_list[position]
        sample: Any = uae
        if self.transform is not None:
            sample = self.transform(sample)
        if self.target_transform is not None:
            label = self.target_transform(label)
        if self.return_flags:
            return sample, label, bool(self._success[position]), float(self._mi[position])
        return sample, label

    def __getitem__(self, index: int) -> tuple[Any, ...]:
        positions = self._positions([operator.index(index)])
        return self._item(int(positions[0]), self._read(positions)[0])

    def __getitems__(self, indices: Sequence[int]) -> list[tuple[Any, ...]]:
        """Batched item access (DataLoader calls it with a batch of indices)."""
        positions = self._positions(list(indices))
        uaes = self._read(positions)
        return [self._item(p, uae) for p, uae in zip(positions.tolist(), uaes.unbind(0))]

    def __len__(self) -> int:
        return self._layout.rows

    # ------------------------------------------------------------------ metadata and summaries

    @property
    def provenance(self) -> dict[str, Any]:
        """The provenance record the file was written with (a copy)."""
        return copy.deepcopy(self._provenance)

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """Shape of one UAE, e.g. (1, 28, 28)."""
        return self._layout.sample_shape

    @property
    def dtype(self) -> str:
        """Storage dtype of ``adversarial``: ``"float32"`` or ``"float16"`` (reads are float32)."""
        return self._layout.dtype

    @property
    def chunk_rows(self) -> int:
        """Rows per chunk of ``adversarial``."""
        return self._layout.chunk_rows

    @property
    def done(self) -> int:
        """Number of rows written and marked done."""
        return int(self._done.sum())

    @property
    def complete(self) -> bool:
        """Whether every row is done."""
        return self.done == len(self)

    @property
    def done_mask(self) -> torch.Tensor:
        """(N,) bool: which rows are done."""
        return self._done.clone()

    @property
    def labels(self) -> torch.Tensor:
        """(N,) int64 labels (-1 for rows not done)."""
        return self._labels.clone()

    @property
    def indices(self) -> torch.Tensor:
        """(N,) int64 global dataset index of each row (-1 for rows of an unjoined shard not done)."""
        return self._index.clone()

    @property
    def success(self) -> torch.Tensor:
        """(N,) bool attack success per row (False for rows not done)."""
        return self._success.clone()

    @property
    def mi(self) -> torch.Tensor:
        """(N,) float32 MINE estimate per row (NaN for attacks without MI and rows not done)."""
        return self._mi.clone()

    @property
    def criterion(self) -> torch.Tensor:
        """(N,) float32 attack criterion f_x per row (0 means success; NaN for rows not done)."""
        return self._criterion.clone()

    @property
    def asr(self) -> float:
        """Attack success rate over the done rows (NaN when none is done)."""
        done = self._done
        return float(self._success[done].double().mean()) if bool(done.any()) else float("nan")

    @property
    def mi_summary(self) -> dict[str, float | int | None]:
        """count, mean, std, min, median, max of the finite MI values of the done rows."""
        return _stats(self._mi[self._done])

    def summary(self, bins: int = 10) -> dict[str, Any]:
        """Coverage, ASR, MI statistics and a criterion histogram (JSON-serialisable).

        Args:
            bins: histogram bins over the positive criterion values of the done rows.
        """
        criterion = self._criterion[self._done]
        finite = criterion[torch.isfinite(criterion)]
        positive = finite[finite > 0].double().numpy()
        counts, edges = np.histogram(positive, bins=bins) if positive.size else (np.zeros(0), np.zeros(0))
        return {
            "path": str(self.path),
            "rows": len(self),
            "done": self.done,
            "coverage": self.done / len(self),
            "asr": _finite_or_none(self.asr),
            "mi": self.mi_summary,
            "criterion": {
                **_stats(criterion),
                "zero_fraction": _finite_or_none(float((finite == 0).double().mean())) if finite.numel() else None,
                "histogram_of_positive": {"edges": edges.tolist(), "counts": counts.astype(int).tolist()},
            },
            "sample_shape": list(self.sample_shape),
            "dtype": self.dtype,
            "compression": self.compression,
            "chunk_rows": self.chunk_rows,
            "file_bytes": self.path.stat().st_size,
        }

    def __repr__(self) -> str:
        attack = self._provenance.get("attack", {}).get("attack", "?")
        asr = self.asr
        parts = [
            repr(str(self.path)),
            f"rows={len(self)}",
            f"done={self.done}",
            f"sample_shape={self.sample_shape}",
            f"dtype={self.dtype}",
            f"attack={attack}",
            f"asr={asr:.4f}" if math.isfinite(asr) else "asr=nan",
        ]
        if self.return_flags:
            parts.append("return_flags=True")
        if self.transform is not None:
            parts.append(f"transform={self.transform!r}")
        if self.target_transform is not None:
            parts.append(f"target_transform={self.target_transform!r}")
        return f"{type(self).__name__}({', '.join(parts)})"


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _stats(values: torch.Tensor) -> dict[str, float | int | None]:
    finite = values[torch.isfinite(values)].double()
    if not finite.numel():
        return {"count": 0, "mean": None, "std": None, "min": None, "median": None, "max": None}
    return {
        "count": int(finite.numel()),
        "mean": float(finite.mean()),
        "std": float(finite.std(unbiased=False)),
        "min": float(finite.min()),
        "median": float(finite.median()),
        "max": float(finite.max()),
    }

