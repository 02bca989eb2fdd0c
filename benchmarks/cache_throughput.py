"""Read throughput of the HDF5 UAE cache against the same tensors in memory, and file sizes.

Builds ``--rows`` MNIST-shaped (1, 28, 28) UAE-like rows: the real MNIST-5k
training digits, repeated, plus N(0, 0.01^2) noise clipped to [0, 1] (the
GA sigma=0.01 UAEs of the paper; like every UAE they are off the uint8 pixel
grid, which is what makes them hard to compress). The rows are written with
``uae_augment.precompute`` through a pass-through attack that returns them as
they are (so the figures include the real writer, but no attack runs), once
per storage dtype (float32, float16) and compression (lzf, gzip, none).

Then it reads the float32 + lzf cache through a DataLoader exactly like a
training loop (batch 256, shuffle, default collate, ``num_workers`` 0 and 2,
default ``persistent_workers=False``, a fresh ``UAECache`` per configuration)
and the same tensors in memory (``TensorDataset``), epoch by epoch, and
reports samples/s and the cache/memory ratio side by side (configurations are
measured in turns, epoch by epoch, and the ratio is the median of the per-turn
ratios, so that load from other processes affects both sides alike). Without persistent
workers every epoch starts new workers, which decompress the file again.
The reader preloads the rows at construction (its default; forked workers
share them). Extra rows (2 workers): the other dtypes and compressions;
``preload=False`` (every new worker reads the file again); the read paths the cache avoids,
per-item reads (a wrapper hiding ``__getitems__``) and no in-memory copy
(``cache_bytes=0``); and persistent workers (whose copy stays warm).

Run ``python benchmarks/cache_throughput.py --help``; it prints JSON and writes ``--out``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import finish_machine_info, load_average, machine_info, write_json  # noqa: E402

from uae_augment import AttackResult, load_dataset  # noqa: E402
from uae_augment.attacks.base import Attack  # noqa: E402
from uae_augment.data.cache import UAECache, precompute  # noqa: E402

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "cache_throughput.json"
NOISE_SIGMA = 0.01
GOAL_RATIO = 0.5
"""Goal: with 2 workers the cache reads at least this fraction of the in-memory throughput."""


class PassThrough(Attack):
    """Returns its input as the 'adversarial' rows (success True, MI NaN, criterion 0)."""

    def models(self) -> list[nn.Module]:
        return []

    def _config(self) -> dict[str, Any]:
        return {"note": "benchmark pass-through, no attack"}

    def _attack_batch(self, x: torch.Tensor, y: torch.Tensor | None, index: torch.Tensor) -> AttackResult:
        n = x.shape[0]
        return AttackResult(
            adversarial=x.clone(),
            success=torch.ones(n, dtype=torch.bool),
            mi=torch.full((n,), float("nan")),
            criterion=torch.zeros(n),
        )


class PerItem(Dataset):
    """The cache without its batched ``__getitems__`` path (one read per item)."""

    def __init__(self, cache: UAECache):
        self.cache = cache

    def __len__(self) -> int:
        return len(self.cache)

    def __getitem__(self, index: int):
        return self.cache[index]


def uae_like_rows(rows: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows, 1, 28, 28) real MNIST-5k digits (repeated) + clipped N(0, 0.01^2) noise, and labels."""
    digits = load_dataset("mnist-5k")
    repeat = torch.arange(rows) % len(digits)
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn((rows, *digits.sample_shape), generator=generator) * NOISE_SIGMA
    return (digits.data[repeat] + noise).clamp_(0.0, 1.0), digits.targets[repeat].clone()


def write_caches(
    folder: Path, x: torch.Tensor, y: torch.Tensor, batch_size: int
) -> tuple[dict[tuple[str, str], Path], list[dict[str, Any]]]:
    dataset = TensorDataset(x, y)
    paths: dict[tuple[str, str], Path] = {}
    records = []
    for dtype in ("float32", "float16"):
        for compression in ("lzf", "gzip", None):
            path = folder / f"cache_{dtype}_{compression or 'none'}.h5"
            start = time.perf_counter()
            precompute(
                dataset,
                PassThrough(),
                path,
                batch_size=batch_size,
                dtype=dtype,
                compression=compression,
                resume=False,
                progress=False,
            )
            elapsed = time.perf_counter() - start
            size = path.stat().st_size
            paths[(dtype, compression or "none")] = path
            records.append(
                {
                    "dtype": dtype,
                    "compression": compression or "none",
                    "file_bytes": size,
                    "bytes_per_sample": round(size / len(x), 1),
                    "raw_float32_bytes_per_sample": x[0].numel() * 4,
                    "write_s": round(elapsed, 2),
                    "write_samples_per_s": round(len(x) / elapsed),
                }
            )
    return paths, records


def one_epoch(loader: DataLoader) -> float:
    """Samples/s of one shuffled pass over ``loader`` (each batch touched, like training)."""
    start = time.perf_counter()
    seen = 0
    checksum = 0.0
    for x, _y in loader:
        seen += x.shape[0]
        checksum += float(x[0, 0, 0, 0])
    return seen / (time.perf_counter() - start)


def interleaved(
    datasets: dict[str, Dataset],
    args: argparse.Namespace,
    workers: int,
    *,
    persistent: bool = False,
) -> list[dict[str, Any]]:
    """Epoch rates of several datasets, measured in turns (A B C A B C ...) so load drift hits all.

    The first entry is the reference: every row carries the median of its
    per-epoch ratios to the reference epoch measured in the same turn.
    """
    loaders = {
        name: DataLoader(
            dataset,
            batch_size=args.batch_size,
            shuffle=True,
            num_workers=workers,
            persistent_workers=persistent and workers > 0,
            generator=torch.Generator().manual_seed(args.seed),
        )
        for name, dataset in datasets.items()
    }
    rates: dict[str, list[float]] = {name: [] for name in loaders}
    for _ in range(args.epochs):
        for name, loader in loaders.items():
            rates[name].append(one_epoch(loader))
    reference = next(iter(rates.values()))
    rows = []
    for name, values in rates.items():
        row: dict[str, Any] = {
            "name": name,
            "num_workers": workers,
            "persistent_workers": persistent and workers > 0,
            "epoch_samples_per_s": [round(r) for r in values],
            "median_samples_per_s": round(statistics.median(values)),
        }
        if values is not reference:
            row["ratio_vs_in_memory"] = round(statistics.median(v / r for v, r in zip(values, reference)), 3)
        rows.append(row)
    del loaders
    return rows


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--rows", type=int, default=10_000, help="rows of the cache")
    parser.add_argument("--batch-size", type=int, default=256, help="DataLoader batch size")
    parser.add_argument("--workers", default="0,2", help="comma-separated DataLoader worker counts")
    parser.add_argument("--epochs", type=int, default=5, help="timed epochs per configuration (median reported)")
    parser.add_argument("--no-extras", action="store_true", help="skip the per-item, no-LRU and persistent rows")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the main process")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dir", default=None, help="folder for the cache files (default: a temporary one)")
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="where to write the JSON ('' for stdout only)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    wall_start = time.perf_counter()
    machine = machine_info(torch.device("cpu"))
    loads = [load_average()[0]]
    workers = [int(w) for w in args.workers.split(",") if w.strip()]
    x, y = uae_like_rows(args.rows, args.seed)
    with tempfile.TemporaryDirectory(dir=args.dir) as folder:
        paths, storage = write_caches(Path(folder), x, y, args.batch_size)
        loads.append(load_average()[0])
        memory = TensorDataset(x, y)
        default = paths[("float32", "lzf")]
        reader = UAECache(default, preload=False)
        reads: list[dict[str, Any]] = []
        ratios: dict[str, float] = {}
        for count in workers:
            datasets: dict[str, Dataset] = {
                "in_memory_TensorDataset": memory,
                # A fresh reader (it preloads its rows; the forked workers share them).
                "UAECache_float32_lzf": UAECache(default),
            }
            if count == max(workers) and not args.no_extras:
                datasets.update(
                    {
                        "UAECache_float16_lzf": UAECache(paths[("float16", "lzf")]),
                        "UAECache_float32_gzip": UAECache(paths[("float32", "gzip")]),
                        "UAECache_float32_none": UAECache(paths[("float32", "none")]),
                        "UAECache_float32_lzf_lazy": UAECache(default, preload=False),
                        "per_item_reads_float32_lzf": PerItem(UAECache(default)),
                        "no_memory_copy_float32_lzf": UAECache(default, cache_bytes=0),
                    }
                )
            rows = interleaved(datasets, args, count)
            ratios[str(count)] = rows[1]["ratio_vs_in_memory"]
            reads += rows
            loads.append(load_average()[0])
        if not args.no_extras and max(workers) > 0:
            reads += interleaved(
                {
                    "in_memory_persistent": memory,
                    "UAECache_float32_lzf_persistent": UAECache(default),
                },
                args,
                max(workers),
                persistent=True,
            )
            loads.append(load_average()[0])
    finish_machine_info(machine, time.perf_counter() - wall_start, loads)
    two = ratios.get("2")
    result = {
        "settings": {
            "rows": args.rows,
            "sample_shape": list(x.shape[1:]),
            "rows_source": f"MNIST-5k training digits repeated + clipped N(0, {NOISE_SIGMA}^2) noise",
            "batch_size": args.batch_size,
            "shuffle": True,
            "epochs_timed": args.epochs,
            "workers": workers,
            "main_process_torch_threads": args.threads,
            "read_cache_bytes_per_process": reader.cache_bytes,
            "chunk_rows": reader.chunk_rows,
        },
        "machine": machine,
        "storage": storage,
        "reads": reads,
        "ratio_cache_vs_memory_by_workers": ratios,
        "goal": {
            "statement": f"with 2 workers the cache reads >= {GOAL_RATIO} x the in-memory throughput",
            "ratio": two,
            "met": None if two is None else two >= GOAL_RATIO,
        },
    }
    write_json(result, args.out)
    return result


if __name__ == "__main__":
    main()
