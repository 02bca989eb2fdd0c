"""The cache file format: constants, errors, provenance records, creating and opening files.

See :mod:`uae_augment.data.cache` for the layout; this module is private.
"""

from __future__ import annotations

import collections
import hashlib
import json
import logging
import math
import os
import platform
import socket
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
from torch.utils.data import Dataset, Subset

from .._model_state import state_hash
from .._version import __version__
from ..attacks.base import Attack, check_attack
from ._items import dataset_length, integer_label, parse_item

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
READ_CACHE_BYTES = 1024 * 1024 * 1024
"""Default memory budget of a :class:`UAECache` for decompressed rows (1 GiB: MNIST or CIFAR-10 in float32)."""
FINGERPRINT_BLOCKS = 128
"""Most row blocks of the dataset fingerprint (each has a short digest, to name the first differing rows)."""
BLOCK_DIGEST_CHARS = 12
"""Hex characters kept of each block digest (the full per-field SHA-256 decides equality)."""
GZIP_LEVEL = 4

ROW_FIELDS: dict[str, tuple[np.dtype, Any]] = {
    "success": (np.dtype(bool), False),
    "mi": (np.dtype(np.float32), np.float32("nan")),
    "criterion": (np.dtype(np.float32), np.float32("nan")),
    "label": (np.dtype(np.int64), -1),
    "index": (np.dtype(np.int64), -1),
    "done": (np.dtype(bool), False),
}
RESULT_FIELDS = ("adversarial", "success", "mi", "criterion", "label", "index")
LABEL_FIELD = "label"
"""The one optional dataset: stored only when the dataset's items have labels."""
ENVIRONMENT_KEY = "environment"
ORIGIN_KEY = "dataset_origin"
MODEL_ORIGIN_KEY = "model_origin"
RECORDED_ONLY = (ENVIRONMENT_KEY, ORIGIN_KEY, MODEL_ORIGIN_KEY)
"""Provenance parts that are recorded but not compared (they do not change the rows)."""
SHARD_KEY = "shard"


class CacheError(ValueError):
    """A cache file is missing parts, unreadable, unfinished, locked or does not match."""


class CacheLockedError(CacheError):
    """Another live process is writing the cache (its lock file exists)."""


class ProvenanceMismatchError(CacheError):
    """An existing cache was written for another dataset, model, attack, seed or dtype."""


for _error in (CacheError, CacheLockedError, ProvenanceMismatchError):
    _error.__module__ = "uae_augment.data.cache"  # where users import them from


# --------------------------------------------------------------------------- provenance


def dataset_fingerprint(dataset: Dataset) -> dict[str, Any]:
    """The identity of a dataset: length, sample shape and SHA-256 digests of every row, per field.

    Every row counts: the samples (as float32, with their shapes), the labels
    and each extra item entry are hashed into one digest per field
    (``"sample"``, ``"label"``, ``"extra[k]"``), so a change to any row is
    detected whatever the dataset's size. Rows are hashed in
    ``block_rows``-row blocks (at most :data:`FINGERPRINT_BLOCKS` blocks; one
    row per block up to that many rows); the short per-block digests let a
    mismatch name the first differing rows. Costs one read of every item.

    Args:
        dataset: a map-style dataset of (x, y[, extra...]) items, x a float tensor.

    Returns:
        ``{"length", "sample_shape", "rows_hashed", "block_rows", "sha256":
        {field: hex}, "blocks": {field: [short hex per block]}}`` (JSON-serialisable).

    Raises:
        ValueError: if the dataset is empty.
        TypeError: if its items are not (x, y, ...) with a float tensor x and an integer y.

    Example:
        >>> from uae_augment import load_dataset
        >>> fp = dataset_fingerprint(load_dataset("digits"))
        >>> fp["length"], fp["sample_shape"], fp["rows_hashed"], sorted(fp["sha256"])
        (1437, [1, 8, 8], 1437, ['label', 'sample'])
    """
    length = dataset_length(dataset)
    block_rows = math.ceil(length / FINGERPRINT_BLOCKS)
    blocks: dict[str, list[str]] = {}
    shape: tuple[int, ...] | None = None
    for block, first in enumerate(range(0, length, block_rows)):
        hashers: dict[str, Any] = collections.defaultdict(hashlib.sha256)
        for position in range(first, min(first + block_rows, length)):
            item = dataset[position]
            parsed = parse_item(item, position)
            x = parsed.sample
            y = None if parsed.label is None else integer_label(parsed.label, position)
            shape = tuple(x.shape) if shape is None else shape
            hashers["sample"].update(f"{tuple(x.shape)};".encode())
            hashers["sample"].update(x.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
            hashers["label"].update(f"{y!r};".encode())
            for k, value in enumerate(parsed.extras):
                hashers[f"extra[{k}]"].update(_value_bytes(value))
        for name in hashers.keys() - blocks.keys():  # a field first seen in this block: empty before
            blocks[name] = [_EMPTY_DIGEST] * block
        for name, digests in blocks.items():
            digests.append(hashers[name].hexdigest() if name in hashers else _EMPTY_DIGEST)
    assert shape is not None
    return {
        "length": length,
        "sample_shape": list(shape),
        "rows_hashed": length,
        "block_rows": block_rows,
        "sha256": {name: hashlib.sha256("".join(d).encode()).hexdigest() for name, d in sorted(blocks.items())},
        "blocks": {name: [d[:BLOCK_DIGEST_CHARS] for d in digests] for name, digests in sorted(blocks.items())},
    }


_EMPTY_DIGEST = hashlib.sha256().hexdigest()


def _value_bytes(value: Any) -> bytes:
    """Canonical bytes of an extra item entry: dtype, shape and data of arrays, else its repr."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().contiguous()
        data = value.reshape(-1).view(torch.uint8).numpy().tobytes() if value.numel() else b""
        return f"tensor:{value.dtype}:{tuple(value.shape)};".encode() + data
    if isinstance(value, np.ndarray) and value.dtype != object:
        return f"ndarray:{value.dtype}:{value.shape};".encode() + np.ascontiguousarray(value).tobytes()
    return f"{type(value).__name__}:{value!r};".encode()


def dataset_origin(dataset: Dataset) -> dict[str, Any] | None:
    """``{"name", "split", "subset"}`` of a :func:`load_dataset` set (or a Subset of one), else None."""
    subset = False
    while isinstance(dataset, Subset):
        dataset, subset = dataset.dataset, True
    name = getattr(dataset, "name", None)
    if not isinstance(name, str):
        return None
    split = getattr(dataset, "split", None)
    return {"name": name, "split": split if isinstance(split, str) else None, "subset": subset}


def cache_provenance(
    dataset: Dataset,
    attack: Attack,
    dtype: str = "float32",
    model_origin: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The provenance record :func:`precompute` writes for ``(dataset, attack, dtype)``.

    Everything except the ``"environment"``, ``"dataset_origin"`` (data-set
    name and split, when known) and ``"model_origin"`` (``model_origin``, e.g.
    the checkpoint file the CLI loaded) parts is compared on resume; two runs
    with equal records produce equal rows.

    Raises:
        TypeError: if ``attack`` is not a uae_augment ``Attack`` or the items are malformed.
        ValueError: on an empty dataset or an unknown ``dtype``.
    """
    check_attack(attack, "cache_provenance")
    dtype = check_dtype(dtype)
    return normalise(
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
            **({ORIGIN_KEY: origin} if (origin := dataset_origin(dataset)) else {}),
            **({MODEL_ORIGIN_KEY: model_origin} if model_origin else {}),
            ENVIRONMENT_KEY: {
                "python": platform.python_version(),
                "h5py": h5py.__version__,
                "hdf5": h5py.version.hdf5_version,
                "numpy": np.__version__,
                "host": socket.gethostname(),
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            },
        }
    )


def normalise(record: Any) -> Any:
    """A JSON round trip: tuples become lists, non-JSON values their repr."""
    return json.loads(json.dumps(record, sort_keys=True, default=repr))


def identity_part(record: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k not in RECORDED_ONLY}


def provenance_hash(record: dict[str, Any]) -> str:
    """SHA-256 of the compared part of a provenance record (canonical JSON)."""
    text = json.dumps(identity_part(record), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def differences(stored: Any, expected: Any, prefix: str = "") -> list[str]:
    if isinstance(stored, dict) and isinstance(expected, dict):
        found: list[str] = []
        for key in sorted(set(stored) | set(expected)):
            name = f"{prefix}{key}"
            if key not in stored or key not in expected:
                side = "file" if key in stored else "now"
                found.append(f"{name} (only in the {side}'s record)")
            else:
                found.extend(differences(stored[key], expected[key], f"{name}."))
        return found
    if stored == expected:
        return []
    return [f"{prefix.rstrip('.')} (file: {_short(stored)}, now: {_short(expected)})"]


def _short(value: Any, limit: int = 60) -> str:
    text = json.dumps(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def dataset_differences(stored: Any, expected: Any) -> list[str]:
    """The differing fields of two dataset fingerprints, each sample/label/extra field with its first differing rows.

    Rows are located through the per-block digests when both records have the
    same length and blocks; records without them (older files) are compared
    field by field.
    """
    if not (isinstance(stored, dict) and isinstance(expected, dict) and "blocks" in stored and "blocks" in expected):
        return differences(stored, expected, "dataset.")
    found = differences(
        {k: v for k, v in stored.items() if k not in ("sha256", "blocks", "rows_hashed")},
        {k: v for k, v in expected.items() if k not in ("sha256", "blocks", "rows_hashed")},
        "dataset.",
    )
    same_grid = stored["length"] == expected["length"] and stored["block_rows"] == expected["block_rows"]
    for field in sorted(set(stored["sha256"]) | set(expected["sha256"])):
        if stored["sha256"].get(field) == expected["sha256"].get(field):
            continue
        name = f"dataset.sha256.{field}"
        if field not in stored["sha256"] or field not in expected["sha256"]:
            side = "file" if field in stored["sha256"] else "now"
            found.append(f"{name} (only in the {side}'s items)")
        elif same_grid:
            where = _first_differing_rows(stored, expected, field)
            found.append(f"{name} (the data set's {field} changed, first at {where})")
        else:
            found.append(f"{name} (the data set changed)")
    return found


def _first_differing_rows(stored: dict[str, Any], expected: dict[str, Any], field: str) -> str:
    pairs = zip(stored["blocks"][field], expected["blocks"][field])
    block = next((k for k, (a, b) in enumerate(pairs) if a != b), None)
    if block is None:  # the block digests agree (truncated): only the full digest differs
        return "an unknown row"
    first = block * stored["block_rows"]
    last = min(first + stored["block_rows"], stored["length"]) - 1
    return f"row {first}" if first == last else f"rows {first}..{last}"


def check_provenance(path: Path, stored: dict[str, Any], expected: dict[str, Any]) -> None:
    if provenance_hash(stored) == provenance_hash(expected):
        return
    stored, expected = identity_part(stored), identity_part(expected)
    differing = dataset_differences(stored.pop("dataset", None), expected.pop("dataset", None))
    differing = [*differing, *differences(stored, expected)] or ["(hash only)"]
    raise ProvenanceMismatchError(
        f"{path} was written for another configuration; differing fields: {'; '.join(differing)}."
        " Write to another path, or pass resume=False (CLI: --no-resume) to overwrite it"
    )


# --------------------------------------------------------------------------- file layout


@dataclass(frozen=True)
class Layout:
    rows: int
    sample_shape: tuple[int, ...]
    dtype: str
    chunk_rows: int
    labelled: bool = True

    @property
    def result_fields(self) -> tuple[str, ...]:
        """The per-row results this file stores (``label`` only when labelled)."""
        return RESULT_FIELDS if self.labelled else tuple(f for f in RESULT_FIELDS if f != LABEL_FIELD)

    @property
    def chunks(self) -> int:
        return math.ceil(self.rows / self.chunk_rows)

    def chunk_range(self, chunk: int) -> tuple[int, int]:
        start = chunk * self.chunk_rows
        return start, min(start + self.chunk_rows, self.rows)


def auto_chunk_rows(sample_shape: tuple[int, ...], dtype: str, rows: int) -> int:
    row_bytes = max(1, math.prod(sample_shape)) * np.dtype(dtype).itemsize
    return max(1, min(rows, CHUNK_BYTES // row_bytes))


def create_file(path: Path, layout: Layout, provenance: dict[str, Any], compression: str | None) -> None:
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
                options = {"dcpl": early_allocation()}
            handle.create_dataset(
                "adversarial",
                shape=(layout.rows, *layout.sample_shape),
                dtype=layout.dtype,
                chunks=(layout.chunk_rows, *layout.sample_shape),
                fillvalue=np.nan,
                **options,
            )
            for name, (dtype, fill) in ROW_FIELDS.items():
                if name == LABEL_FIELD and not layout.labelled:
                    continue
                handle.create_dataset(
                    name,
                    shape=(layout.rows,),
                    dtype=dtype,
                    chunks=(min(layout.rows, ROW_CHUNK),),
                    fillvalue=fill,
                    dcpl=early_allocation(),
                )
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    logger.debug("created %s: %s, compression %s", path, layout, compression)


def early_allocation() -> h5py.h5p.PropDCID:
    """A dataset creation property list that allocates all space at creation (in-place writes)."""
    dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
    return dcpl


def open_cache(path: Path, mode: str = "r") -> h5py.File:
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
        read_layout(handle, path)
    except BaseException:
        handle.close()
        raise
    return handle


def open_for_writing(path: Path) -> h5py.File:
    """Opens a checked (or just created) cache file for writing; errors name the path."""
    try:
        return h5py.File(path, "r+")
    except OSError as error:
        raise CacheError(
            f"cannot open {path} for writing ({error}); close every UAECache or h5py.File on it in this process first"
        ) from error


def read_layout(handle: h5py.File, path: Path) -> Layout:
    """Checks the format, datasets, dtypes and shapes of an open cache file."""
    try:
        found_format = handle.attrs.get("format")
        version = handle.attrs.get("format_version")
        missing = [name for name in ("adversarial", *ROW_FIELDS) if name not in handle and name != LABEL_FIELD]
        labelled = LABEL_FIELD in handle
    except (OSError, RuntimeError, KeyError) as error:
        raise CacheError(f"{path} is damaged: its structure cannot be read ({error})") from error
    if found_format != FORMAT:
        raise CacheError(
            f"{path} is an HDF5 file but not a uae-augment cache (attribute format={found_format!r},"
            f" expected {FORMAT!r})"
        )
    if version != FORMAT_VERSION:
        raise CacheError(f"{path} has cache format version {version!r}; this library reads version {FORMAT_VERSION}")
    if missing:
        raise CacheError(f"{path} is not a complete uae-augment cache: missing datasets {missing}")
    read_provenance(handle, path)
    adversarial = handle["adversarial"]
    if adversarial.ndim < 2 or adversarial.dtype.name not in DTYPES or adversarial.chunks is None:
        raise CacheError(
            f"{path}: dataset 'adversarial' must be chunked float32/float16 of shape (N, ...),"
            f" found {adversarial.dtype} {adversarial.shape} chunks={adversarial.chunks}"
        )
    rows = adversarial.shape[0]
    for name, (dtype, _) in ROW_FIELDS.items():
        if name == LABEL_FIELD and not labelled:
            continue
        dataset = handle[name]
        if dataset.shape != (rows,) or dataset.dtype != dtype:
            raise CacheError(
                f"{path}: dataset {name!r} must be {dtype} of shape ({rows},), found {dataset.dtype} {dataset.shape}"
            )
    return Layout(rows, tuple(adversarial.shape[1:]), adversarial.dtype.name, adversarial.chunks[0], labelled)


def read_provenance(handle: h5py.File, path: Path) -> dict[str, Any]:
    text = handle.attrs.get("provenance")
    try:
        record = json.loads(text)
    except (TypeError, ValueError) as error:
        raise CacheError(f"{path}: the provenance attribute is not a JSON record ({error})") from error
    if not isinstance(record, dict):
        raise CacheError(f"{path}: the provenance attribute is not a JSON object")
    return record


def read_all(dataset: h5py.Dataset, path: Path) -> np.ndarray:
    try:
        return dataset[...]
    except (OSError, RuntimeError) as error:
        raise CacheError(f"{path} is damaged: reading {dataset.name!r} failed ({error})") from error


def shard_path(path: str | os.PathLike[str], rank: int, world_size: int) -> Path:
    """The shard file of ``rank`` (of ``world_size``) for the final cache ``path``."""
    final = Path(path)
    return final.with_name(f"{final.name}.rank{rank}-of-{world_size}.h5")


def check_dtype(dtype: object) -> str:
    name = {torch.float32: "float32", torch.float16: "float16"}.get(dtype, dtype)  # type: ignore[call-overload]
    if isinstance(name, np.dtype):
        name = name.name
    if name not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES} (never uint8: UAEs are not on the pixel grid), got {dtype!r}")
    return str(name)


def check_compression(compression: object) -> str | None:
    if compression in ("none", "None"):
        compression = None
    if compression not in COMPRESSIONS:
        raise ValueError(f"compression must be one of {COMPRESSIONS}, got {compression!r}")
    return compression  # type: ignore[return-value]
