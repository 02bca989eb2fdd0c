"""AdversarialRows, the cache's row reader: mirror vs LRU vs file, budgets and pickling."""

from __future__ import annotations

import pickle
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from tests.data._precompute_worker import digits_rows, make_attack
from uae_augment.data._cache_format import open_cache, read_layout
from uae_augment.data._cache_reader import AdversarialRows
from uae_augment.data.cache import precompute

ROW_BYTES = 64 * 4  # one float32 (1, 8, 8) row


@pytest.fixture(scope="module")
def cache_path(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("reader") / "gaussian.h5"
    return precompute(digits_rows(100), make_attack("gaussian"), path, batch_size=25, chunk_rows=8, progress=False)


def _reader(path: Path, cache_bytes: int) -> AdversarialRows:
    with open_cache(path) as handle:
        layout = read_layout(handle, path)
    return AdversarialRows(path, layout, cache_bytes)


@pytest.mark.parametrize("cache_bytes", [100 * ROW_BYTES, 3 * 8 * ROW_BYTES, 0], ids=["mirror", "lru", "file"])
def test_every_path_reads_the_stored_rows_in_the_order_given(cache_path, cache_bytes):
    with h5py.File(cache_path, "r") as handle:
        stored = torch.from_numpy(handle["adversarial"][:])
    reader = _reader(cache_path, cache_bytes)
    assert reader.mirrored == (cache_bytes == 100 * ROW_BYTES)
    positions = np.array([99, 3, 50, 3, 0, 17, 16, 64])
    assert torch.equal(reader.read(positions), stored[positions])
    assert torch.equal(reader.read(np.arange(100)), stored)
    assert reader._block_bytes <= max(cache_bytes, 8 * ROW_BYTES)  # the LRU keeps at least one chunk
    reader.close()


def test_loaded_row_needs_no_io_and_a_pickled_copy_starts_empty(cache_path):
    reader = _reader(cache_path, 100 * ROW_BYTES)
    assert reader.loaded_row(5) is None  # nothing read yet
    reader.read(np.array([5]))
    assert reader._handle is not None and reader.loaded_row(5) is not None
    assert reader.loaded_row(99) is not None  # read-ahead: one 4 MiB span holds the whole 25.6 KB file
    restored = pickle.loads(pickle.dumps(reader))
    assert restored._handle is None and restored._mirror is None and not restored._blocks
    assert torch.equal(restored.read(np.array([5])), reader.read(np.array([5])))
    restored.preload(np.ones(100, dtype=bool))
    assert restored._handle is None and restored.loaded_row(99) is not None
    reader.close()
    assert reader._mirror is None
