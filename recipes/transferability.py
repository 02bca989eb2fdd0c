"""Cross-model transferability of adversarial examples and per-layer Lipschitz bounds (Szegedy et al.).

Reproduces the cross-model table of ``references/adversarial-examples-lecture-a.md``
(Szegedy et al., "Intriguing properties of neural networks", 2014) on MNIST:

1. train the table's models: softmax regressions FC10(λ) with weight decay
   λ ∈ {1e-4, 1e-2, 1}, the fully connected nets FC100-100-10 and FC200-200-10
   (ReLU, weight decay 1e-5), and AE400-10: a softmax layer on the 400-unit code
   of a dense autoencoder (the autoencoder is trained first and kept fixed); plus,
   beyond the table, the LeNet-style conv net (``--models`` chooses);
2. craft minimum-distortion adversarial examples on every model with the
   box-constrained L-BFGS attack (``uae_augment.LBFGS``) for N test digits that
   every model classifies correctly;
3. feed every model's examples to every model (``uae_augment.evaluation.transfer_matrix``):
   entry (A, B) is the error rate of B on the examples crafted against A (100% on
   the diagonal when the attack always succeeds), with rows of Gaussian noise of
   matched distortion (per image, the same RMS distortion as A's example) and
   of RMS distortion 0.1 and 0.3 (the paper's noise rows);
4. the cross-training table of the same document: the training set is split into two
   fixed random halves P1 and P2; sigmoid nets FC100-100-10 and FC123-456-10 are
   trained on P1 and FC100-100-10' on P2, and each one's L-BFGS examples are fed
   to all three (plus matched noise and noise of RMS 0.06, the paper's row);
   ``--no-cross-training`` skips it;
5. bound each model's Lipschitz constant layer by layer
   (``uae_augment.evaluation.lipschitz_bounds``: exact spectral norms of dense
   layers, power iteration on the actual convolution operators, 1/4 for a sigmoid).

Weight decay λ adds λ/2 · Σ‖W‖² over the weight matrices (not the biases) to the
mean cross-entropy. Distortion is Szegedy et al.'s sqrt(mean((x' - x)^2)).

Outputs in ``--out``: ``results.json``, ``results.md`` (our table, the published
one, the Lipschitz table), ``config.yaml``, ``wall_time.log``, ``examples.png``
(clean | adversarial per source model) and the trained weights under ``models/``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

import _config
import _protocol
import _report
from _transferability_models import CROSS_TRAINING_NOISE, MODELS, train_cross_training, train_models
from _transferability_report import (
    PUBLISHED,
    PUBLISHED_CROSS_TRAINING,
    cross_training_markdown,
    lipschitz_markdown,
    matrix_markdown,
    published_markdown,
)
from uae_augment import LBFGS
from uae_augment.devices import resolve_device
from uae_augment.evaluation import accuracy, correctly_classified, lipschitz_bounds, transfer_matrix
from uae_augment.plots import perturbation_picture, save_image_grid

RECIPE = "transferability"

QUICK: dict[str, Any] = {
    "dataset": "mnist-5k",
    "seeds": [0],
    "epochs": 8,
    "ae_epochs": 10,
    "cross_epochs": 20,
    "images": 100,
    "search_steps": 6,
    "max_iter": 60,
    "threads": _config.QUICK_THREADS,
}


def build_parser() -> argparse.ArgumentParser:
    """The recipe's command-line interface."""
    parser = _config.base_parser(
        __doc__,
        quick=QUICK,
        examples=[
            "python recipes/transferability.py --quick           # MNIST-5k, minutes on a CPU",
            "python recipes/transferability.py --seeds 0         # MNIST, 1000 images",
            "python recipes/transferability.py --quick --models 'FC10(1e-4)' FC100-100-10 AE400-10",
        ],
    )
    group = parser.add_argument_group("experiment")
    group.add_argument(
        "--dataset",
        default="mnist",
        help="data set (default: %(default)s; 'mnist-5k' needs no files)",
    )
    group.add_argument(
        "--models",
        nargs="+",
        default=list(MODELS),
        choices=list(MODELS),
        help="models (default: all)",
    )
    group.add_argument(
        "--epochs",
        type=int,
        default=20,
        help="training epochs of every classifier (default: %(default)s)",
    )
    group.add_argument(
        "--ae-epochs",
        type=int,
        default=20,
        help="training epochs of the autoencoder of AE400-10 (default: %(default)s)",
    )
    group.add_argument(
        "--train-rows",
        type=int,
        default=None,
        help="fixed random subset of N training rows (default: all)",
    )
    group.add_argument(
        "--images",
        type=int,
        default=1000,
        help="test images to attack, among those every model classifies correctly (default: %(default)s)",
    )
    group.add_argument(
        "--cross-training",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also the cross-training table (sigmoid nets on two disjoint halves of the training set)"
        " (default: %(default)s)",
    )
    group.add_argument(
        "--cross-epochs",
        type=int,
        default=None,
        help="training epochs of the cross-training nets (default: --epochs; sigmoid nets learn"
        " more slowly than ReLU nets)",
    )
    attack = parser.add_argument_group("attack (box-constrained L-BFGS)")
    attack.add_argument(
        "--search-steps",
        type=int,
        default=10,
        help="constants c tried per image (default: %(default)s)",
    )
    attack.add_argument(
        "--max-iter",
        type=int,
        default=100,
        help="L-BFGS-B iterations per constant (default: %(default)s)",
    )
    attack.add_argument(
        "--noise-rms",
        type=float,
        nargs="*",
        default=[0.1, 0.3],
        help="extra noise rows of these RMS distortions (default: %(default)s)",
    )
    return parser


# --------------------------------------------------------------------------- entry point


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the recipe; prints the Markdown tables; returns the exit status (0 on success)."""
    parser = build_parser()
    args, out = _config.start_run(parser, argv, QUICK, RECIPE)
    device = resolve_device(args.device)
    timer = _report.StageTimer(out / _report.WALL_TIME_FILE)
    try:
        with timer.stage("load"):
            train, test = _protocol.load_splits(args.dataset, args.data_root, train_rows=args.train_rows)
            x_test, y_test = _protocol.stack(test)
    except _protocol.MissingDataset as error:
        parser.error(str(error))
    x_test, y_test = x_test.to(device), y_test.to(device)
    shape, classes = _protocol.sample_shape(train), int(y_test.max()) + 1
    runs, sections = [], []
    for seed in args.seeds:
        models, training = train_models(args.models, train, shape, classes, args, seed, device, out, timer)
        accuracies = {name: accuracy(model, x_test, y_test) for name, model in models.items()}
        rows = correctly_classified(models, x_test, y_test, count=args.images, seed=_protocol.SUBSET_SEED).to(device)
        x, y = x_test[rows], y_test[rows]
        sources = {
            name: (
                model,
                LBFGS(
                    model,
                    search_steps=args.search_steps,
                    max_iter=args.max_iter,
                    seed=seed,
                    progress=not args.no_progress,
                ),
            )
            for name, model in models.items()
        }
        with timer.stage(f"seed{seed}/transfer"):
            matrix = transfer_matrix(sources, models, x, y, noise_stds=args.noise_rms, seed=seed, index=rows.cpu())
        with timer.stage(f"seed{seed}/lipschitz"):
            reports = {name: lipschitz_bounds(model, shape, tol=1e-6).as_dict() for name, model in models.items()}
        result = matrix.as_dict()
        run = {
            "seed": seed,
            "training": training,
            "test_accuracy": accuracies,
            "images": len(rows),
            "image_index": rows.tolist(),
            "transfer": result,
            "lipschitz": reports,
        }
        section = matrix_markdown(result, accuracies, len(rows)) + "\n\n" + lipschitz_markdown(reports)
        if args.cross_training:
            run["cross_training"] = cross_training(
                train, shape, classes, x_test, y_test, args, seed, device, out, timer
            )
            section += "\n\n" + cross_training_markdown(
                run["cross_training"]["transfer"],
                run["cross_training"]["test_accuracy"],
                run["cross_training"]["images"],
            )
        runs.append(run)
        sections.append(f"## Seed {seed}\n\n" + section)
        if seed == args.seeds[0]:
            grid = _examples(sources, x, y, rows, out / "examples.png")
    timer.close()
    table = "\n\n".join([*sections, published_markdown()]) + "\n"
    _report.write_outputs(
        out,
        RECIPE,
        args,
        timer,
        table,
        {
            "dataset": {"name": args.dataset, "train_size": len(train), "test_size": len(x_test)},
            "models": {name: MODELS[name].description for name in args.models},
            "runs": runs,
            "published": PUBLISHED,
            "published_cross_training": PUBLISHED_CROSS_TRAINING,
            "figures": [str(grid)],
        },
    )
    return 0


def cross_training(
    train: Any,
    shape: tuple[int, ...],
    classes: int,
    x_test: torch.Tensor,
    y_test: torch.Tensor,
    args: argparse.Namespace,
    seed: int,
    device: torch.device,
    out: Path,
    timer: _report.StageTimer,
) -> dict[str, Any]:
    """The cross-training experiment of one seed: training records, accuracies and the transfer matrix."""
    models, training = train_cross_training(train, shape, classes, args, seed, device, out, timer)
    accuracies = {name: accuracy(model, x_test, y_test) for name, model in models.items()}
    rows = correctly_classified(models, x_test, y_test, count=args.images, seed=_protocol.SUBSET_SEED).to(device)
    if len(rows) == 0:
        raise RuntimeError(
            f"no test digit is classified correctly by all cross-training nets (accuracies"
            f" {accuracies}); train longer (--epochs) or pass --no-cross-training"
        )
    sources = {
        name: (
            model,
            LBFGS(
                model,
                search_steps=args.search_steps,
                max_iter=args.max_iter,
                seed=seed,
                progress=not args.no_progress,
            ),
        )
        for name, model in models.items()
    }
    with timer.stage(f"seed{seed}/cross-training/transfer"):
        matrix = transfer_matrix(
            sources,
            models,
            x_test[rows],
            y_test[rows],
            noise_stds=[CROSS_TRAINING_NOISE],
            seed=seed,
            index=rows.cpu(),
        )
    return {
        "training": training,
        "test_accuracy": accuracies,
        "images": len(rows),
        "image_index": rows.tolist(),
        "transfer": matrix.as_dict(),
    }


def _examples(sources: dict[str, Any], x: torch.Tensor, y: torch.Tensor, index: torch.Tensor, path: Path) -> Path:
    """clean | adversarial (and its perturbation) per source model, for 8 evenly spaced images."""
    shown = torch.linspace(0, len(x) - 1, min(8, len(x))).round().long().unique()
    x, y, index = x[shown.to(x.device)], y[shown.to(y.device)], index.cpu()[shown]
    rows: dict[str, torch.Tensor] = {"clean": x.cpu()}
    for name, (_, attack) in sources.items():
        adversarial = attack(x, y, index=index).adversarial.cpu()
        rows[name] = adversarial
        rows[f"{name} δ"] = perturbation_picture(adversarial - x.cpu())
    return save_image_grid(rows, path, title="L-BFGS examples per source model (δ amplified)")


if __name__ == "__main__":
    sys.exit(main())
