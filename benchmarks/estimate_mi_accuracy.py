"""Accuracy of ``estimate_mi`` against the closed-form MI of correlated Gaussians.

For ``a ~ N(0, I_d)`` and ``b = rho * a + sqrt(1 - rho^2) * noise`` the mutual
information is ``I = -d/2 * log(1 - rho^2)`` nats. For every ``n``, ``d`` and
``rho`` of the grid, the script draws the pairs (data seed 1), runs
``estimate_mi(a, b, seed=0)`` with its defaults and records the truth, the
estimate, the error and the seconds it took. A case passes when the error is
within 15 % of the truth or 0.1 nats; cases with truth above 2 nats are reported
but not judged (``passes`` is null).

Run ``python benchmarks/estimate_mi_accuracy.py --help``; it prints JSON and writes ``--out``.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import finish_machine_info, load_average, machine_info, write_json  # noqa: E402

from uae_augment import estimate_mi  # noqa: E402

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "estimate_mi_accuracy.json"
JUDGED_UP_TO_NATS = 2.0


def gaussian_pairs(n: int, d: int, rho: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """n pairs (a, b) of d-dimensional Gaussians with per-coordinate correlation ``rho``."""
    generator = torch.Generator().manual_seed(seed)
    a = torch.randn(n, d, generator=generator)
    return a, rho * a + math.sqrt(1 - rho**2) * torch.randn(n, d, generator=generator)


def true_mi(d: int, rho: float) -> float:
    """Closed-form I(A; B) = -d/2 log(1 - rho^2) in nats."""
    return -d / 2 * math.log(1 - rho**2)


def within_tolerance(estimate: float, truth: float) -> bool | None:
    """Error within 15 % of the truth or 0.1 nats; None when the truth exceeds 2 nats."""
    if truth > JUDGED_UP_TO_NATS:
        return None
    error = abs(estimate - truth)
    return error <= 0.1 or error <= 0.15 * truth


def measure(n: int, d: int, rho: float, data_seed: int, seed: int) -> dict[str, Any]:
    """One grid case: truth, estimate, error and wall seconds."""
    a, b = gaussian_pairs(n, d, rho, data_seed)
    truth = true_mi(d, rho) + 0.0  # no -0.0 in the JSON
    start = time.perf_counter()
    estimate = estimate_mi(a, b, seed=seed)
    seconds = time.perf_counter() - start
    return {
        "n": n,
        "d": d,
        "rho": rho,
        "true_nats": round(truth, 4),
        "estimate_nats": round(estimate, 4),
        "error_nats": round(estimate - truth, 4),
        "seconds": round(seconds, 1),
        "passes": within_tolerance(estimate, truth),
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="estimate_mi against the analytic MI of correlated Gaussians.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--ns", default="10000,50000", help="comma-separated sample counts")
    parser.add_argument("--dims", default="2,10", help="comma-separated dimensions d")
    parser.add_argument("--rhos", default="0,0.2,0.4,0.6,0.8", help="comma-separated correlations")
    parser.add_argument("--data-seed", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0, help="estimate_mi's seed")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="where to write the JSON ('' for stdout only)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    wall_start = time.perf_counter()
    machine = machine_info(torch.device("cpu"))
    loads = [machine["load_average_at_start"][0]]
    cases = []
    for n in (int(value) for value in args.ns.split(",")):
        for d in (int(value) for value in args.dims.split(",")):
            for rho in (float(value) for value in args.rhos.split(",")):
                cases.append(measure(n, d, rho, args.data_seed, args.seed))
                loads.append(load_average()[0])
    finish_machine_info(machine, time.perf_counter() - wall_start, loads)
    judged = [case["passes"] for case in cases if case["passes"] is not None]
    result = {
        "settings": vars(args),
        "machine": machine,
        "cases": cases,
        "all_judged_pass": all(judged),
    }
    write_json(result, args.out)
    return result


if __name__ == "__main__":
    main()
