"""How a :class:`~uae_augment.data.cache.UAECache` reads its ``adversarial`` rows (private).

One :class:`AdversarialRows` per cache owns the per-process HDF5 handle and the
decompressed rows kept in memory within ``cache_bytes``: a whole-file mirror
when every row fits (filled chunk by chunk, with read-ahead), else an LRU of
decompressed chunks. A forked DataLoader worker inherits what its parent loaded
(copy-on-write) but never its handle; a pickled copy starts empty.
"""

from __future__ import annotations

import collections
import math
import os
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

from ._cache_format import CacheError, Layout, open_cache

READAHEAD_BYTES = 4 * 1024 * 1024
"""Rows a :class:`UAECache` reads at once into its in-memory copy (aligned spans of chunks)."""

_PROCESS_STATE = ("_handle", "_pid", "_mirror", "_loaded", "_blocks", "_block_bytes")


class AdversarialRows:
    """Reads rows of a cache's ``adversarial`` dataset as float32, through a mirror or an LRU.

    Args:
        path: the cache file.
        layout: its layout (rows, sample shape, stored dtype, chunk rows).
        cache_bytes: memory budget for decompressed rows; 0 reads every row from the file.
    """

    def __init__(self, path: Path, layout: Layout, cache_bytes: int):
        self.path = path
        self.layout = layout
        self.cache_bytes = cache_bytes
        self._reset_handle()
        self._reset_memory()

    def _reset_handle(self) -> None:
        self._handle: h5py.File | None = None
        self._pid: int | None = None

    def _reset_memory(self) -> None:
        self._mirror: np.ndarray | None = None
        self._loaded: np.ndarray | None = None
        self._blocks: collections.OrderedDict[int, np.ndarray] = collections.OrderedDict()
        self._block_bytes = 0

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        for key in _PROCESS_STATE:
            state.pop(key)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._reset_handle()
        self._reset_memory()

    @property
    def mirrored(self) -> bool:
        """Whether every row (in the stored dtype) fits ``cache_bytes``: rows are then mirrored whole."""
        row_bytes = math.prod(self.layout.sample_shape) * np.dtype(self.layout.dtype).itemsize
        return 0 < self.layout.rows * row_bytes <= self.cache_bytes

    def close_handle(self) -> None:
        """Closes this process's file handle (a later read reopens it)."""
        if self._handle is not None and self._pid == os.getpid():
            self._handle.close()
        self._reset_handle()

    def close(self) -> None:
        """Closes the handle and drops every row kept in memory."""
        self.close_handle()
        self._reset_memory()

    def preload(self, done: np.ndarray) -> None:
        """Mirrors the chunks holding the rows marked in ``done`` (N,) bool, then closes the handle."""
        chunks = np.unique(np.flatnonzero(done) // self.layout.chunk_rows)
        self._ensure_mirror()
        self._load_chunks(chunks)
        self.close_handle()

    def loaded_row(self, position: int) -> torch.Tensor | None:
        """Row ``position`` as float32 when its chunk is already in the mirror, else None (no I/O)."""
        mirror, loaded = self._mirror, self._loaded
        if mirror is None or loaded is None or not loaded[position // self.layout.chunk_rows]:
            return None
        return torch.from_numpy(mirror[position].astype(np.float32))

    def read(self, positions: np.ndarray) -> torch.Tensor:
        """float32 (len(positions), ...) rows at ``positions`` (valid, done), in the order given.

        Raises:
            CacheError: the file is damaged.
        """
        chunk_rows = self.layout.chunk_rows
        if self.mirrored:
            self._ensure_mirror()
            self._load_chunks(np.unique(positions // chunk_rows))
            assert self._mirror is not None
            return torch.from_numpy(self._mirror[positions].astype(np.float32, copy=False))
        out = np.empty((len(positions), *self.layout.sample_shape), dtype=np.float32)
        order = np.argsort(positions, kind="stable")
        ordered = positions[order]
        unique, firsts = np.unique(ordered // chunk_rows, return_index=True)
        bounds = [*firsts.tolist(), len(ordered)]
        for chunk, first, last in zip(unique.tolist(), bounds[:-1], bounds[1:]):
            out[order[first:last]] = self._block(chunk)[ordered[first:last] - chunk * chunk_rows]
        return torch.from_numpy(out)

    # ------------------------------------------------------------------ file access

    def _adversarial(self) -> h5py.Dataset:
        if self._handle is None or self._pid != os.getpid():
            self._reset_handle()  # a forked worker never uses its parent's HDF5 handle
            self._handle = open_cache(self.path)
            self._pid = os.getpid()
        return self._handle["adversarial"]

    def _read_rows(self, start: int, stop: int) -> np.ndarray:
        try:
            return self._adversarial()[start:stop]
        except (OSError, RuntimeError) as error:
            raise CacheError(f"{self.path} is damaged: reading rows {start}..{stop - 1} failed ({error})") from error

    # ------------------------------------------------------------------ the mirror

    def _ensure_mirror(self) -> None:
        if self._mirror is None:
            self._mirror = np.empty((self.layout.rows, *self.layout.sample_shape), dtype=self.layout.dtype)
            self._loaded = np.zeros(self.layout.chunks, dtype=bool)

    def _load_chunks(self, chunks: np.ndarray) -> None:
        """Reads the given (sorted, unique) chunks into the mirror, with read-ahead.

        A missing chunk brings in its whole aligned span of ``READAHEAD_BYTES``
        (one HDF5 call per span instead of one per chunk).
        """
        assert self._mirror is not None and self._loaded is not None
        missing = chunks[~self._loaded[chunks]]
        if not missing.size:
            return
        chunk_bytes = self._mirror[: self.layout.chunk_rows].nbytes
        span = max(1, READAHEAD_BYTES // max(chunk_bytes, 1))
        for first in np.unique(missing // span).tolist():
            chunk_ids = np.arange(first * span, min((first + 1) * span, self.layout.chunks))
            start, _ = self.layout.chunk_range(int(chunk_ids[0]))
            _, stop = self.layout.chunk_range(int(chunk_ids[-1]))
            self._mirror[start:stop] = self._read_rows(start, stop)
            self._loaded[chunk_ids] = True

    # ------------------------------------------------------------------ the LRU

    def _block(self, chunk: int) -> np.ndarray:
        block = self._blocks.get(chunk)
        if block is not None:
            self._blocks.move_to_end(chunk)
            return block
        block = self._read_rows(*self.layout.chunk_range(chunk))
        if self.cache_bytes > 0:
            self._blocks[chunk] = block
            self._block_bytes += block.nbytes
            while self._block_bytes > self.cache_bytes and len(self._blocks) > 1:
                _, evicted = self._blocks.popitem(last=False)
                self._block_bytes -= evicted.nbytes
        return block
