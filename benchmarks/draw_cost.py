"""Cost of drawing per-sample MINE's initial weights and permutations, host generators vs counter streams.

Paper preset on CIFAR-sized feature maps (32 x 32 maps, hidden 512, 64 maps,
20 MINE steps per iteration), one 16-image batch. ``host`` is the CPU path
(one ``torch.Generator`` per sample, a Python loop over samples, then a copy to
the device); ``counter`` is the device-side path (:class:`CounterStreams`) run
here on the CPU. Writes JSON to stdout (or ``--out``).

    OMP_NUM_THREADS=1 python benchmarks/draw_cost.py --out benchmarks/results/draw_cost.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's uae_augment

from uae_augment._seeding import Stream, Streams, sample_streams, stacked_permutations  # noqa: E402
from uae_augment.mine.statistics_network import StatisticsNetwork  # noqa: E402


def _time(function, repeats: int) -> float:  # type: ignore[no-untyped-def]
    best = float("inf")
    for _ in range(repeats):
        start = time.process_time()
        function()
        best = min(best, time.process_time() - start)
    return best


def _measure(args: argparse.Namespace, on_device: bool) -> dict[str, float]:
    index, shape = torch.arange(args.batch), (args.size, args.size)

    def streams(stream: Stream) -> Streams:
        return sample_streams(0, index, stream, 0, device="cpu", on_device=on_device)

    def init() -> None:
        StatisticsNetwork(shape, streams(Stream.MINE_INIT), hidden=args.hidden)

    def permutations() -> None:
        stacked_permutations(streams(Stream.PERMUTATION), args.mine_steps, args.maps)

    return {
        "init_cpu_s": _time(init, args.repeats),
        "permutations_cpu_s_per_iteration": _time(permutations, args.repeats),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--maps", type=int, default=64)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--mine-steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    one = StatisticsNetwork((args.size, args.size), [torch.Generator()], hidden=args.hidden)
    report = {
        "what": "per-sample MINE draw cost per batch (process CPU seconds, best of repeats)",
        "batch": args.batch,
        "sample_shape": [args.size, args.size],
        "maps": args.maps,
        "hidden": args.hidden,
        "mine_steps": args.mine_steps,
        "parameter_bytes_per_batch": sum(p.numel() for p in one.parameters()) * 4 * args.batch,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "machine": platform.processor() or platform.machine(),
        "load_before": os.getloadavg()[0],
        "host_generators": _measure(args, on_device=False),
        "counter_streams": _measure(args, on_device=True),
    }
    report["load_after"] = os.getloadavg()[0]
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as handle:
            handle.write(text + "\n")


if __name__ == "__main__":
    main()
