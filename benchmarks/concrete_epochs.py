"""How many epochs ``fit_concrete`` needs: the convergence curve of the README's concrete-AE example.

The README trains ``ConcreteAutoencoder((1, 28, 28), k=50)`` on MNIST-5k's 4,000
training digits with :func:`uae_augment.models.fit_concrete` (first try: the
release's 800 epochs). For each epoch budget and seed this script trains one
model exactly as one try of ``fit_concrete`` does (a fresh model from
``torch.manual_seed(seed)``, ``fit(model, train, epochs=E, seed=seed)``, the
authors' batch size max(N // 256, 16)) and records:

* CPU and wall seconds (per epoch too), optimisation steps;
* the mean max selection probability (the retry criterion, ``MEAN_MAX_TARGET``);
* the quality the concrete-AE recipe reports: the decoder's test reconstruction
  error (per-feature MSE of its linear output, the authors' figure) and the test
  accuracy of ExtraTrees(50) on the 50 selected pixels (``recipes/concrete_autoencoder.py``'s
  ``evaluate``).

Every try of ``fit_concrete`` restarts from the same initial weights with the
same seed and twice the epochs, so a try of 2E epochs is the budget-2E run
here: from the curve, ``retries`` gives, per first-try budget E, how many
retries the rule would trigger (None when the budget that would converge lies
beyond the measured ones) and the epochs all its tries would train.

Usage:
    python benchmarks/concrete_epochs.py --rows 1000 --budgets 25,50,100,200,400,800 --seeds 0
    python benchmarks/concrete_epochs.py --rows 4000 --budgets 25,50,100 --out benchmarks/results/concrete_epochs_4000.json

Results are written after every run, so a run cut short keeps what it measured.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1] / "recipes"))  # the recipes' sibling modules

from _common import finish_machine_info, load_average, machine_info, write_json  # noqa: E402

from _protocol import stack  # noqa: E402
from concrete_autoencoder import evaluate  # noqa: E402
from uae_augment import fit, load_dataset, random_subset  # noqa: E402
from uae_augment.models import ConcreteAutoencoder  # noqa: E402
from uae_augment.training.concrete import MEAN_MAX_TARGET  # noqa: E402

TRIES = 5
"""``fit_concrete``'s default number of tries."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="mnist-5k", help="data set (default: %(default)s, the README's)")
    parser.add_argument(
        "--rows",
        type=int,
        default=1000,
        help="training rows: a seeded random subset, or all with 0 (default: %(default)s)",
    )
    parser.add_argument("--test-rows", type=int, default=0, help="test rows (0: all) (default: %(default)s)")
    parser.add_argument("--k", type=int, default=50, help="selected features (default: %(default)s)")
    parser.add_argument("--budgets", default="25,50,100,200,400,800", help="epoch budgets (default: %(default)s)")
    parser.add_argument("--seeds", default="0", help="seeds (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default: %(default)s)")
    parser.add_argument(
        "--out",
        default=None,
        help="JSON output (default: benchmarks/results/concrete_epochs_<rows>.json)",
    )
    return parser.parse_args(argv)


def train_one(
    train: Any,
    train_xy: tuple[torch.Tensor, torch.Tensor],
    test_xy: tuple[torch.Tensor, torch.Tensor],
    *,
    k: int,
    epochs: int,
    seed: int,
) -> dict[str, Any]:
    """One try of ``fit_concrete`` with ``epochs`` epochs, timed and evaluated."""
    torch.manual_seed(seed)
    model = ConcreteAutoencoder(tuple(train_xy[0].shape[1:]), k=k)
    wall, cpu = time.perf_counter(), time.process_time()
    history = fit(model, train, epochs=epochs, seed=seed, progress=False)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    quality = evaluate(model, train_xy, test_xy, device=torch.device("cpu"), seed=seed)
    return {
        "epochs": epochs,
        "seed": seed,
        "steps": history.steps,
        "batch_size": history.batch_size,
        "wall_s": round(wall, 1),
        "cpu_s": round(cpu, 1),
        "cpu_s_per_epoch": round(cpu / epochs, 3),
        "load_1min_at_end": load_average()[0],
        "mean_max_probability": round(model.mean_max_probability(), 5),
        "converged": model.mean_max_probability() >= MEAN_MAX_TARGET,
        "final_epoch_loss": round(history.losses[-1], 6),
        "test_mse": round(quality.test_mse, 6),
        "accuracy_pct": round(quality.accuracy_pct, 2),
        "distinct_row_argmax": len(set(model.selector.probabilities().argmax(dim=1).tolist())),
    }


def retries(runs: list[dict[str, Any]], tries: int = TRIES) -> list[dict[str, Any]]:
    """Per (seed, first-try budget E): the retries the rule triggers and the epochs it trains.

    The rule's try j (0-based) trains E * 2**j epochs from the same start, i.e. the
    measured run of that budget; ``retries`` is None when a needed budget was not measured.
    """
    by_key = {(run["seed"], run["epochs"]): run for run in runs}
    rows = []
    for seed, first in sorted(by_key):
        retry: int | None = None
        total = 0
        for attempt in range(tries):
            run = by_key.get((seed, first * 2**attempt))
            if run is None:
                total = None
                break
            total += run["epochs"]
            if run["converged"] or attempt == tries - 1:
                retry = attempt
                break
        rows.append(
            {
                "seed": seed,
                "first_try_epochs": first,
                "retries": retry,
                "epochs_trained": total,
                "converged": None if retry is None else by_key[(seed, first * 2**retry)]["converged"],
            }
        )
    return rows


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    budgets = [int(b) for b in args.budgets.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    out = args.out or str(Path(__file__).resolve().parent / "results" / f"concrete_epochs_{args.rows or 'all'}.json")
    full = load_dataset(args.dataset, split="train")
    train = random_subset(full, args.rows, seed=0) if args.rows else full
    test = load_dataset(args.dataset, split="test")
    test = random_subset(test, args.test_rows, seed=0) if args.test_rows else test
    train_xy, test_xy = stack(train), stack(test)
    result: dict[str, Any] = {
        "settings": {
            "dataset": args.dataset,
            "train_rows": len(train_xy[0]),
            "test_rows": len(test_xy[0]),
            "k": args.k,
            "budgets": budgets,
            "seeds": seeds,
            "target": MEAN_MAX_TARGET,
            "tries": TRIES,
            "command": " ".join(["python", "benchmarks/concrete_epochs.py", *(argv or sys.argv[1:])]),
        },
        "machine": machine_info(torch.device("cpu")),
        "runs": [],
    }
    start, loads = time.perf_counter(), []
    for seed in seeds:
        for epochs in budgets:
            result["runs"].append(train_one(train, train_xy, test_xy, k=args.k, epochs=epochs, seed=seed))
            loads.append(result["runs"][-1]["load_1min_at_end"])
            result["cpu_s_per_epoch_median"] = statistics.median(r["cpu_s_per_epoch"] for r in result["runs"])
            result["retries"] = retries(result["runs"])
            finish_machine_info(result["machine"], time.perf_counter() - start, loads)
            write_json(result, out)


if __name__ == "__main__":
    main()
