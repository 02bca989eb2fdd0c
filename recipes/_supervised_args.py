"""The supervised-attacks recipe's command line: the attacks and data sets its flags name, the ``--quick``
preset and the MINE learning rate a preset gives the C&W nets."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

import _config
from uae_augment import PRESETS, BySampler

ATTACKS = ("minmax", "penalty", "pgd", "fgsm", "lbfgs")


@dataclasses.dataclass(frozen=True)
class DataSpec:
    """A data set of the recipe: the paper's name for it, the input shape and the L∞ budget of PGD/FGSM."""

    name: str
    published: str
    shape: tuple[int, int, int]
    epsilon: float
    pgd_steps: int


DATASETS: dict[str, DataSpec] = {
    "mnist": DataSpec("mnist", "MNIST", (1, 28, 28), 0.3, 40),
    "mnist-5k": DataSpec("mnist-5k", "MNIST", (1, 28, 28), 0.3, 40),
    "cifar10": DataSpec("cifar10", "CIFAR-10", (3, 32, 32), 8 / 255, 20),
}


QUICK: dict[str, Any] = {
    "datasets": ["mnist-5k", "cifar10"],
    "seeds": [0],
    "train_rows": 2000,
    "test_rows": 1000,
    "epochs": 6,
    "cifar_epochs": 4,
    "optimizer": "adam",
    "images": 50,
    "preset": "strong",
    "alpha": 0.01,
    "c0": 1.0,
    "steps": 30,
    "penalty_search_steps": 2,
    "penalty_steps": 30,
    "penalty_mine_steps": 1,
    "pgd_steps": 10,
    "lbfgs_search_steps": 3,
    "lbfgs_max_iter": 20,
    "mi_steps": 600,
    "threads": _config.QUICK_THREADS,
}
"""The minutes-long CPU preset. Deviations that keep it short: Adam (lr 1e-3) trains the victims,
because the release's SGD stays at chance level for the first epochs on a 2,000-image CIFAR-10
subset (measured: loss 2.29 after 3 epochs); and the MINE attacks use the ``strong`` preset (sign
steps, here of 0.01) with c0 = 1, because with the release's plain gradient steps of 0.01 and
c0 = 1e-3 they need hundreds of iterations on CIFAR-10 (measured on this quick victim: 10% ASR
after 100 MinMax iterations). The penalty attack runs 2 rounds of MinMax's 30 iterations (the
paper: 9 rounds of 1000): each round restarts from delta_0, so shorter rounds cannot reach the
distortion MNIST needs (measured: 14% ASR with 4 rounds of 10)."""


def feature_map_lr(preset: str) -> float:
    """The preset's MINE learning rate for the C&W nets (convolutional: feature-map mode)."""
    lr = PRESETS[preset]["mine_lr"]
    return lr.resolve("feature_maps") if isinstance(lr, BySampler) else float(lr)


def build_parser(description: str) -> argparse.ArgumentParser:
    """The recipe's command-line interface; ``description``: the recipe's module docstring."""
    parser = _config.base_parser(
        description,
        quick=QUICK,
        examples=[
            "python recipes/supervised_attacks.py --quick            # MNIST-5k + a CIFAR-10 subset, 50 images",
            "python recipes/supervised_attacks.py --seeds 0 --device cuda   # the paper's setting (GPU: hours)",
            "python recipes/supervised_attacks.py --quick --datasets mnist-5k --attacks minmax pgd",
        ],
    )
    group = parser.add_argument_group("experiment")
    group.add_argument(
        "--datasets",
        nargs="+",
        default=["mnist", "cifar10"],
        choices=list(DATASETS),
        help="data sets (default: %(default)s)",
    )
    group.add_argument(
        "--attacks",
        nargs="+",
        default=list(ATTACKS),
        choices=ATTACKS,
        help="attacks (default: all)",
    )
    group.add_argument(
        "--images",
        type=int,
        default=1000,
        help="correctly classified test images attacked (default: %(default)s)",
    )
    group.add_argument(
        "--train-rows",
        type=int,
        default=None,
        help="fixed random subset of N training rows (default: all)",
    )
    group.add_argument(
        "--test-rows",
        type=int,
        default=None,
        help="fixed random subset of N test rows (accuracy; the attacked images come from it) (default: all)",
    )
    group.add_argument(
        "--epochs",
        type=int,
        default=50,
        help="training epochs of the classifiers (release: %(default)s)",
    )
    group.add_argument(
        "--cifar-epochs",
        type=int,
        default=None,
        help="training epochs on CIFAR-10 (default: --epochs)",
    )
    group.add_argument(
        "--optimizer",
        choices=("sgd", "adam"),
        default="sgd",
        help="'sgd': the release's (momentum 0.9, Nesterov); 'adam' (default: %(default)s)",
    )
    group.add_argument(
        "--lr",
        type=float,
        default=None,
        help="learning rate (default: sgd 0.01 as released, adam 1e-3)",
    )
    mine = parser.add_argument_group("MINE attacks")
    mine.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default="paper",
        help="MinMax and penalty preset (default: %(default)s, the release's values)",
    )
    mine.add_argument("--steps", type=int, default=None, help="MinMax iterations T (default: the preset's, 1000)")
    mine.add_argument(
        "--penalty-search-steps",
        type=int,
        default=9,
        help="binary-search rounds (default: %(default)s)",
    )
    mine.add_argument(
        "--penalty-steps",
        type=int,
        default=None,
        help="iterations per round (default: the preset's, 1000)",
    )
    mine.add_argument(
        "--penalty-mine-steps",
        type=int,
        default=None,
        help="MINE Adam steps per penalty iteration (default: the release's 20)",
    )
    mine.add_argument("--alpha", type=float, default=None, help="step size on δ (default: the preset's)")
    mine.add_argument(
        "--c0",
        type=float,
        default=None,
        help="initial trade-off constant c (default: the preset's, 1e-3)",
    )
    mine.add_argument(
        "--attack-batch-size",
        type=int,
        default=None,
        help="images attacked together (default: the preset's)",
    )
    gradient = parser.add_argument_group("gradient attacks")
    gradient.add_argument(
        "--epsilon",
        type=float,
        default=None,
        help="L∞ radius of PGD and FGSM (default: MNIST 0.3, CIFAR-10 8/255)",
    )
    gradient.add_argument("--pgd-steps", type=int, default=None, help="PGD steps (default: MNIST 40, CIFAR-10 20)")
    gradient.add_argument(
        "--lbfgs-search-steps",
        type=int,
        default=10,
        help="L-BFGS constants c tried (default: %(default)s)",
    )
    gradient.add_argument(
        "--lbfgs-max-iter",
        type=int,
        default=100,
        help="L-BFGS-B iterations per c (default: %(default)s)",
    )
    evaluator = parser.add_argument_group("independent MI evaluator (uae_augment.per_sample_mi)")
    evaluator.add_argument(
        "--mi-steps",
        type=int,
        default=1200,
        help="Adam steps of the evaluator's MINE (default: %(default)s)",
    )
    evaluator.add_argument("--mi-lr", type=float, default=1e-2, help="its learning rate (default: %(default)s)")
    evaluator.add_argument(
        "--mi-projections",
        type=int,
        default=200,
        help="random projections K (default: %(default)s)",
    )
    evaluator.add_argument(
        "--mi-projection-dim",
        type=int,
        default=32,
        help="projected sample length (default: %(default)s)",
    )
    evaluator.add_argument(
        "--no-mi-check",
        action="store_true",
        help="skip the convergence check (scoring again with 2x the steps)",
    )
    return parser
