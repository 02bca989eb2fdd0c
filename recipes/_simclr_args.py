"""The SimCLR recipe's command line: its flags and the ``--quick`` preset."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import _config
from uae_augment import PRESETS

QUICK: dict[str, Any] = {
    "seeds": [0],
    "train_rows": 384,
    "test_rows": 1000,
    "width": 8,
    "epochs": 12,
    "batch_size": 128,
    "presets": ["fast", "strong"],
    "attack_batch_size": 128,
    "negatives": 64,
    "linear_epochs": 300,  # 384 rows: one step per epoch
    "eval_batch_size": 256,
    "pgd_rows": 128,
    "pgd_steps": 20,
    "probe": 8,
    "threads": _config.QUICK_THREADS,
}


def build_parser(description: str) -> argparse.ArgumentParser:
    """The recipe's command-line interface (defaults: the release's full settings).

    Args:
        description: the recipe's module docstring.
    """
    parser = _config.base_parser(
        description,
        quick=QUICK,
        examples=[
            "python recipes/simclr.py --quick                        # minutes on a CPU",
            "python recipes/simclr.py --out outputs/simclr            # the release's settings (GPU)",
            "torchrun --nproc_per_node=2 recipes/simclr.py --quick --device cpu",
            "python recipes/simclr.py --quick --image-folder ~/data/stl10 --image-size 32",
        ],
    )
    parser.set_defaults(seeds=[0])
    data = parser.add_argument_group("data")
    data.add_argument("--dataset", default="cifar10", help="data set name for load_dataset (default: %(default)s)")
    data.add_argument(
        "--image-folder",
        type=Path,
        default=None,
        help="a torchvision ImageFolder tree instead (<dir>/train and <dir>/test, or one folder split 80/20)",
    )
    data.add_argument(
        "--image-size",
        type=int,
        default=32,
        help="side images of --image-folder are resized to (default: %(default)s)",
    )
    data.add_argument(
        "--train-rows",
        type=int,
        default=None,
        help="fixed random subset of N training rows (default: all)",
    )
    data.add_argument(
        "--test-rows",
        type=int,
        default=None,
        help="fixed random subset of N test rows (default: all)",
    )
    data.add_argument(
        "--workers",
        type=int,
        default=0,
        help="DataLoader workers of the training loops (default: %(default)s)",
    )
    train = parser.add_argument_group("SimCLR training")
    train.add_argument(
        "--width",
        type=int,
        default=64,
        help="backbone width (64 = ResNet-18) (default: %(default)s)",
    )
    train.add_argument(
        "--epochs",
        type=int,
        default=1000,
        help="pretraining epochs; retrains: the same epochs (default: %(default)s)",
    )
    train.add_argument("--batch-size", type=int, default=512, help="global batch (default: %(default)s)")
    train.add_argument("--lr", type=float, default=1.0, help="LARS learning rate (default: %(default)s)")
    train.add_argument("--weight-decay", type=float, default=1e-4, help="(default: %(default)s)")
    train.add_argument(
        "--warmup-fraction",
        type=float,
        default=0.01,
        help="share of warm-up steps (default: %(default)s, 10 of 1000 epochs)",
    )
    train.add_argument("--no-control", action="store_true", help="skip the same-steps clean control")
    attack = parser.add_argument_group("attacks")
    attack.add_argument(
        "--presets",
        nargs="+",
        choices=sorted(PRESETS),
        default=["paper", "strong"],
        help="MINE-UAE presets, one augmented retrain each (default: %(default)s)",
    )
    attack.add_argument(
        "--attack-steps",
        type=int,
        default=20,
        help="MinMax iterations (release SimCLR: %(default)s)",
    )
    attack.add_argument(
        "--mine-steps",
        type=int,
        default=None,
        help="MINE Adam steps per iteration (default: the preset's)",
    )
    attack.add_argument(
        "--n-views",
        type=int,
        default=2,
        help="views per image in the criterion's NT-Xent (default: %(default)s)",
    )
    attack.add_argument(
        "--negatives",
        type=int,
        default=256,
        help="training images whose projections are the criterion's negative bank; 0: none, the"
        " NT-Xent among the image's own views (needs --n-views >= 4) (default: %(default)s)",
    )
    attack.add_argument(
        "--attack-batch-size",
        type=int,
        default=None,
        help="images attacked together (default: the preset's)",
    )
    attack.add_argument(
        "--precompute-batch-size",
        type=int,
        default=256,
        help="rows per precompute batch (default: %(default)s)",
    )
    attack.add_argument(
        "--probe",
        type=int,
        default=16,
        help="training images attacked again in memory: grid and moved-from-delta_0 statistics (default: %(default)s)",
    )
    evaluation = parser.add_argument_group("evaluation")
    evaluation.add_argument(
        "--linear-epochs",
        type=int,
        default=100,
        help="linear evaluation epochs (default: %(default)s)",
    )
    evaluation.add_argument(
        "--linear-lr",
        type=float,
        default=1e-3,
        help="Adam learning rate of the linear layer (default: %(default)s)",
    )
    evaluation.add_argument(
        "--eval-batch-size",
        type=int,
        default=512,
        help="batch of the test-set NT-Xent (its negatives) (default: %(default)s)",
    )
    evaluation.add_argument(
        "--pgd-epsilons",
        type=float,
        nargs="+",
        default=[1, 2, 4, 8, 16],
        help="L-inf radii in 1/255 (default: %(default)s)",
    )
    evaluation.add_argument("--pgd-steps", type=int, default=100, help="PGD steps (release: %(default)s)")
    evaluation.add_argument(
        "--pgd-rows",
        type=int,
        default=1000,
        help="test images attacked by PGD (default: %(default)s)",
    )
    return parser
