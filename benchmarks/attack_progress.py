"""What the attacks' automatic progress bar costs and why it is decided by elapsed time.

Measures, with one torch thread:

* the cost of one :class:`uae_augment._progress.Progress` update of an enabled bar
  (what the MinMax loop adds per iteration), against the time of one iteration;
* for a direct ``MINEUAE`` call (fast preset) on MNIST-5k digits against the
  release's conv autoencoder and the dense autoencoder (untrained: the cost does
  not depend on the weights): the measured CPU seconds against
  ``estimate_cpu_seconds`` (the ``CPU_SECONDS_PER_IMAGE`` table scaled by steps and
  pixels), i.e. how far an estimate-based on/off rule would be from the truth.

Usage: python benchmarks/attack_progress.py [--images 8] [--steps 10] [--out benchmarks/results/attack_progress.json]
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import finish_machine_info, load_average, machine_info, write_json  # noqa: E402

from uae_augment import MINEUAE, Reconstruction, load_dataset, random_subset  # noqa: E402
from uae_augment._progress import Progress  # noqa: E402
from uae_augment.attacks.minmax import estimate_cpu_seconds  # noqa: E402
from uae_augment.models import build_model  # noqa: E402


def update_cost(updates: int) -> float:
    """Seconds per ``Progress.update(1)`` of an enabled bar writing to a string buffer."""
    with Progress(updates, "overhead", unit="iteration", file=io.StringIO()) as bar:
        start = time.perf_counter()
        for _ in range(updates):
            bar.update(1)
        return (time.perf_counter() - start) / updates


def attack_row(model_name: str, x: torch.Tensor, steps: int) -> dict[str, Any]:
    """A direct fast-preset MINEUAE call on ``x``: CPU/wall seconds against the estimate."""
    torch.manual_seed(0)
    model = build_model(model_name, tuple(x.shape[1:])).eval()
    attack = MINEUAE(Reconstruction(model), preset="fast", steps=steps, progress=False)
    attack(x[:1])  # warm-up
    wall, cpu = time.perf_counter(), time.process_time()
    attack(x)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    estimate = estimate_cpu_seconds(attack, len(x), tuple(x.shape[1:]))
    return {
        "model": model_name,
        "images": len(x),
        "steps": steps,
        "cpu_s": round(cpu, 2),
        "wall_s": round(wall, 2),
        "cpu_s_per_iteration": round(cpu / steps, 4),
        "estimate_s": round(estimate, 2),
        "estimate_over_measured": round(estimate / cpu, 2),
        "load_1min_at_end": load_average()[0],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=8, help="MNIST-5k digits attacked (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=10, help="MinMax iterations (default: %(default)s)")
    parser.add_argument("--updates", type=int, default=20000, help="bar updates timed (default: %(default)s)")
    parser.add_argument("--models", default="conv-ae,dense-ae", help="registry models (default: %(default)s)")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "attack_progress.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    start = time.perf_counter()
    result: dict[str, Any] = {"settings": vars(args), "machine": machine_info(torch.device("cpu"))}
    x = torch.stack([image for image, _ in random_subset(load_dataset("mnist-5k"), args.images, seed=0)])
    result["update_s"] = update_cost(args.updates)
    result["attacks"] = [attack_row(name, x, args.steps) for name in args.models.split(",")]
    for row in result["attacks"]:
        row["update_share_of_iteration"] = result["update_s"] / row["cpu_s_per_iteration"]
    finish_machine_info(
        result["machine"],
        time.perf_counter() - start,
        [r["load_1min_at_end"] for r in result["attacks"]],
    )
    write_json(result, args.out)


if __name__ == "__main__":
    main()
