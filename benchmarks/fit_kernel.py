"""Kernel time of training: ``fit`` with the library's heap retention and with glibc's own behaviour.

Trains the README's conv autoencoder on ``--train-rows`` embedded MNIST-5k digits
(``fit``, the model's release batch of 100, ``--epochs`` epochs) ``--fits`` times in
one process, from the same initial weights, and records each fit's user and kernel
(sys) CPU seconds and minor page faults. Two arms, each in fresh processes,
alternating ``--pairs`` times: ``retained`` (the default: the first ``fit`` sets
glibc's ``M_TOP_PAD``/``M_MMAP_THRESHOLD``, see ``uae_augment._heap``) and ``glibc``
(``set_heap_retention(None)`` first: glibc's adaptive thresholds). The first fit of a
process also touches the heap's pages for the first time; the later fits show the
steady state a recipe's many trainings run in.

Run ``python benchmarks/fit_kernel.py --help``; it prints JSON and writes ``--out``.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import finish_machine_info, load_average, machine_info, write_json  # noqa: E402

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "fit_kernel.json"
ARMS = ("retained", "glibc")


def run_worker(arm: str, train_rows: int, epochs: int, fits: int) -> dict[str, Any]:
    """One process of one arm: ``fits`` fits, each one's CPU seconds and page faults."""
    import copy

    import uae_augment
    from uae_augment.models import ConvAutoencoder

    torch.set_num_threads(1)
    if arm == "glibc":
        uae_augment.set_heap_retention(None)
    train = uae_augment.random_subset(uae_augment.load_dataset("mnist-5k"), train_rows, seed=0)
    torch.manual_seed(0)
    initial = ConvAutoencoder(in_channels=1, image_size=28)
    records = []
    for _ in range(fits):
        model = copy.deepcopy(initial)
        before = resource.getrusage(resource.RUSAGE_SELF)
        uae_augment.fit(model, train, epochs=epochs, seed=0, progress=False)
        after = resource.getrusage(resource.RUSAGE_SELF)
        user = round(after.ru_utime - before.ru_utime, 4)
        sys_s = round(after.ru_stime - before.ru_stime, 4)
        records.append(
            {
                "user_s": user,
                "sys_s": sys_s,
                "kernel_share": round(sys_s / (user + sys_s), 4),
                "minor_faults": after.ru_minflt - before.ru_minflt,
            }
        )
    return {"arm": arm, "heap_retention": uae_augment.heap_retention(), "fits": records}


def _summary(processes: list[dict[str, Any]], which: slice) -> dict[str, Any]:
    fits = [fit for process in processes for fit in process["fits"][which]]
    user, sys_s = sum(f["user_s"] for f in fits), sum(f["sys_s"] for f in fits)
    return {
        "fits": len(fits),
        "kernel_share": round(sys_s / (user + sys_s), 4) if fits else None,
        "sys_s_per_fit": round(sys_s / len(fits), 3) if fits else None,
        "median_minor_faults_per_fit": statistics.median(f["minor_faults"] for f in fits) if fits else None,
        "max_minor_faults_per_fit": max(f["minor_faults"] for f in fits) if fits else None,
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--train-rows", type=int, default=400, help="digits per fit (default: %(default)s, as make demo)")
    add("--epochs", type=int, default=6, help="epochs per fit (default: %(default)s, as make demo)")
    add("--fits", type=int, default=3, help="fits per process (default: %(default)s)")
    add("--pairs", type=int, default=3, help="processes per arm, alternating (default: %(default)s)")
    add("--out", default=str(DEFAULT_OUT), help="JSON output (default: %(default)s)")
    add("--worker", nargs=4, metavar=("ARM", "ROWS", "EPOCHS", "FITS"), help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.worker:
        arm, rows, epochs, fits = args.worker
        print(json.dumps(run_worker(arm, int(rows), int(epochs), int(fits))))
        return {}
    wall_start = time.perf_counter()
    machine = machine_info(torch.device("cpu"))
    loads = [machine["load_average_at_start"][0]]
    processes: dict[str, list[dict[str, Any]]] = {arm: [] for arm in ARMS}
    for _ in range(args.pairs):
        for arm in ARMS:
            loads.append(load_average()[0])
            command = [
                sys.executable,
                __file__,
                "--worker",
                arm,
                str(args.train_rows),
                str(args.epochs),
                str(args.fits),
            ]
            done = subprocess.run(command, capture_output=True, text=True, check=True)
            processes[arm].append(json.loads(done.stdout.strip().splitlines()[-1]))
    finish_machine_info(machine, time.perf_counter() - wall_start, loads)
    result = {
        "benchmark": "fit_kernel",
        "command": "python benchmarks/fit_kernel.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "settings": {"train_rows": args.train_rows, "epochs": args.epochs, "fits": args.fits, "pairs": args.pairs},
        "machine": machine,
        "summary": {
            arm: {"first_fit": _summary(runs, slice(0, 1)), "later_fits": _summary(runs, slice(1, None))}
            for arm, runs in processes.items()
        },
        "processes": processes,
    }
    write_json(result, args.out)
    return result


if __name__ == "__main__":
    main()
