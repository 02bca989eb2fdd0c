"""A resumable, shardable HDF5 cache of attack results, and a torch Dataset that reads it.

:func:`precompute` attacks every row of a dataset once and writes the results
into one HDF5 file; :class:`UAECache` reads them back (lazily, per process, so
DataLoader workers work). The file layout (format version 1):

* datasets, all preallocated with N rows and chunked along the sample axis:
  ``adversarial`` (N, ...) float32 or float16 (compressed: lzf, gzip + shuffle,
  or none), ``success`` bool, ``mi`` float32, ``criterion`` float32, ``label``
  int64 (only when the dataset's items have labels: an unlabelled dataset, of
  bare samples, ``(x,)`` tuples or dicts, has no ``label`` dataset), ``index``
  int64 (the row's global dataset index) and ``done`` bool;
* root attributes: ``format``, ``format_version``, ``provenance`` (a JSON
  record: library and torch versions, attack config, seed, model state hash,
  dataset fingerprint (SHA-256 of every row, per field, see
  :func:`dataset_fingerprint`), dtype; plus an ``environment`` part with
  python, h5py, HDF5 and numpy versions and a ``dataset_origin`` part with the
  data set's name and split, both recorded but not compared),
  ``provenance_hash`` (SHA-256 of the compared part) and ``batch_size`` (the
  batch size the file was started with).

Crash safety (a writer may be killed at any moment, e.g. ``kill -9``): every
chunk of ``adversarial`` is written as a whole, once its rows are all attacked;
after each batch the file is flushed, and only then the rows of the chunks it
completed are marked ``done`` (and flushed again). The per-row datasets are uncompressed with their space allocated at
creation, so writing them never touches the file's metadata. A resume attacks
the rows not marked done together with the done rows of their grid batches
(``index // batch_size``), writing only the former, so every row is attacked in
the batch of an uninterrupted run. Files are created under a temporary name and
renamed into place once preallocated, and a lock file ``<path>.lock`` stops a
second writer.

Scale-out: when ``torch.distributed`` is initialised with more than one rank,
every rank attacks a contiguous slice of whole batches into its own (resumable)
shard ``<path>.rank{r}-of-{w}.h5``; after a barrier rank 0 copies the shards
into the final file and removes them. Attacks are per-index deterministic, so
the result equals the single-process one.
"""

from __future__ import annotations

import copy
import logging
import math
import operator
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from .._names import PRECOMPUTE_BATCH_SIZE
from .._validation import ensure_main_process, positive_int
from ..attacks.base import Attack, check_attack
from . import _distributed
from ._cache_format import (
    CHUNK_BYTES,
    COMPRESSIONS,
    DTYPES,
    FINGERPRINT_BLOCKS,
    FORMAT,
    FORMAT_VERSION,
    READ_CACHE_BYTES,
    ROW_FIELDS,
    CacheError,
    CacheLockedError,
    ProvenanceMismatchError,
    cache_provenance,
    check_compression,
    check_dtype,
    dataset_fingerprint,
    open_cache,
    provenance_hash,
    read_all,
    read_layout,
    read_provenance,
    shard_path,
)
from ._cache_reader import READAHEAD_BYTES, AdversarialRows
from ._cache_stats import criterion_summary, finite_or_none, stats
from ._cache_writer import WriteOptions, precompute_distributed, write_file
from ._items import KeyedSamples, dataset_length, parse_item, require_labels

__all__ = [
    "CHUNK_BYTES",
    "COMPRESSIONS",
    "CacheError",
    "CacheLockedError",
    "DTYPES",
    "FINGERPRINT_BLOCKS",
    "FORMAT",
    "FORMAT_VERSION",
    "ProvenanceMismatchError",
    "READAHEAD_BYTES",
    "READ_CACHE_BYTES",
    "UAECache",
    "cache_provenance",
    "dataset_fingerprint",
    "precompute",
    "provenance_hash",
    "shard_path",
]

logger = logging.getLogger(__name__)


def precompute(
    dataset: Dataset,
    attack: Attack,
    path: str | os.PathLike[str],
    *,
    batch_size: int = PRECOMPUTE_BATCH_SIZE,
    resume: bool = True,
    dtype: str = "float32",
    compression: str | None = "lzf",
    num_workers: int = 0,
    progress: bool = True,
    chunk_rows: int | None = None,
    sample_key: str | None = None,
    model_origin: dict[str, Any] | None = None,
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
    round differently for different batch sizes. A resume attacks each batch a
    kill cut again as a whole (writing only its missing rows), so with the same
    ``batch_size`` it is bitwise equal to an uninterrupted run too; another
    ``batch_size`` gives rows within the attack's batch-size tolerance (logged
    as a warning). The dataset is fingerprinted by hashing every row (one read
    of every item, about 2.6 s for 60,000 MNIST rows).

    Args:
        dataset: a map-style dataset of (x, y[, extra...]) items: x a float
            tensor with values in [0, 1], y an integer label (stored in ``label``;
            passed to the attack when it requires labels); or of unlabelled items:
            bare samples x, ``(x,)`` tuples, or dicts with x under ``sample_key``
            (no ``label`` is stored; the attack must not require labels).
        attack: a uae_augment :class:`~uae_augment.attacks.base.Attack`; it runs
            on the device of its models.
        path: the cache file (``.h5``); missing parent folders are created.
        batch_size: rows per DataLoader batch handed to the attack.
        resume: continue or reuse an existing file; False overwrites it.
        dtype: storage dtype of ``adversarial``: ``"float32"`` or ``"float16"``.
        compression: ``"lzf"``, ``"gzip"`` (level 4, with shuffle) or None.
        num_workers: DataLoader workers reading the dataset (the attack itself
            always runs in this process).
        progress: show a tqdm bar of the rows saved (written, flushed and marked done), rate, ETA.
        chunk_rows: rows per chunk of ``adversarial`` (default: about 64 KiB per chunk, at most
            ``batch_size`` rows, so that every batch saves its rows and the bar moves per batch).
        sample_key: the key of the sample in dict items (None for tensors and tuples).
        model_origin: where the models come from, recorded in the provenance but not
            compared (JSON-serialisable, e.g. the CLI's ``{"checkpoint": path,
            "sha256": digest}``; ``uae-augment inspect`` shows it).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        TypeError: ``attack`` is not an Attack, or the items are not bare samples,
            (x[, y, ...]) tuples or dicts with ``sample_key``, with a float tensor x
            and an integer y.
        ValueError: empty dataset, bad options, samples outside [0, 1] (from the
            attack), a supervised attack on unlabelled items, or items of which
            some have labels and some do not.
        ProvenanceMismatchError: the existing file was written for another
            dataset (any row's sample, label or extra entries changed), model
            state, attack config, seed or dtype (the message names the differing
            fields, and for a changed row field its first changed row).
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
    check_attack(attack, "precompute")
    positive_int(batch_size, "batch_size")
    if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
        raise ValueError(f"num_workers must be an int >= 0, got {num_workers!r}")
    if chunk_rows is not None and (not isinstance(chunk_rows, int) or chunk_rows < 1):
        raise ValueError(f"chunk_rows must be a positive int or None, got {chunk_rows!r}")
    options = WriteOptions(
        batch_size=batch_size,
        resume=bool(resume),
        dtype=check_dtype(dtype),
        compression=check_compression(compression),
        num_workers=num_workers,
        progress=progress,
        chunk_rows=chunk_rows,
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if sample_key is not None:
        dataset = KeyedSamples(dataset, sample_key)
    dataset_length(dataset, "precompute")
    require_labels(attack, parse_item(dataset[0], 0).labelled, 0)
    provenance = cache_provenance(dataset, attack, options.dtype, model_origin)
    group = _distributed.world()
    if group is not None:
        return precompute_distributed(dataset, attack, path, provenance, options, *group)
    return write_file(dataset, attack, path, 0, provenance["dataset"]["length"], provenance, options)


# --------------------------------------------------------------------------- reading


class UAECache(Dataset):
    """A torch Dataset over an HDF5 cache written by :func:`precompute`.

    Items are ``(uae, label)``, or ``(uae, label, success, mi)`` with
    ``return_flags``: ``uae`` a float32 tensor of the sample's shape in [0, 1]
    (float16 caches are converted), ``label`` an int, ``success`` a bool, ``mi``
    a float. A cache of an unlabelled dataset (see :attr:`labelled`) mirrors it:
    items are the bare ``uae``, or ``(uae, success, mi)``. The per-row arrays (labels, flags, done mask) are read into memory
    at construction; ``adversarial`` is read on demand through a per-process
    handle, opened lazily (so the object pickles without it and works in
    DataLoader workers), and kept decompressed in memory within
    ``cache_bytes``. Batched access (``__getitems__``, used by DataLoader, and
    :meth:`rows`) reads each touched chunk once; :meth:`preload` reads all rows
    up front so that forked workers share them.

    Args:
        path: the cache file.
        transform: callable applied to each ``uae`` on item access.
        target_transform: callable applied to each label on item access (labelled caches only).
        return_flags: also return ``success`` and ``mi``.
        allow_partial: open an unfinished cache; reading a row that is not done
            raises :class:`CacheError`.
        cache_bytes: memory budget for decompressed rows (default 1 GiB). When
            the whole ``adversarial`` dataset (in its stored dtype) fits, the
            rows are kept in memory, so a batch is one in-memory gather;
            otherwise an LRU of decompressed chunks of this size is kept (per
            process). 0 disables both (every read goes to the file).
        preload: read every done row at construction when they fit
            ``cache_bytes`` (forked DataLoader workers then share them); False
            reads them lazily, per process, as they are first touched.

    Raises:
        FileNotFoundError: no file at ``path``.
        CacheError: the file is not a readable uae-augment cache (truncated,
            corrupt, not HDF5, missing datasets), is being written, or is
            unfinished and ``allow_partial`` is False. The message names the path.
        ValueError: a ``target_transform`` for a cache without labels.

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
        preload: bool = True,
    ):
        self.path = Path(path)
        self.transform = transform
        self.target_transform = target_transform
        self.return_flags = return_flags
        self.allow_partial = allow_partial
        self.cache_bytes = int(cache_bytes)
        with open_cache(self.path) as handle:
            self._layout = read_layout(handle, self.path)
            self._provenance = read_provenance(handle, self.path)
            self.compression: str | None = handle["adversarial"].compression
            arrays = {name: read_all(handle[name], self.path) for name in ROW_FIELDS if name in handle}
        if target_transform is not None and not self._layout.labelled:
            raise ValueError(f"target_transform was given, but {self.path} holds no labels (unlabelled dataset)")
        self._done = torch.from_numpy(arrays["done"])
        self._labels = torch.from_numpy(arrays["label"]) if self._layout.labelled else None
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
        self._label_list: list[int] | None = None if self._labels is None else self._labels.tolist()
        self._done_flags: np.ndarray = arrays["done"]
        self._reader = AdversarialRows(self.path, self._layout, self.cache_bytes)
        if preload and self._reader.mirrored:
            self.preload()

    def close(self) -> None:
        """Closes this process's file handle and drops its cached rows (reads reopen it)."""
        self._reader.close()

    def __enter__(self) -> UAECache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ reads

    def preload(self) -> UAECache:
        """Reads every done row into this process's memory now (if it fits ``cache_bytes``).

        The constructor does this by default (``preload=True``): DataLoader
        workers forked afterwards share the rows (copy-on-write) instead of each
        reading and decompressing the file again at every epoch. The file handle
        is closed afterwards (nothing more needs reading). Returns ``self``.
        """
        if not self._reader.mirrored:
            logger.warning(
                "%s: %d rows do not fit cache_bytes=%d; preload() skipped",
                self.path,
                len(self),
                self.cache_bytes,
            )
            return self
        self._reader.preload(self._done.numpy())
        return self

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

    def rows(self, indices: Sequence[int] | torch.Tensor | np.ndarray) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Vectorised read of several rows (any order, repeats allowed), without transforms.

        Args:
            indices: row indices (negative ones count from the end).

        Returns:
            ``(adversarial, labels)``: float32 (B, ...) and int64 (B,) (None for an
            unlabelled cache), in the order of ``indices``.

        Raises:
            IndexError: an index is out of range.
            CacheError: a row is not done, or the file is damaged.
        """
        positions = self._positions(indices)
        labels = None if self._labels is None else self._labels[positions].clone()
        return self._reader.read(positions), labels

    def _item(self, position: int, uae: torch.Tensor) -> Any:
        sample: Any = uae
        if self.transform is not None:
            sample = self.transform(sample)
        label_part: tuple[Any, ...] = ()
        if self._label_list is not None:
            label = self._label_list[position]
            label_part = (self.target_transform(label) if self.target_transform is not None else label,)
        if self.return_flags:
            return sample, *label_part, bool(self._success[position]), float(self._mi[position])
        return (sample, *label_part) if label_part else sample

    def __getitem__(self, index: int) -> Any:
        position = operator.index(index)
        if -len(self) <= position < 0:
            position += len(self)
        if 0 <= position < len(self) and self._done_flags[position]:  # fast path: a row already in memory
            row = self._reader.loaded_row(position)
            if row is not None:
                return self._item(position, row)
        positions = self._positions([position])
        return self._item(position, self._reader.read(positions)[0])

    def __getitems__(self, indices: Sequence[int]) -> list[Any]:
        """Batched item access (DataLoader calls it with a batch of indices)."""
        positions = self._positions(list(indices))
        uaes = self._reader.read(positions)
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
    def labelled(self) -> bool:
        """Whether the file stores labels (False for a cache of an unlabelled dataset)."""
        return self._layout.labelled

    @property
    def labels(self) -> torch.Tensor | None:
        """(N,) int64 labels (-1 for rows not done), or None for an unlabelled cache."""
        return None if self._labels is None else self._labels.clone()

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
        return stats(self._mi[self._done])

    def summary(self, bins: int = 10) -> dict[str, Any]:
        """Coverage, ASR, MI statistics and a criterion histogram (JSON-serialisable).

        Args:
            bins: histogram bins over the positive criterion values of the done rows.
        """
        return {
            "path": str(self.path),
            "rows": len(self),
            "done": self.done,
            "coverage": self.done / len(self),
            "asr": finite_or_none(self.asr),
            "mi": self.mi_summary,
            "criterion": criterion_summary(self._criterion[self._done], bins),
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
