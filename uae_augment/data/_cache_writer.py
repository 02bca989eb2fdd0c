"""The cache writer: attacking rows into a file, resuming it, and joining shards (private)."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from .._progress import Progress
from ..attacks.base import Attack
from . import _distributed, _lock
from ._cache_format import (
    ROW_FIELDS,
    SHARD_KEY,
    CacheError,
    CacheLockedError,
    Layout,
    auto_chunk_rows,
    check_provenance,
    create_file,
    open_cache,
    open_for_writing,
    provenance_hash,
    read_all,
    read_layout,
    read_provenance,
    shard_path,
)
from ._items import require_labels, split_item, stack_batch

logger = logging.getLogger(__name__)

BATCH_SIZE_KEY = "batch_size"
"""Root attribute: the batch size a file was started with (a resume with another one warns)."""

# --------------------------------------------------------------------------- reading the rows to attack


class _Rows(Dataset):
    """The rows still to attack: item j is (global index, x, y or None) of ``dataset[indices[j]]``."""

    def __init__(self, dataset: Dataset, indices: np.ndarray):
        self.dataset = dataset
        self.indices = indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, j: int) -> tuple[int, torch.Tensor, int | None]:
        index = int(self.indices[j])
        x, y = split_item(self.dataset[index], index)
        return index, x, y


def _collate(
    items: list[tuple[int, torch.Tensor, int | None]],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(index, x, y) of a batch of rows; y is None when the rows have no labels."""
    positions = [i for i, _, _ in items]
    index = torch.tensor(positions, dtype=torch.long)
    x, y = stack_batch([x for _, x, _ in items], [y for _, _, y in items], positions)
    return index, x.float(), y


# --------------------------------------------------------------------------- writing


class _ChunkWriter:
    """Collects attacked rows and writes each ``adversarial`` chunk once, when it is complete."""

    def __init__(self, handle: h5py.File, layout: Layout, done: np.ndarray, path: Path):
        self.handle = handle
        self.fields = layout.result_fields
        self.datasets = {name: handle[name] for name in (*self.fields, "done")}
        self.layout = layout
        self.done = done
        self.path = path
        self.pending: dict[int, dict[str, np.ndarray]] = {}
        self.missing: dict[int, int] = {}

    def add(self, positions: np.ndarray, values: dict[str, np.ndarray]) -> int:
        """Buffers a batch of rows; writes the chunks it completes, flushes, then marks them done.

        Rows already done are skipped (a resume re-attacks the done rows of a cut
        batch only to give its other rows their batch). Only chunks that are not
        done are ever (re)written, so space HDF5 frees and reuses between two
        flushes never belongs to a chunk marked done.

        Args:
            positions: (B,) rows of the file (global index minus the file's start).
            values: the arrays of :data:`RESULT_FIELDS`, each with B rows.

        Returns:
            How many rows this call marked done (written and flushed).
        """
        new = ~self.done[positions]
        if not new.all():
            positions, values = positions[new], {name: value[new] for name, value in values.items()}
        chunk_of = positions // self.layout.chunk_rows
        complete: list[int] = []
        for chunk in np.unique(chunk_of):
            chunk = int(chunk)
            start, _ = self.layout.chunk_range(chunk)
            rows = chunk_of == chunk
            buffer = self.pending.get(chunk)
            if buffer is None:
                buffer = self.pending[chunk] = self._start(chunk)
            for name in self.fields:
                buffer[name][positions[rows] - start] = values[name][rows]
            self.missing[chunk] -= int(rows.sum())
            if self.missing[chunk] == 0:
                self._write(chunk, self.pending.pop(chunk))
                complete.append(chunk)
        if not complete:
            return 0
        self.handle.flush()
        for chunk in complete:
            start, stop = self.layout.chunk_range(chunk)
            self.datasets["done"][start:stop] = True
            self.done[start:stop] = True
        self.handle.flush()
        logger.debug(
            "%s: rows %d..%d written and marked done",
            self.path.name,
            self.layout.chunk_range(complete[0])[0],
            self.layout.chunk_range(complete[-1])[1] - 1,
        )
        return sum(stop - start for start, stop in map(self.layout.chunk_range, complete))

    def _start(self, chunk: int) -> dict[str, np.ndarray]:
        start, stop = self.layout.chunk_range(chunk)
        self.missing[chunk] = int((~self.done[start:stop]).sum())
        if self.missing[chunk] < stop - start:  # some rows are done already: keep them
            return {name: self.datasets[name][start:stop] for name in self.fields}
        shape = (stop - start, *self.layout.sample_shape)
        buffer = {"adversarial": np.empty(shape, dtype=self.layout.dtype)}
        for name in self.fields[1:]:
            buffer[name] = np.empty(stop - start, dtype=ROW_FIELDS[name][0])
        return buffer

    def _write(self, chunk: int, buffer: dict[str, np.ndarray]) -> None:
        start, stop = self.layout.chunk_range(chunk)
        for name in self.fields:
            self.datasets[name][start:stop] = buffer[name]
        del self.missing[chunk]

    def close(self) -> None:
        if self.pending:
            raise RuntimeError(f"internal error: chunks {sorted(self.pending)} were left incomplete")


@dataclass(frozen=True)
class WriteOptions:
    batch_size: int
    resume: bool
    dtype: str
    compression: str | None
    num_workers: int
    progress: bool
    chunk_rows: int | None


def new_chunk_rows(sample_shape: tuple[int, ...], rows: int, options: WriteOptions) -> int:
    """Rows per chunk of a new file: ``options.chunk_rows``, else about ``CHUNK_BYTES`` but at
    most one batch, so that every batch completes (and saves) its chunks and the bar moves
    once per batch."""
    return options.chunk_rows or min(auto_chunk_rows(sample_shape, options.dtype, rows), options.batch_size)


def finished_and_matching(path: Path, provenance: dict[str, Any]) -> bool:
    """Whether ``path`` is a finished cache with this provenance (no lock needed to reuse it).

    Raises:
        ProvenanceMismatchError: the file is for another configuration.
        CacheError: the file is damaged.
    """
    if not path.exists():
        return False
    try:
        handle = open_cache(path)
    except CacheLockedError:
        return False  # being written: the lock (taken next) gives the precise error
    with handle:
        check_provenance(path, read_provenance(handle, path), provenance)
        return bool(read_all(handle["done"], path).all())


def write_file(
    dataset: Dataset,
    attack: Attack,
    path: Path,
    start: int,
    stop: int,
    provenance: dict[str, Any],
    options: WriteOptions,
) -> Path:
    """Attacks rows [start, stop) of ``dataset`` into ``path`` (created, resumed or reused)."""
    if options.resume and finished_and_matching(path, provenance):
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
    options: WriteOptions,
) -> tuple[Layout, np.ndarray]:
    """Creates or checks the file (holding its lock); returns its layout and the rows to do."""
    if options.resume and path.exists():
        with open_cache(path) as handle:
            check_provenance(path, read_provenance(handle, path), provenance)
            layout = read_layout(handle, path)
            done = read_all(handle["done"], path)
            started_with = handle.attrs.get(BATCH_SIZE_KEY)
        logger.info("resuming %s: %d of %d rows done", path, int(done.sum()), layout.rows)
        if started_with is not None and int(started_with) != options.batch_size and done.any():
            logger.warning(
                "%s was started with batch_size=%d, resumed with batch_size=%d: the rows may not be bitwise"
                " those of one uninterrupted run (resume with batch_size=%d for that)",
                path,
                started_with,
                options.batch_size,
                started_with,
            )
        return layout, np.flatnonzero(~done)
    rows = stop - start
    sample_shape = tuple(provenance["dataset"]["sample_shape"])
    chunk_rows = new_chunk_rows(sample_shape, rows, options)
    labelled = split_item(dataset[start], start)[1] is not None
    layout = Layout(rows, sample_shape, options.dtype, min(chunk_rows, rows), labelled)
    create_file(path, layout, provenance, options.compression)
    with open_for_writing(path) as handle:
        handle["index"][:] = np.arange(start, stop)
        handle.attrs[BATCH_SIZE_KEY] = options.batch_size
    return layout, np.arange(rows)


def whole_batches(rows: np.ndarray, start: int, stop: int, batch_size: int) -> np.ndarray:
    """Every global row in [start, stop) of the grid batches (``index // batch_size``) that hold ``rows``.

    A resume attacks these: the done rows of a batch cut by a kill are attacked
    again with the rest of their batch (and not written), so every row is
    attacked in the batch of an uninterrupted run.

    Args:
        rows: sorted global rows still to do.

    Returns:
        Sorted global rows, a superset of ``rows``.
    """
    cells = np.unique(rows // batch_size).tolist()
    if not cells:
        return rows
    return np.concatenate([np.arange(max(c * batch_size, start), min((c + 1) * batch_size, stop)) for c in cells])


class GridBatches:
    """Positions in ``indices`` (sorted global rows) grouped by ``index // batch_size``, lazily.

    Batches sit on one global grid, so a sharded run and a resumed run (which
    attacks :func:`whole_batches`) hand the attack exactly the batches of one
    uninterrupted run (bitwise equal results even where kernels round
    differently per batch size).
    Used as a DataLoader ``batch_sampler``.
    """

    def __init__(self, indices: np.ndarray, batch_size: int):
        cells = indices // batch_size
        self.bounds = [0, *(np.flatnonzero(np.diff(cells)) + 1).tolist(), len(indices)]

    def __len__(self) -> int:
        return len(self.bounds) - 1

    def __iter__(self) -> Iterator[list[int]]:
        for start, stop in zip(self.bounds[:-1], self.bounds[1:]):
            yield list(range(start, stop))


def _attack_rows(
    dataset: Dataset,
    attack: Attack,
    path: Path,
    layout: Layout,
    start: int,
    todo: np.ndarray,
    options: WriteOptions,
) -> None:
    rows = whole_batches(start + todo, start, start + layout.rows, options.batch_size)
    if rows.size > todo.size:
        logger.info(
            "%s: attacking %d done rows again with the rest of their batch",
            path,
            rows.size - todo.size,
        )
    loader = DataLoader(
        _Rows(dataset, rows),
        batch_sampler=GridBatches(rows, options.batch_size),
        num_workers=options.num_workers,
        collate_fn=_collate,
    )
    device = attack.device()
    bar = Progress(  # counts rows saved (written, flushed and marked done), once per batch
        layout.rows,
        f"precompute {path.name} (rows saved)",
        unit="row",
        enabled=options.progress,
        initial=layout.rows - todo.size,
        preset=getattr(attack, "preset", None),
        log=logger,
        dynamic_ncols=True,
    )
    # Start the workers before the file is opened for writing: no process forks with it open.
    batches = iter(loader)
    with bar, open_for_writing(path) as handle:
        done = handle["done"][...]
        writer = _ChunkWriter(handle, layout, done, path)
        for index, x, y in batches:
            _check_labels(attack, y, layout, int(index[0]), path)
            labels = y.to(device) if attack.requires_labels and y is not None else None
            result = attack(x.to(device), labels, index=index)
            adversarial = result.adversarial.detach().cpu()
            if tuple(adversarial.shape) != (len(index), *layout.sample_shape):
                raise ValueError(
                    f"{type(attack).__name__} returned adversarial examples of shape"
                    f" {tuple(adversarial.shape)} for inputs of shape {tuple(x.shape)}"
                )
            values = {
                "adversarial": adversarial.numpy().astype(layout.dtype, copy=False),
                "success": result.success.detach().cpu().numpy().astype(bool),
                "mi": result.mi.detach().cpu().float().numpy(),
                "criterion": result.criterion.detach().cpu().float().numpy(),
                "index": index.numpy(),
            }
            if y is not None:
                values["label"] = y.numpy()
            bar.update(writer.add(index.numpy() - start, values))
        writer.close()
    logger.info("%s: all %d rows done", path, layout.rows)


def _check_labels(attack: Attack, y: torch.Tensor | None, layout: Layout, first: int, path: Path) -> None:
    """Raises ValueError when a batch's labels do not fit the file or the attack."""
    require_labels(attack, y is not None, first)
    if (y is not None) != layout.labelled:
        raise ValueError(
            f"item {first} of the dataset {'has a label' if y is not None else 'has no label'}, but"
            f" {path} {'stores' if layout.labelled else 'has no'} labels (from the first row it was"
            " created with): the items of a dataset must all have labels or all have none"
        )


def _join(
    path: Path,
    shards: list[tuple[Path, int, int]],
    provenance: dict[str, Any],
    options: WriteOptions,
) -> None:
    """Copies finished shards (path, start, stop) into the final file ``path`` and removes them."""
    try:
        owner = _lock.acquire(path)
    except _lock.LockHeldError as error:
        raise CacheLockedError(str(error)) from None
    try:
        handles = [open_cache(shard) for shard, _, _ in shards]
        try:
            for handle, (shard, _, _) in zip(handles, shards):
                if not read_all(handle["done"], shard).all():
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
    options: WriteOptions,
) -> None:
    rows = ranges[-1][1]
    sample_shape = tuple(provenance["dataset"]["sample_shape"])
    chunk_rows = new_chunk_rows(sample_shape, rows, options)
    labelled = {read_layout(handle, Path(handle.filename)).labelled for handle in handles}
    if len(labelled) > 1:
        raise CacheError(f"the shards of {path} disagree on whether the dataset has labels")
    layout = Layout(rows, sample_shape, options.dtype, min(chunk_rows, rows), labelled.pop())
    staging = path.with_name(f".{path.name}.joining-{os.getpid()}")
    try:
        create_file(staging, layout, provenance, options.compression)
        with h5py.File(staging, "r+") as final:
            for name in layout.result_fields[1:]:
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


def precompute_distributed(
    dataset: Dataset,
    attack: Attack,
    path: Path,
    provenance: dict[str, Any],
    options: WriteOptions,
    rank: int,
    world_size: int,
) -> Path:
    _distributed.same_on_every_rank("precompute: provenance", provenance_hash(provenance))
    finished = _distributed.on_rank0(
        "checking the final cache",
        lambda: options.resume and finished_and_matching(path, provenance),
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
        SHARD_KEY: {"rank": rank, "world_size": world_size, "start": start, "stop": stop},
    }
    shard_options = options if rank == 0 else _replace(options, progress=False)
    _distributed.every_rank(
        f"attacking the rows of the shards {path}.rank*-of-{world_size}.h5",
        lambda: (
            write_file(dataset, attack, mine, start, stop, shard_provenance, shard_options) if stop > start else mine
        ),
    )
    _distributed.on_rank0(f"joining the shards into {path}", lambda: _join(path, shards, provenance, options))
    return path


def _replace(options: WriteOptions, **changes: Any) -> WriteOptions:
    values = {**options.__dict__, **changes}
    return WriteOptions(**values)
