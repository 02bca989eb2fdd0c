"""``uae-augment demo``: MINE-UAEs of a conv autoencoder on the embedded MNIST-5k.

Trains the release's conv autoencoder for a few epochs on the 4,000 embedded
MNIST training digits (no network, no data files), generates MINE-UAEs for a
handful of training digits, prints ASR, MI and perturbation sizes, and writes a
PNG grid (clean | UAE | amplified perturbation) and a JSON summary.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

from ._names import PRESET_NAMES

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the demo's options to ``parser``."""
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("outputs/demo"),
        help="output folder (default: %(default)s)",
    )
    parser.add_argument("--epochs", type=int, default=3, help="autoencoder training epochs (default: %(default)s)")
    parser.add_argument(
        "--train-rows",
        type=int,
        default=None,
        help="train on N digits drawn at random with --seed (default: all 4,000)",
    )
    parser.add_argument("--samples", type=int, default=64, help="training digits to attack (default: %(default)s)")
    parser.add_argument(
        "--preset",
        choices=sorted(PRESET_NAMES),
        default="fast",
        help="attack preset (default: %(default)s; 'paper' is the release's, ~20x slower)",
    )
    parser.add_argument("--steps", type=int, default=None, help="attack iterations (default: the preset's, 40)")
    parser.add_argument("--seed", type=int, default=0, help="seed of training and attack (default: %(default)s)")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


def run(args: argparse.Namespace) -> int:
    """Runs the demo; prints a short report and returns the exit status."""
    summary = demo(
        out=args.out,
        epochs=args.epochs,
        train_rows=args.train_rows,
        samples=args.samples,
        preset=args.preset,
        steps=args.steps,
        seed=args.seed,
        progress=not args.no_progress,
    )
    print(format_summary(summary))
    return 0


def demo(
    *,
    out: str | Path = "outputs/demo",
    epochs: int = 3,
    train_rows: int | None = None,
    samples: int = 64,
    preset: str = "fast",
    steps: int | None = None,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Trains the conv AE, attacks ``samples`` training digits, writes grid + JSON; returns the summary."""
    import torch  # here, not at the top: `uae-augment demo --help` does not import torch

    from .attacks import MINEUAE
    from .criteria import Reconstruction
    from .data import load_dataset, random_subset
    from .mine import per_sample_mi
    from .models import ConvAutoencoder
    from .plots import perturbation_picture, save_image_grid
    from .training import fit

    if samples < 1 or epochs < 1:
        raise ValueError(f"samples and epochs must be >= 1, got samples={samples}, epochs={epochs}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    train = load_dataset("mnist-5k", split="train")
    if train_rows is not None:
        train = random_subset(train, train_rows, seed)  # a prefix could follow the classes
    torch.manual_seed(seed)
    model = ConvAutoencoder(in_channels=1, image_size=28)
    started = time.perf_counter()
    history = fit(model, train, epochs=epochs, seed=seed, progress=progress)
    train_s = time.perf_counter() - started

    generator = torch.Generator().manual_seed(seed)
    index = torch.randperm(len(train), generator=generator)[: min(samples, len(train))]  # all classes
    x = torch.stack([train[int(i)][0] for i in index])
    attack = MINEUAE(Reconstruction(model), preset=preset, steps=steps, seed=seed, progress=progress)
    started = time.perf_counter()
    result = attack(x, index=index)
    attack_s = time.perf_counter() - started
    delta = result.perturbation(x)
    evaluator_mi = per_sample_mi(x, result.adversarial, seed=seed, index=index)

    grid = save_image_grid(
        {"clean": x, "UAE": result.adversarial, "delta (amplified)": perturbation_picture(delta)},
        out / "uae_grid.png",
        title=f"MINE-UAE ({preset} preset) of a conv autoencoder on MNIST-5k",
    )
    summary: dict[str, Any] = {
        "dataset": "mnist-5k (train)",
        "model": "ConvAutoencoder (docs/method.md section 5)",
        "epochs": epochs,
        "train_loss_per_epoch": [float(v) for v in history.losses],
        "train_seconds": train_s,
        "attack": attack.config(),
        "samples": len(x),
        "attack_seconds": attack_s,
        "seconds_per_image": attack_s / len(x),
        **result.summary(x),
        "mean_evaluator_mi": float(evaluator_mi.mean()),
        "mean_abs_delta": float(delta.abs().mean()),
        "grid": str(grid),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    logger.info("demo finished: ASR %.3f, outputs in %s", summary["asr"], out)
    return summary


def format_summary(summary: dict[str, Any]) -> str:
    """A short human-readable report of :func:`demo`'s summary."""
    lines = [
        f"conv autoencoder: {summary['epochs']} epochs on {summary['dataset']}, "
        f"final loss {summary['train_loss_per_epoch'][-1]:.4f} ({summary['train_seconds']:.1f} s)",
        f"MINE-UAE ({summary['attack']['preset']} preset) on {summary['samples']} training digits "
        f"({summary['seconds_per_image']:.2f} s/image):",
        f"  ASR                          {summary['asr']:.3f}",
        f"  mean MI (attack's own)       {summary['mean_mi']:.4f}",
        f"  mean MI (fresh evaluator)    {summary['mean_evaluator_mi']:.4f}",
        f"  mean / max |delta|           {summary['mean_abs_delta']:.4f} / {summary['max_linf']:.4f}",
        f"  mean L-inf / L2 of delta     {summary['mean_linf']:.4f} / {summary['mean_l2']:.4f}",
        f"  moved from delta_0 (Linf/L2) {summary['mean_moved_linf']:.4f} / {summary['mean_moved_l2']:.4f}",
        f"grid: {summary['grid']}",
    ]
    return "\n".join(lines)
