"""uae-augment on one page (``make demo``): MNIST digits + MINE-UAEs vs the same-steps control.

1. train a conv autoencoder on a seeded random draw of the embedded MNIST-5k digits;
2. attack every training digit once with MINE-UAE (fast preset) into an HDF5 cache;
3. retrain from the same initial weights on clean + UAEs (1:1, so twice the steps);
4. train the clean model for as many steps too (the same-steps control), and print
   every arm's test reconstruction error and the attack's success rate.

Run ``python recipes/example.py`` (``--help`` for the sizes): 31.4 CPU s with one torch
thread at the defaults (``/usr/bin/time``, 31 s wall on the 2-core test machine; README,
top). A rerun with the same flags reuses the cache and prints the same table.
One seed at this size decides nothing: README.md, section "Results", has the
multi-seed comparison.
"""

from __future__ import annotations

import argparse
import copy
import logging
from collections.abc import Sequence
from pathlib import Path

import torch

from uae_augment import (
    MINEUAE,
    Reconstruction,
    UAEAugmented,
    fit,
    load_dataset,
    precompute,
    random_subset,
)
from uae_augment.evaluation import reconstruction_error
from uae_augment.models import ConvAutoencoder


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The sizes of the run (defaults: ``make demo``)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--train-rows", type=int, default=400, help="training digits (default: %(default)s)")
    add("--test-rows", type=int, default=1000, help="test digits (default: %(default)s)")
    add("--epochs", type=int, default=6, help="epochs of the original (default: %(default)s)")
    add("--attack-steps", type=int, default=5, help="MinMax iterations T (default: %(default)s)")
    add("--seed", type=int, default=0, help="data draw, weights, attack (default: %(default)s)")
    add("--threads", type=int, default=1, help="torch threads (default: %(default)s)")
    add("--out", type=Path, default=Path("outputs/example"), help="cache folder (%(default)s)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the example and prints its table; returns 0."""
    args = parse_args(argv)
    logging.basicConfig(format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("uae_augment").setLevel(logging.INFO)  # the library's time estimates
    torch.set_num_threads(args.threads)
    train = random_subset(load_dataset("mnist-5k"), args.train_rows, seed=args.seed)
    test = random_subset(load_dataset("mnist-5k", split="test"), args.test_rows, seed=args.seed)
    x_test = torch.stack([x for x, _ in test])
    torch.manual_seed(args.seed)
    initial = ConvAutoencoder(in_channels=1, image_size=28)  # every arm starts from these weights

    print(f"1. original: conv autoencoder, {len(train)} digits, {args.epochs} epochs")
    original = copy.deepcopy(initial)
    original_steps = fit(original, train, epochs=args.epochs, seed=args.seed).steps

    print(f"2. MINE-UAE (fast preset, T = {args.attack_steps}) of every training digit -> HDF5")
    criterion = Reconstruction(original)  # f_x = 0: the UAE is reconstructed no worse than x
    attack = MINEUAE(criterion, preset="fast", steps=args.attack_steps, seed=args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    cache = precompute(train, attack, args.out / "mine-uae.h5")  # a rerun reuses the finished file

    print("3. MINE-UAE arm: the same initial weights trained on clean + UAEs (1:1)")
    augmented = UAEAugmented(train, attack, cache=cache)
    retrained = copy.deepcopy(initial)
    steps = fit(retrained, augmented, epochs=args.epochs, seed=args.seed).steps

    print(f"4. same-steps control: the clean digits for the same {steps} optimisation steps")
    control = copy.deepcopy(initial)
    fit(control, train, max_steps=steps, seed=args.seed)

    print(f"\n| arm (seed {args.seed}) | steps | test MSE | vs same-steps control | ASR |")
    print("| --- | --- | --- | --- | --- |")
    control_mse = reconstruction_error(control, x_test)
    arms = (
        ("original", original, original_steps, "—"),
        ("same-steps control", control, steps, "—"),
        ("MINE-UAE", retrained, steps, f"{augmented.asr:.1%}"),  # training-set success rate
    )
    for name, model, arm_steps, asr in arms:
        mse = reconstruction_error(model, x_test)
        change = 100 * (control_mse - mse) / control_mse
        print(f"| {name} | {arm_steps} | {mse:.5f} | {change:+.1f}% | {asr} |")
    print(
        f"\nTest MSE on {len(x_test)} digits; + = lower error than the control. One seed at this"
        ' size decides nothing: README.md, section "Results", has the multi-seed comparison.'
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
