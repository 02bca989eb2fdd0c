"""The autoencoders recipe's command line: the models, methods and data sets its flags name, the
``--quick`` preset, the published figures, and the data sets resolved from ``--datasets``."""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import _config
import _protocol
from uae_augment import MINEUAE, PRESETS, Attack, GaussianNoise, LpUAE, Reconstruction

MODEL_KINDS = ("sparse", "dense", "conv", "adversarial")
DATASETS = ("mnist", "fashion-mnist", "svhn")
SVHN_STAND_IN = "cifar10"


@dataclasses.dataclass(frozen=True)
class Method:
    """One augmentation method: its table label, published-table key and attack factory."""

    key: str
    label: str
    published: str | None
    build: Callable[[Reconstruction, argparse.Namespace, int], Attack]


def attack_steps(criterion: Reconstruction, args: argparse.Namespace, *, strong: bool = False) -> int | None:
    """MinMax iterations for this model: ``--dense-attack-steps`` for models without a convolution."""
    if args.dense_attack_steps is not None and criterion.feature_layer() is None:
        return args.dense_attack_steps
    return (args.strong_steps or args.attack_steps) if strong else args.attack_steps


def _mine(criterion: Reconstruction, args: argparse.Namespace, seed: int) -> Attack:
    return MINEUAE(
        criterion,
        preset=args.preset,
        steps=attack_steps(criterion, args),
        mine_steps=args.mine_steps,
        projections=args.projections,
        projection_dim=args.projection_dim,
        seed=seed,
        batch_size=args.attack_batch_size,
    )


def _l2(criterion: Reconstruction, args: argparse.Namespace, seed: int) -> Attack:
    return LpUAE(criterion, preset=args.preset, steps=attack_steps(criterion, args), seed=seed)


def _init_only(criterion: Reconstruction, args: argparse.Namespace, seed: int) -> Attack:
    return MINEUAE(
        criterion,
        preset=args.preset,
        steps=1,
        projections=args.projections,
        projection_dim=args.projection_dim,
        seed=seed,
        batch_size=args.attack_batch_size,
    )


def _mine_strong(criterion: Reconstruction, args: argparse.Namespace, seed: int) -> Attack:
    return MINEUAE(
        criterion,
        preset="strong",
        steps=attack_steps(criterion, args, strong=True),
        mine_steps=args.mine_steps,
        projections=args.projections,
        projection_dim=args.projection_dim,
        seed=seed,
        batch_size=args.attack_batch_size,
    )


def _noise(sigma: float) -> Callable[[Reconstruction, argparse.Namespace, int], Attack]:
    def build(criterion: Reconstruction, args: argparse.Namespace, seed: int) -> Attack:
        return GaussianNoise(criterion, sigma=sigma, seed=seed)

    return build


METHODS: dict[str, Method] = {
    m.key: m
    for m in (
        Method("mine", "MINE-UAE", "mine", _mine),
        Method("l2", "L2-UAE", "l2", _l2),
        Method("ga-0.01", "GA σ=0.01", "ga-0.01", _noise(0.01)),
        Method("ga-0.001", "GA σ=1e-3", "ga-0.001", _noise(0.001)),
        Method("init-only", "init only", None, _init_only),
        Method("mine-strong", "MINE-UAE strong", None, _mine_strong),
    )
}

Published = dict[str, Any]
"""One row of the published table: test error per method key ("original", "mine", "l2",
"ga-0.01", "ga-0.001"; None where the OCR'd report is illegible) and "asr" (%) per method."""


def _published(
    original: float | None,
    mine: float | None,
    l2: float | None,
    ga1: float | None,
    ga2: float | None,
    asr: tuple[float, float, float, float],
) -> Published:
    return {
        "original": original,
        "mine": mine,
        "l2": l2,
        "ga-0.01": ga1,
        "ga-0.001": ga2,
        "asr": dict(zip(("mine", "l2", "ga-0.01", "ga-0.001"), asr)),
    }


# docs/method.md section 6: test reconstruction error per method and training-set ASR (%).
PUBLISHED: dict[str, dict[str, Published]] = {
    "MNIST": {
        "sparse": _published(0.00561, 0.00243, 0.00348, 0.00280, 0.00280, (100, 99.18, 54.10, 63.95)),
        "dense": _published(0.00258, 0.00228, 0.00286, 0.00244, 0.00238, (92.99, 99.94, 48.53, 58.47)),
        "conv": _published(0.00294, 0.00256, 0.00364, 0.00301, 0.00304, (99.86, 99.61, 68.71, 99.61)),
        "adversarial": _published(0.04785, 0.04581, 0.06098, 0.05793, 0.05544, (98.46, 43.54, 99.79, 99.83)),
    },
    "SVHN": {
        "sparse": _published(0.00887, 0.00235, 0.00315, 0.00301, 0.00293, (100, 72.16, 72.42, 79.92)),
        "dense": _published(0.00659, 0.00421, 0.0055, 0.00858, 0.00860, (99.99, 82.65, 92.3, 93.92)),
        "conv": _published(None, None, None, None, None, (100, 56, 96.40, 99.24)),
        "adversarial": _published(0.00173, None, None, 0.00161, 0.00130, (94.82, 58.98, 97.31, 99.85)),
    },
}

QUICK: dict[str, Any] = {
    "datasets": ["mnist-5k"],
    "seeds": [0, 1],
    "epochs": 6,
    "train_rows": 400,
    "test_rows": 1000,
    "preset": "fast",
    "attack_steps": 5,
    "dense_attack_steps": 40,  # random-projection MINE needs the paper's T to reach MI > 0; cheap there
    "projections": 100,
    "projection_dim": 32,  # ~3x cheaper than 128 (measured): projecting x' dominates a dense model's attack
    "probe": 8,
    "threads": _config.QUICK_THREADS,
}


# --------------------------------------------------------------------------- configuration


def build_parser(description: str) -> argparse.ArgumentParser:
    """The recipe's command-line interface; ``description``: the recipe's module docstring."""
    parser = _config.base_parser(
        description,
        quick=QUICK,
        examples=[
            "python recipes/autoencoders.py --quick                      # MNIST-5k, minutes on a CPU",
            "python recipes/autoencoders.py --config recipes/configs/autoencoders_full.yaml",
            "python recipes/autoencoders.py --quick --models conv --methods mine ga-0.01 --seeds 0",
        ],
    )
    group = parser.add_argument_group("experiment")
    group.add_argument(
        "--datasets",
        nargs="+",
        default=list(DATASETS),
        help="data sets; 'svhn' falls back to cifar10 (32x32x3) when its file is absent (default: %(default)s)",
    )
    group.add_argument(
        "--models",
        nargs="+",
        default=list(MODEL_KINDS),
        choices=MODEL_KINDS,
        help="autoencoder kinds (default: all)",
    )
    group.add_argument(
        "--methods",
        nargs="+",
        default=list(METHODS),
        choices=list(METHODS),
        help="augmentation methods (default: all)",
    )
    group.add_argument("--no-control", action="store_true", help="skip the same-steps clean control")
    group.add_argument(
        "--failed",
        choices=_protocol.FAILED_POLICIES,
        default="keep",
        help="UAEs whose attack failed: keep them (the release's concatenation) or drop them (default: %(default)s)",
    )
    group.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="training epochs of every model (default: the release's per model: sparse 50, dense 20, conv 20, adversarial 50)",
    )
    group.add_argument(
        "--train-rows",
        type=int,
        default=None,
        help="use a fixed random subset of N training rows (default: all)",
    )
    group.add_argument(
        "--test-rows",
        type=int,
        default=None,
        help="use a fixed random subset of N test rows (default: all)",
    )
    attack = parser.add_argument_group("attacks")
    attack.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default="paper",
        help="MINE-UAE / L2-UAE / init-only preset (default: %(default)s, the release's values)",
    )
    attack.add_argument(
        "--attack-steps",
        type=int,
        default=None,
        help="MinMax iterations T (default: the preset's, 40)",
    )
    attack.add_argument(
        "--strong-steps",
        type=int,
        default=None,
        help="iterations of mine-strong (default: --attack-steps)",
    )
    attack.add_argument(
        "--dense-attack-steps",
        type=int,
        default=None,
        help="MinMax iterations of every MINE/L2 attack on the models without a convolution"
        " (random-projection MINE, whose DV estimate starts negative and needs about the"
        " paper's 40 iterations to pass the MI > 0 filter; default: --attack-steps)",
    )
    attack.add_argument(
        "--mine-steps",
        type=int,
        default=None,
        help="MINE Adam steps per iteration (default: the preset's)",
    )
    attack.add_argument(
        "--projections",
        type=int,
        default=500,
        help="random projections K of MINE for the dense models (release: %(default)s)",
    )
    _config.add_mine_batch_arguments(attack)
    return parser


# --------------------------------------------------------------------------- data


@dataclasses.dataclass
class DataSpec:
    """A data set as the recipe uses it: what was asked, what was loaded, how it compares."""

    requested: str
    name: str
    published: str | None
    note: str = ""

    @property
    def label(self) -> str:
        return self.name if not self.note else f"{self.name} ({self.note})"


def resolve_datasets(requested: Sequence[str], root: Path | None) -> tuple[list[DataSpec], list[dict[str, str]]]:
    """Maps requested names to loadable data sets; returns (usable, skipped-with-reason)."""
    usable: list[DataSpec] = []
    skipped: list[dict[str, str]] = []
    for name in requested:
        key = name.lower().replace("_", "-")
        published = {"mnist": "MNIST", "mnist-5k": "MNIST", "svhn": "SVHN"}.get(key)
        if key == "svhn" and not _protocol.dataset_available("svhn", root):
            if _protocol.dataset_available(SVHN_STAND_IN, root):
                usable.append(DataSpec(name, SVHN_STAND_IN, "SVHN", "stand-in for SVHN, whose file is absent"))
            else:
                skipped.append({"dataset": name, "reason": "neither svhn nor cifar10 found in the data root"})
            continue
        if not _protocol.dataset_available(key, root):
            skipped.append({"dataset": name, "reason": "file not found in the data root"})
            continue
        note = "4,000-digit subset" if key == "mnist-5k" else ""
        usable.append(DataSpec(name, key, published, note))
    return usable, skipped
