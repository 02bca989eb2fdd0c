"""Real precompute runs for the cache tests: the small model, data and attacks, and a script.

The tests import the builders from here, and run this file as a script in
subprocesses (to kill a writer mid-run) and under torchrun (to check the
sharded path through the Python API)::

    python tests/data/_precompute_worker.py --out c.h5 --attack gaussian --limit 300
    python -m torch.distributed.run --nproc_per_node=2 tests/data/_precompute_worker.py \
        --distributed --out c.h5
"""

from __future__ import annotations

import argparse
import collections
import logging
import os
import signal
import sys
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import Dataset, Subset

from uae_augment import MINEUAE, GaussianNoise, Reconstruction, load_dataset
from uae_augment.attacks.base import Attack
from uae_augment.attacks.result import AttackResult
from uae_augment.data.cache import precompute


def tiny_autoencoder(seed: int = 0) -> nn.Module:
    """A randomly initialised (seeded) conv autoencoder for 8x8 digits; first layer conv 3x3."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return nn.Sequential(
            nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 1, 3, padding=1), nn.Sigmoid()
        ).eval()


def digits_rows(limit: int | None = None) -> Dataset:
    """The first ``limit`` rows of the digits training split (1437 rows of (1, 8, 8) in [0, 1])."""
    data = load_dataset("digits")
    return data if limit is None else Subset(data, range(limit))


class BatchMeanNoise(GaussianNoise):
    """Gaussian noise shifted by 1e-3 x (batch mean - 0.5): every row depends on its whole batch.

    A stand-in, in exaggerated form, for kernels whose rounding depends on the
    batch: a row equals the uninterrupted run's only when attacked in the same batch.
    """

    def _attack_batch(self, x: torch.Tensor, y: torch.Tensor | None, index: torch.Tensor) -> AttackResult:
        result = super()._attack_batch(x, y, index)
        result.adversarial = torch.clamp(result.adversarial + 1e-3 * (x.mean() - 0.5), 0.0, 1.0)
        return result


def make_attack(kind: str = "gaussian", seed: int = 0, sigma: float = 0.01, model_seed: int = 0) -> Attack:
    """A cheap real attack: Gaussian noise, a 2-step MINE-UAE ("mine") or :class:`BatchMeanNoise` ("batchmean")."""
    criterion = Reconstruction(tiny_autoencoder(model_seed))
    if kind == "gaussian":
        return GaussianNoise(criterion, sigma=sigma, seed=seed)
    if kind == "batchmean":
        return BatchMeanNoise(criterion, sigma=sigma, seed=seed)
    if kind == "mine":
        return MINEUAE(criterion, preset="fast", steps=2, mine_steps=1, seed=seed)
    raise ValueError(f"unknown attack kind {kind!r}")


class SlowRows(Dataset):
    """Delays every item (so that a writer can be killed mid-run); can fail at, or SIGKILL its process at, one index.

    The failure and the kill happen when the row is read for attacking: its
    second read in this process (the first is the dataset fingerprint's).
    """

    def __init__(
        self,
        dataset: Dataset,
        delay_s: float,
        fail_at: int | None = None,
        kill_at: int | None = None,
    ):
        self.dataset = dataset
        self.delay_s = delay_s
        self.fail_at = fail_at
        self.kill_at = kill_at
        self.reads: collections.Counter[int] = collections.Counter()

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int):
        self.reads[index] += 1
        if index == self.fail_at and self.reads[index] == 2:
            raise RuntimeError(f"injected failure at row {index}")
        if index == self.kill_at and self.reads[index] == 2:
            os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(self.delay_s)
        return self.dataset[index]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--attack", default="gaussian", choices=["gaussian", "mine", "batchmean"])
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--chunk-rows", type=int, default=None)
    parser.add_argument("--delay", type=float, default=0.0, help="seconds of sleep per item")
    parser.add_argument("--fail-at", type=int, default=None, help="row whose read (for attacking) raises")
    parser.add_argument(
        "--kill-at",
        type=int,
        default=None,
        help="row whose read (for attacking) SIGKILLs the process",
    )
    parser.add_argument("--distributed", action="store_true", help="init a gloo group (torchrun)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG, stream=sys.stderr, format="%(levelname)s %(name)s %(message)s")
    if args.distributed:
        torch.distributed.init_process_group("gloo")
    try:
        dataset = SlowRows(digits_rows(args.limit), args.delay, args.fail_at, args.kill_at)
        path = precompute(
            dataset,
            make_attack(args.attack),
            args.out,
            batch_size=args.batch_size,
            chunk_rows=args.chunk_rows,
            progress=False,
        )
        print(f"RESULT {path}", flush=True)
    except Exception as error:
        print(f"ERROR {type(error).__name__}: {error}", flush=True)
        if args.distributed:
            time.sleep(3)  # torchrun kills the other ranks once one exits: let them report first
        raise
    finally:
        if args.distributed:
            torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
