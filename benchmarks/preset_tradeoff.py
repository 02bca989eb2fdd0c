"""What the presets trade: ASR, cost, MI and how far delta really moves, on real MNIST.

A 28x28 ConvAutoencoder is trained for a few epochs on MNIST (the full set when
its canonical file is found, else the embedded mnist-5k). The same training
images are then attacked with

* ``init``: the attack's random start only: clip(x + delta_0), delta_0 glorot-uniform
  (``MINEUAE(steps=1)`` returns exactly its first iterate);
* ``paper``, ``fast``, ``strong``: ``MINEUAE(preset=...)`` with its defaults.

``paper`` runs on the first ``--images`` images; ``init``, ``fast`` and ``strong``
on the first ``--large-images`` (a superset: a sample's result does not depend on
its batch), and every comparison uses the shared first ``--images``. Each UAE is
scored by the attack's own MINE estimate and by ONE independent evaluator
(``per_sample_mi``, the same settings and seed for every preset).

Run ``python benchmarks/preset_tradeoff.py --help``; it prints JSON and writes ``--out``.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    finish_machine_info,
    load_average,
    machine_info,
    mnist_source,
    resolve_device,
    synchronize,
    train_conv_autoencoder,
    training_images,
    write_json,
)

from uae_augment import MINEUAE, PRESETS, AttackResult, BySampler, Reconstruction, per_sample_mi  # noqa: E402

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "preset_tradeoff.json"
PRESET_NAMES = ("paper", "fast", "strong")


def _mean(values: torch.Tensor) -> float:
    finite = values[torch.isfinite(values)]
    return round(float(finite.float().mean()), 6) if finite.numel() else math.nan


def describe(result: AttackResult, x: torch.Tensor, evaluator_mi: torch.Tensor) -> dict[str, Any]:
    """Per-preset summary of a result on clean images x (rows aligned)."""
    delta = (result.adversarial - x).flatten(1)
    return {
        "n": len(result),
        "asr": round(result.asr, 4),
        "criterion_zero_rate": round(float((result.criterion <= 0).float().mean()), 4),
        "mean_attack_mi": _mean(result.mi),
        "mean_evaluator_mi": _mean(evaluator_mi),
        "mean_linf": _mean(delta.abs().amax(dim=1)),
        "mean_l2": _mean(delta.norm(dim=1)),
        "mean_moved_linf": _mean(result.moved_linf),
        "mean_moved_l2": _mean(result.moved_l2),
        "mean_criterion": _mean(result.criterion),
    }


def distance(a: torch.Tensor, b: torch.Tensor) -> dict[str, float]:
    """How far two sets of UAEs for the same images are apart (pixel-wise and per image)."""
    diff = (a - b).abs().flatten(1)
    return {
        "mean_abs": float(diff.mean()),
        "max_abs": float(diff.max()),
        "mean_linf_per_image": float(diff.amax(dim=1).mean()),
        "mean_l2_per_image": float(diff.norm(dim=1).mean()),
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="ASR, cost, MI and distances of the MINE-UAE presets on the same MNIST images.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--dataset",
        default="auto",
        choices=["auto", "mnist", "mnist-5k"],
        help="auto: full MNIST when mnist.npz is found (--root, else $UAE_DATA_ROOT or datasets/)",
    )
    parser.add_argument("--root", default=None, help="data root holding mnist.npz")
    parser.add_argument("--train-rows", type=int, default=10000, help="training rows for the autoencoder")
    parser.add_argument("--epochs", type=int, default=3, help="autoencoder training epochs")
    parser.add_argument("--images", type=int, default=16, help="images every preset attacks (compared)")
    parser.add_argument("--large-images", type=int, default=64, help="images for init/fast/strong")
    parser.add_argument("--steps", type=int, default=None, help="override every preset's attack iterations")
    parser.add_argument("--mine-steps", type=int, default=None, help="override every preset's MINE steps")
    parser.add_argument("--eval-steps", type=int, default=600, help="Adam steps of the independent evaluator")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="where to write the JSON ('' for stdout only)")
    args = parser.parse_args(argv)
    if args.images < 1 or args.large_images < args.images:
        parser.error("--images must be >= 1 and --large-images >= --images")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    wall_start = time.perf_counter()
    device = resolve_device(args.device)
    machine = machine_info(device)
    dataset, root = mnist_source(args.dataset, args.root)
    images = training_images(dataset, root)[: args.train_rows]
    if images.shape[0] < args.large_images:
        raise SystemExit(f"--large-images {args.large_images} exceeds the {images.shape[0]} training rows")
    model, training = train_conv_autoencoder(images, epochs=args.epochs, seed=args.seed, device=device)
    training.update(dataset=dataset, root=root)
    criterion = Reconstruction(model)
    x_large = images[: args.large_images].to(device)
    n = args.images

    loads = [machine["load_average_at_start"][0]]
    runs: dict[str, dict[str, Any]] = {}
    plan = [("init", args.large_images, {"preset": "fast", "steps": 1})]
    plan += [(name, n if name == "paper" else args.large_images, {"preset": name}) for name in PRESET_NAMES]
    for name, rows, options in plan:
        attack = MINEUAE(
            criterion,
            seed=args.seed,
            **{"steps": args.steps, "mine_steps": args.mine_steps, **options},
        )
        loads.append(load_average()[0])
        synchronize(device)
        start = time.perf_counter()
        result = attack(x_large[:rows])
        synchronize(device)
        seconds = time.perf_counter() - start
        evaluated = per_sample_mi(x_large[:rows], result.adversarial, steps=args.eval_steps, seed=args.seed)
        runs[name] = {
            "attack": attack,
            "result": result,
            "seconds": seconds,
            "evaluator_mi": evaluated,
        }
        print(f"# {name}: {rows} images, {seconds:.1f} s", file=sys.stderr)

    x = x_large[:n]
    identical = per_sample_mi(x, x, steps=args.eval_steps, seed=args.seed)
    unrelated = per_sample_mi(
        x,
        x_large[n : 2 * n] if args.large_images >= 2 * n else x.roll(1, 0),
        steps=args.eval_steps,
        seed=args.seed,
    )
    presets: dict[str, Any] = {}
    for name, run in runs.items():
        result: AttackResult = run["result"]
        rows = len(result)
        entry = {
            "settings": {
                k: v
                for k, v in run["attack"].config().items()
                if k
                in (
                    "steps",
                    "mine_steps",
                    "alpha",
                    "mine_lr",
                    "delta_update",
                    "statistics_hidden",
                    "epsilon",
                )
            },
            "batch_size": run["attack"].batch_size,
            "images_attacked": rows,
            "s_per_image": round(run["seconds"] / rows, 4),
            "shared": describe(result[:n], x, run["evaluator_mi"][:n]),
        }
        if rows > n:
            entry["all_attacked"] = describe(result, x_large[:rows], run["evaluator_mi"])
        presets[name] = entry

    adversarial = {name: run["result"].adversarial[:n] for name, run in runs.items()}
    pairs = [
        ("paper", "fast"),
        ("paper", "strong"),
        ("fast", "strong"),
        ("init", "paper"),
        ("init", "fast"),
        ("init", "strong"),
    ]
    asr = {name: presets[name]["shared"]["asr"] for name in presets}
    finish_machine_info(machine, time.perf_counter() - wall_start, loads)
    result = {
        "benchmark": "preset_tradeoff",
        "command": " ".join(
            [
                "python",
                "benchmarks/preset_tradeoff.py",
                *(argv if argv is not None else sys.argv[1:]),
            ]
        ),
        "settings": {
            "dataset": dataset,
            "images_compared": n,
            "large_images": args.large_images,
            "seed": args.seed,
            "steps_override": args.steps,
            "mine_steps_override": args.mine_steps,
            "presets": {
                name: {
                    k: asdict(v) if isinstance(v, BySampler) else v
                    for k, v in PRESETS[name].items()
                    if k != "batch_size"
                }
                for name in PRESET_NAMES
            },
            "init": "MINEUAE(preset='fast', steps=1): its only iterate clip(x + delta_0), glorot delta_0",
            "evaluator": {
                "function": "uae_augment.per_sample_mi(x, x_adv)",
                "steps": args.eval_steps,
                "sampler": "random projections (its defaults), fresh network per pair, same seed for every preset",
                "identical_pairs_mean_mi": _mean(identical),
                "unrelated_digit_pairs_mean_mi": _mean(unrelated),
            },
        },
        "machine": machine,
        "victim": training,
        "presets": presets,
        "distances_between_presets": {f"{a}_vs_{b}": distance(adversarial[a], adversarial[b]) for a, b in pairs},
        "asr_difference_points": {
            "fast_minus_paper": round(100 * (asr["fast"] - asr["paper"]), 2),
            "strong_minus_paper": round(100 * (asr["strong"] - asr["paper"]), 2),
        },
    }
    write_json(result, args.out)
    return result


if __name__ == "__main__":
    main()
