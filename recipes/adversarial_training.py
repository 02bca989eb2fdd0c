"""Adversarial training of a LeNet-style MNIST classifier: standard vs FGSM, Goodfellow, Kurakin and Madry.

Reproduces the study of ``references/harnessing-adversarial-examples.md``: the
LeNet-style net of its layer table (``uae_augment.models.LeNet``) behind a
mean-image subtraction (``InputNormalization``, so attacks still see [0, 1]
pixels), trained for 30 epochs on the 60,000 MNIST training images:

* ``standard``: clean training (``clean_step``);
* ``fgsm-augment``: the reference's adversarial training: at the start of every
  epoch the FGSM example of every training image is made with the model of that
  epoch, and the epoch trains on clean and adversarial images 1:1 (2N images, so
  twice the steps of ``standard``; ``fgsm_augment_epoch``);
* ``goodfellow``: Goodfellow et al.'s mixed loss alpha CE(x) + (1 - alpha) CE(x_adv),
  alpha = 0.5, FGSM against the current parameters at every step (``goodfellow_step``);
* ``kurakin``: Kurakin et al.'s mixed mini-batch, k of the m images replaced by
  their FGSM examples, weight lambda (``kurakin_step``; m = batch, k = m / 2, lambda = 0.3);
* ``madry``: Madry et al.'s PGD training on the PGD examples only (``madry_step``).

Every model is evaluated on the clean test set and on its own FGSM test set
(white box, the reference's "Adversarial" column) with the reference's columns
(correctly predicted, error, confidence, confidence when correct, confidence
when wrong; ``uae_augment.evaluation.confidence_table``), plus its accuracy under
PGD and the product of its layers' Lipschitz bounds. The reference does not state
its FGSM epsilon; the default 0.25 is Goodfellow et al.'s MNIST value (inputs in
[0, 1]), and ``fgsm_vs_epsilon.png`` shows how the FGSM accuracy depends on it.
Its optimiser is not stated either: the default is LeNet's (MatConvNet's
``cnn_mnist``: SGD lr 1e-3, momentum 0.9, weight decay 5e-4, batch 100).

Outputs in ``--out``: ``results.json`` (per-seed tables, summaries, the published
figures, the environment), ``results.md`` (the tables beside the published ones),
``config.yaml``, ``wall_time.log``, ``training_curves.png``, ``fgsm_vs_epsilon.png``,
``examples.png`` (clean | FGSM | PGD test images of the standard model) and the
trained weights under ``models/`` (reused by reruns with the same settings).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import math
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import torch
from torch import nn

import _adversarial_training_report
import _config
import _protocol
import _report
from _adversarial_training_report import LABELS, PUBLISHED
from uae_augment import FGSM, PGD
from uae_augment.devices import resolve_device
from uae_augment.evaluation import confidence_table, lipschitz_bounds
from uae_augment.models import LeNet
from uae_augment.plots import perturbation_picture, save_curves, save_image_grid
from uae_augment.training import (
    InputNormalization,
    clean_step,
    fgsm_augment_epoch,
    goodfellow_step,
    kurakin_step,
    madry_step,
    train_epoch,
)

RECIPE = "adversarial_training"
METHODS = ("standard", "fgsm-augment", "goodfellow", "kurakin", "madry")
QUICK: dict[str, Any] = {
    "dataset": "mnist-5k",
    "seeds": [0],
    "epochs": 4,
    "lr": 0.01,
    "madry_steps": 5,
    "pgd_steps": 10,
    "threads": _config.QUICK_THREADS,
}


def build_parser() -> argparse.ArgumentParser:
    """The recipe's command-line interface."""
    parser = _config.base_parser(
        __doc__,
        quick=QUICK,
        examples=[
            "python recipes/adversarial_training.py --quick          # MNIST-5k, minutes on a CPU",
            "python recipes/adversarial_training.py --seeds 0        # the reference's setting (MNIST, 30 epochs)",
            "python recipes/adversarial_training.py --quick --methods standard madry --epsilon 0.3",
        ],
    )
    group = parser.add_argument_group("experiment")
    group.add_argument(
        "--dataset",
        default="mnist",
        help="data set (default: %(default)s; 'mnist-5k' needs no files)",
    )
    group.add_argument(
        "--methods",
        nargs="+",
        default=list(METHODS),
        choices=METHODS,
        help="training methods (default: all)",
    )
    group.add_argument("--epochs", type=int, default=30, help="training epochs (reference: %(default)s)")
    group.add_argument("--batch-size", type=int, default=100, help="mini-batch size m (default: %(default)s)")
    group.add_argument(
        "--lr",
        type=float,
        default=None,
        help="SGD learning rate (default: LeNet's, 1e-3; momentum 0.9 and weight decay 5e-4 always)",
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
        help="fixed random subset of N test rows (default: all)",
    )
    attack = parser.add_argument_group("attacks")
    attack.add_argument(
        "--epsilon",
        type=float,
        default=0.25,
        help="L-inf radius of FGSM and PGD, training and test, in [0, 1] pixel units (default: %(default)s)",
    )
    attack.add_argument(
        "--alpha",
        type=float,
        default=0.5,
        help="Goodfellow's clean-loss weight (default: %(default)s)",
    )
    attack.add_argument(
        "--kurakin-k",
        type=int,
        default=None,
        help="adversarial rows per batch (default: batch size // 2)",
    )
    attack.add_argument(
        "--kurakin-lambda",
        type=float,
        default=0.3,
        help="Kurakin's adversarial weight (default: %(default)s)",
    )
    attack.add_argument(
        "--madry-steps",
        type=int,
        default=7,
        help="PGD steps of Madry training (default: %(default)s)",
    )
    attack.add_argument(
        "--pgd-steps",
        type=int,
        default=20,
        help="PGD steps of the test-time attack (default: %(default)s)",
    )
    attack.add_argument(
        "--epsilon-sweep",
        type=float,
        nargs="+",
        default=[0.05, 0.1, 0.15, 0.2, 0.25, 0.3],
        help="FGSM radii of fgsm_vs_epsilon.png (default: %(default)s)",
    )
    return parser


# --------------------------------------------------------------------------- training


def pgd(model: nn.Module, epsilon: float, steps: int, seed: int) -> PGD:
    """Madry et al.'s PGD: random start, ``steps`` sign steps of 2.5 epsilon / steps."""
    return PGD(model, epsilon=epsilon, steps=steps, step_size=2.5 * epsilon / steps, seed=seed)


@dataclasses.dataclass
class Run:
    """One trained model: method, seed, the network and its per-epoch metrics."""

    method: str
    seed: int
    model: nn.Module
    history: dict[str, Any]


def trainer(
    method: str,
    args: argparse.Namespace,
    x: torch.Tensor,
    y: torch.Tensor,
    seed: int,
    progress: bool,
) -> _protocol.Trainer:
    """A :data:`_protocol.Trainer` that trains with ``method`` for ``args.epochs`` epochs."""

    def train(model: nn.Module, _dataset: Any) -> tuple[nn.Module, dict[str, Any]]:
        model.train()
        inner = model.model if isinstance(model, InputNormalization) else model
        lr = args.lr if args.lr is not None else inner.configure_optimizers()[0].defaults["lr"]
        optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
        step = epoch_step(method, model, args, seed)
        epochs: list[dict[str, float]] = []
        for epoch in range(args.epochs):
            epochs.append(step(optimizer, x, y, epoch=epoch, progress=progress))
        model.eval()
        return model, {
            "steps": int(sum(e["steps"] for e in epochs)),
            "epochs": len(epochs),
            "batch_size": args.batch_size,
            "losses": [e["loss"] for e in epochs],
            "metrics": epochs,
            "lr": lr,
            "seconds": math.nan,
        }

    return train


def epoch_step(method: str, model: nn.Module, args: argparse.Namespace, seed: int) -> Callable[..., dict[str, float]]:
    """``run(optimizer, x, y, epoch=, progress=)``: one epoch of ``method`` on ``model``."""
    fgsm = FGSM(model, epsilon=args.epsilon, seed=seed)
    common_options = {"batch_size": args.batch_size, "seed": seed}
    if method == "fgsm-augment":
        return functools.partial(fgsm_augment_epoch, model, attack=fgsm, **common_options)
    if method == "standard":
        step, options = clean_step, {}
    elif method == "goodfellow":
        step, options = goodfellow_step, {"attack": fgsm, "alpha": args.alpha}
    elif method == "kurakin":
        generator = torch.Generator().manual_seed(seed)
        step, options = (
            kurakin_step,
            {
                "attack": fgsm,
                "k": args.kurakin_k,
                "lam": args.kurakin_lambda,
                "generator": generator,
            },
        )
    elif method == "madry":
        step, options = madry_step, {"attack": pgd(model, args.epsilon, args.madry_steps, seed)}
    else:
        raise ValueError(f"unknown method {method!r}")
    return functools.partial(train_epoch, model, step=step, **common_options, **options)


# --------------------------------------------------------------------------- evaluation


def evaluate(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, args: argparse.Namespace, seed: int
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The reference's tables on clean and FGSM test sets, PGD accuracy, the epsilon sweep, Lipschitz."""
    fgsm_x = FGSM(model, epsilon=args.epsilon, seed=seed)(x, y).adversarial
    pgd_result = pgd(model, args.epsilon, args.pgd_steps, seed)(x, y)
    pgd_table = confidence_table(model, pgd_result.adversarial, y)
    sweep = {
        f"{eps:g}": confidence_table(model, FGSM(model, epsilon=eps, seed=seed)(x, y).adversarial, y).correct
        for eps in args.epsilon_sweep
    }
    lipschitz = lipschitz_bounds(model, tuple(x.shape[1:]), tol=1e-5)
    record = {
        "clean": confidence_table(model, x, y).as_dict(),
        "fgsm": confidence_table(model, fgsm_x, y).as_dict(),
        "pgd": pgd_table.as_dict(),
        "pgd_accuracy": pgd_table.correct,
        "fgsm_accuracy_vs_epsilon": sweep,
        "lipschitz_product": lipschitz.product,
        "lipschitz_layers": {
            layer.name: layer.norm for layer in lipschitz.layers if layer.kind in ("Conv2d", "Linear")
        },
    }
    shown = (
        torch.linspace(0, len(x) - 1, min(12, len(x))).round().long().unique().to(x.device)
    )  # splits may be sorted by class
    return record, {"clean": x[shown], "FGSM": fgsm_x[shown], "PGD": pgd_result.adversarial[shown]}


# --------------------------------------------------------------------------- entry point


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the recipe; prints the Markdown tables; returns the exit status (0 on success)."""
    parser = build_parser()
    args, out = _config.start_run(parser, argv, QUICK, RECIPE, save=False)
    if args.epochs < 1:
        parser.error(f"--epochs must be >= 1, got {args.epochs}")
    _config.save_config(args, out, argv)
    device = resolve_device(args.device)
    progress = not args.no_progress
    timer = _report.StageTimer(out / _report.WALL_TIME_FILE)
    try:
        with timer.stage("load"):
            train, test = _protocol.load_splits(
                args.dataset, args.data_root, train_rows=args.train_rows, test_rows=args.test_rows
            )
            x, y = _protocol.stack(train)
            x_test, y_test = _protocol.stack(test)
    except _protocol.MissingDataset as error:
        parser.error(str(error))
    x, y, x_test, y_test = x.to(device), y.to(device), x_test.to(device), y_test.to(device)
    mean_image = x.mean(dim=0)
    shape = tuple(x.shape[1:])

    def build() -> nn.Module:
        return InputNormalization(LeNet(shape, classes=int(y.max()) + 1), mean_image).to(device)

    runs: list[dict[str, Any]] = []
    curves: dict[str, list[float]] = {}
    sweeps: dict[str, list[float]] = {}
    examples: dict[str, torch.Tensor] = {}
    for seed in args.seeds:
        for method in args.methods:
            tag = f"{method}/seed{seed}"
            key = {
                "method": method,
                "seed": seed,
                "dataset": args.dataset,
                "rows": len(x),
                "epochs": args.epochs,
                "batch_size": args.batch_size,
                "lr": args.lr,
                "epsilon": args.epsilon,
                "alpha": args.alpha,
                "kurakin": [args.kurakin_k, args.kurakin_lambda],
                "madry_steps": args.madry_steps,
            }
            with timer.stage(f"{tag}/train"):
                model, history = _protocol.train_model(
                    build,
                    train,
                    trainer(method, args, x, y, seed, progress),
                    seed=seed,
                    device=device,
                    checkpoint=out / "models" / f"{method}-seed{seed}.pt",
                    key=key,
                )
            train_s = timer.records[-1]["seconds"]
            with timer.stage(f"{tag}/evaluate"):
                record, images = evaluate(model, x_test, y_test, args, seed)
            runs.append(
                {
                    "method": method,
                    "seed": seed,
                    "train": {k: v for k, v in history.items() if k != "seconds"},
                    "train_s": train_s,
                    "eval": record,
                }
            )
            if seed == args.seeds[0]:
                curves[method] = history["losses"]
                sweeps[method] = list(record["fgsm_accuracy_vs_epsilon"].values())
                if method == args.methods[0]:
                    examples = images
    timer.close()
    summary = _adversarial_training_report.summarise(runs, args.methods)
    data_label = args.dataset if args.train_rows is None else f"{args.dataset} ({len(x)} training rows)"
    table = _adversarial_training_report.markdown(summary, args, data_label)
    figures = [
        save_curves(
            {LABELS[m]: v for m, v in curves.items()},
            out / "training_curves.png",
            ylabel="mean training loss",
            title="training loss per epoch (first seed)",
        ),
        _sweep_plot(sweeps, args.epsilon_sweep, out / "fgsm_vs_epsilon.png"),
        save_image_grid(
            {
                "clean": examples["clean"].cpu(),
                "FGSM": examples["FGSM"].cpu(),
                "FGSM δ": perturbation_picture((examples["FGSM"] - examples["clean"]).cpu()),
                "PGD": examples["PGD"].cpu(),
                "PGD δ": perturbation_picture((examples["PGD"] - examples["clean"]).cpu()),
            },
            out / "examples.png",
            title=f"{LABELS[args.methods[0]]}: test images, ε = {args.epsilon:g}",
        ),
    ]
    _report.write_outputs(
        out,
        RECIPE,
        args,
        timer,
        table,
        {
            "dataset": {"name": args.dataset, "train_size": len(x), "test_size": len(x_test)},
            "runs": runs,
            "summary": summary,
            "published": PUBLISHED,
            "figures": [str(p) for p in figures],
        },
    )
    return 0


def _sweep_plot(sweeps: dict[str, list[float]], epsilons: Sequence[float], path: Path) -> Path:
    """FGSM test accuracy against epsilon, one curve per method."""
    figure, axis = plt.subplots(figsize=(5.5, 3.6))
    for method, values in sweeps.items():
        axis.plot(list(epsilons), values, marker="o", label=LABELS[method])
    axis.set_xlabel("FGSM ε (pixels in [0, 1])")
    axis.set_ylabel("test accuracy")
    axis.set_ylim(0, 1)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


if __name__ == "__main__":
    sys.exit(main())
