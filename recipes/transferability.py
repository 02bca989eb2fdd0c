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
import dataclasses
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Subset

import _config
import _protocol
import _report
from uae_augment import LBFGS
from uae_augment.devices import resolve_device
from uae_augment.evaluation import accuracy, correctly_classified, lipschitz_bounds, transfer_matrix
from uae_augment.models import DenseAutoencoder, FitSettings, LeNet, MLPClassifier, ReferenceModel
from uae_augment.plots import perturbation_picture, save_image_grid

RECIPE = "transferability"


class WeightDecayMLP(MLPClassifier):
    """``MLPClassifier`` whose loss adds weight_decay / 2 · Σ‖W‖² over its weight matrices."""

    def __init__(
        self,
        input_shape: Sequence[int],
        hidden: Sequence[int],
        weight_decay: float,
        epochs: int,
        activation: str = "relu",
    ):
        super().__init__(input_shape, hidden=hidden, activation=activation)
        self.weight_decay = float(weight_decay)
        self.fit_settings = FitSettings(epochs=epochs, batch_size=128)

    def training_loss(self, x: torch.Tensor, y: torch.Tensor | None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        loss, parts = super().training_loss(x, y)
        penalty = sum(layer.weight.pow(2).sum() for layer in self.modules() if isinstance(layer, nn.Linear))
        return loss + 0.5 * self.weight_decay * penalty, {**parts, "cross_entropy": loss.detach()}


class AutoencoderClassifier(ReferenceModel):
    """AE400-10: a softmax layer on the code of a trained dense autoencoder (kept fixed).

    Args:
        autoencoder: a trained ``DenseAutoencoder``; only its encoder runs.
        classes: number of classes.
        epochs: training epochs of the softmax layer (Adam, batch 128).
    """

    def __init__(self, autoencoder: DenseAutoencoder, classes: int, epochs: int):
        super().__init__()
        self.autoencoder = autoencoder.requires_grad_(False)
        self.head = nn.Linear(autoencoder.encoder[1].out_features, classes)
        self.fit_settings = FitSettings(epochs=epochs, batch_size=128)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (N, classes) of inputs x in [0, 1]."""
        return self.head(self.autoencoder.encode(x))

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        return [torch.optim.Adam(self.head.parameters(), lr=1e-3, eps=1e-7)]

    def training_loss(self, x: torch.Tensor, y: torch.Tensor | None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        assert y is not None
        return F.cross_entropy(self(x), y), {}


class AdamLeNet(LeNet):
    """The LeNet-style conv net trained with Adam (lr 1e-3), so that a few epochs suffice."""

    def __init__(self, input_shape: Sequence[int], classes: int, epochs: int):
        super().__init__(input_shape, classes=classes)
        self.fit_settings = FitSettings(epochs=epochs, batch_size=100)

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        return [torch.optim.Adam(self.parameters(), lr=1e-3, eps=1e-7)]


Builder = Callable[[tuple[int, ...], int, int], nn.Module]
"""(input shape, classes, epochs) -> a fresh model."""


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """A model of the table: name, short description and builder (None: AE400-10, built on its autoencoder)."""

    name: str
    description: str
    build: Builder | None


def _fc(hidden: Sequence[int], weight_decay: float) -> Builder:
    def build(shape: tuple[int, ...], classes: int, epochs: int) -> nn.Module:
        return WeightDecayMLP(shape, hidden, weight_decay, epochs)

    return build


MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec("FC10(1e-4)", "softmax regression, λ = 1e-4", _fc((), 1e-4)),
        ModelSpec("FC10(1e-2)", "softmax regression, λ = 1e-2", _fc((), 1e-2)),
        ModelSpec("FC10(1)", "softmax regression, λ = 1", _fc((), 1.0)),
        ModelSpec("FC100-100-10", "two ReLU layers of 100, λ = 1e-5", _fc((100, 100), 1e-5)),
        ModelSpec("FC200-200-10", "two ReLU layers of 200, λ = 1e-5", _fc((200, 200), 1e-5)),
        ModelSpec("AE400-10", "softmax on a 400-unit sigmoid autoencoder code", None),
        ModelSpec("LeNet", "the LeNet-style conv net, Adam (not in the paper's table)", AdamLeNet),
    )
}
TABLE_MODELS = ("FC10(1e-4)", "FC10(1e-2)", "FC10(1)", "FC100-100-10", "FC200-200-10", "AE400-10")

# The cross-model table of references/adversarial-examples-lecture-a.md (error rates in %,
# rows: examples crafted on / noise; columns: TABLE_MODELS, then the average distortion).
PUBLISHED: dict[str, Any] = {
    "rows": {
        "FC10(1e-4)": [100, 11.7, 22.7, 2, 3.9, 2.7, 0.062],
        "FC10(1e-2)": [87.1, 100, 35.2, 35.9, 27.3, 9.8, 0.1],
        "FC10(1)": [71.9, 76.2, 100, 48.1, 47, 34.4, 0.14],
        "FC100-100-10": [28.9, 13.7, 21.1, 100, 6.6, 2, 0.058],
        "FC200-200-10": [38.2, 14, 23.8, 20.3, 100, 2.7, 0.065],
        "AE400-10": [23.4, 16, 24.8, 9.4, 6.6, 100, 0.086],
        "Gaussian noise, stddev=0.1": [5.0, 10.1, 18.3, 0, 0, 0.8, 0.1],
        "Gaussian noise, stddev=0.3": [15.6, 11.3, 22.7, 5, 4.3, 3.1, 0.3],
    },
    "columns": list(TABLE_MODELS) + ["av. distortion"],
}


@dataclasses.dataclass(frozen=True)
class CrossTrainingSpec:
    """A model of the cross-training table: hidden widths (sigmoid) and its half of the training set."""

    name: str
    hidden: tuple[int, ...]
    part: str  # "P1" or "P2"


CROSS_TRAINING = (
    CrossTrainingSpec("FC100-100-10", (100, 100), "P1"),
    CrossTrainingSpec("FC123-456-10", (123, 456), "P1"),
    CrossTrainingSpec("FC100-100-10'", (100, 100), "P2"),
)
CROSS_TRAINING_DECAY = 1e-5
CROSS_TRAINING_NOISE = 0.06

# The cross-training table of references/adversarial-examples-lecture-a.md (error rates in %).
PUBLISHED_CROSS_TRAINING: dict[str, Any] = {
    "rows": {
        "FC100-100-10 (av. stddev 0.062)": [100, 26.2, 5.9],
        "FC123-456-10 (av. stddev 0.059)": [6.25, 100, 5.1],
        "FC100-100-10' (av. stddev 0.058)": [8.2, 8.2, 100],
        "Gaussian noise, stddev=0.06": [2.2, 2.6, 2.4],
    },
    "columns": [spec.name for spec in CROSS_TRAINING],
}

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


# --------------------------------------------------------------------------- models


def train_models(
    names: Sequence[str],
    train: Any,
    shape: tuple[int, ...],
    classes: int,
    args: argparse.Namespace,
    seed: int,
    device: torch.device,
    out: Path,
    timer: _report.StageTimer,
) -> tuple[dict[str, nn.Module], dict[str, Any]]:
    """Trains (or reloads) every named model; returns the models and their training records."""
    models: dict[str, nn.Module] = {}
    records: dict[str, Any] = {}
    progress = not args.no_progress
    base_key = {"dataset": args.dataset, "rows": len(train), "seed": seed}
    for name in names:
        trainer = _protocol.fit_trainer(device=device, seed=seed, progress=progress)
        key = {**base_key, "model": name, "epochs": args.epochs}
        if name == "AE400-10":
            ae_key = {**base_key, "model": "dense-ae-400", "epochs": args.ae_epochs}
            with timer.stage(f"seed{seed}/train/AE400"):
                autoencoder, ae_record = _protocol.train_model(
                    lambda: DenseAutoencoder(shape, hidden=400),
                    train,
                    _protocol.fit_trainer(device=device, epochs=args.ae_epochs, seed=seed, progress=progress),
                    seed=seed,
                    device=device,
                    checkpoint=out / "models" / f"dense-ae-400-seed{seed}.pt",
                    key=ae_key,
                )
            records["AE400 autoencoder"] = _protocol.brief(ae_record)

            def build(autoencoder: nn.Module = autoencoder) -> nn.Module:
                return AutoencoderClassifier(autoencoder, classes, args.epochs)  # type: ignore[arg-type]

            key["autoencoder"] = ae_key
        else:
            builder = MODELS[name].build
            assert builder is not None

            def build(builder: Builder = builder) -> nn.Module:
                return builder(shape, classes, args.epochs)

        with timer.stage(f"seed{seed}/train/{name}"):
            model, record = _protocol.train_model(
                build,
                train,
                trainer,
                seed=seed,
                device=device,
                checkpoint=out / "models" / f"{_file_name(name)}-seed{seed}.pt",
                key=key,
            )
        models[name] = model.eval()
        records[name] = _protocol.brief(record)
    return models, records


def split_halves(dataset: Any) -> dict[str, Subset]:
    """Two disjoint fixed random halves P1 and P2 of a data set (seeded by ``_protocol.SUBSET_SEED``)."""
    generator = torch.Generator().manual_seed(_protocol.SUBSET_SEED)
    order = torch.randperm(len(dataset), generator=generator)
    half = len(dataset) // 2
    return {
        "P1": Subset(dataset, order[:half].sort().values.tolist()),
        "P2": Subset(dataset, order[half : 2 * half].sort().values.tolist()),
    }


def train_cross_training(
    train: Any,
    shape: tuple[int, ...],
    classes: int,
    args: argparse.Namespace,
    seed: int,
    device: torch.device,
    out: Path,
    timer: _report.StageTimer,
) -> tuple[dict[str, nn.Module], dict[str, Any]]:
    """Trains (or reloads) the three sigmoid nets of the cross-training table on their halves."""
    parts = split_halves(train)
    models: dict[str, nn.Module] = {}
    records: dict[str, Any] = {}
    epochs = args.epochs if args.cross_epochs is None else args.cross_epochs
    for spec in CROSS_TRAINING:
        key = {
            "dataset": args.dataset,
            "rows": len(parts[spec.part]),
            "part": spec.part,
            "seed": seed,
            "model": f"cross-training {spec.name}",
            "epochs": epochs,
        }

        def build(spec: CrossTrainingSpec = spec) -> nn.Module:
            return WeightDecayMLP(shape, spec.hidden, CROSS_TRAINING_DECAY, epochs, activation="sigmoid")

        with timer.stage(f"seed{seed}/cross-training/train/{spec.name}"):
            model, record = _protocol.train_model(
                build,
                parts[spec.part],
                _protocol.fit_trainer(device=device, seed=seed, progress=not args.no_progress),
                seed=seed,
                device=device,
                checkpoint=out / "models" / f"cross-{_file_name(spec.name)}-seed{seed}.pt",
                key=key,
            )
        models[spec.name] = model.eval()
        records[spec.name] = {
            **_protocol.brief(record),
            "part": spec.part,
            "rows": len(parts[spec.part]),
        }
    return models, records


def _file_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-." else "_" for c in name)


# --------------------------------------------------------------------------- tables


def _pct(value: float) -> str:
    return f"{100 * value:.1f}%"


def matrix_markdown(matrix: dict[str, Any], accuracies: dict[str, float], n: int) -> str:
    """Our cross-model table in the paper's layout (error rates, then the average distortion)."""
    targets = matrix["targets"]
    header = ["crafted on \\ fed to", *targets, "av. distortion (RMS)", "attack success"]
    rows = []
    for row in matrix["rows"]:
        success = matrix["attack_success"].get(row)
        rows.append(
            [
                row,
                *(_pct(matrix["error"][row][t]) for t in targets),
                f"{matrix['distortion_rms'][row]:.3f}",
                _pct(success) if success is not None else "—",
            ]
        )
    rows.append(["clean test accuracy", *(_pct(accuracies[t]) for t in targets), "—", "—"])
    return "\n".join(
        [
            f"### Cross-model generalisation: error rate of each column's model on the row's examples ({n} test digits)",
            "",
            "Rows: L-BFGS examples crafted on a model, then Gaussian noise matched per image to that model's",
            "examples (same RMS distortion, after clipping to [0, 1]) and noise of fixed RMS distortion. The attacked",
            "digits are classified correctly by every model, so every error comes from the perturbation.",
            "",
            _report.markdown_table(header, rows),
        ]
    )


def published_markdown() -> str:
    """The published table (references/adversarial-examples-lecture-a.md)."""
    header = ["crafted on \\ fed to", *PUBLISHED["columns"]]
    rows = [[row, *(f"{v:g}%" for v in values[:-1]), f"{values[-1]:g}"] for row, values in PUBLISHED["rows"].items()]
    return "\n".join(["### Published (Szegedy et al. 2014, MNIST)", "", _report.markdown_table(header, rows)])


def cross_training_markdown(matrix: dict[str, Any], accuracies: dict[str, float], n: int) -> str:
    """Our cross-training table (error rates of each column's model on the row's examples)."""
    targets = matrix["targets"]
    header = ["crafted on \\ fed to", *targets, "av. distortion (RMS)"]
    rows = [
        [
            row,
            *(_pct(matrix["error"][row][t]) for t in targets),
            f"{matrix['distortion_rms'][row]:.3f}",
        ]
        for row in matrix["rows"]
    ]
    rows.append(["clean test accuracy", *(_pct(accuracies[t]) for t in targets), "—"])
    published = [[row, *(f"{v:g}%" for v in values)] for row, values in PUBLISHED_CROSS_TRAINING["rows"].items()]
    parts = ", ".join(f"{spec.name} on {spec.part}" for spec in CROSS_TRAINING)
    return "\n".join(
        [
            f"### Cross-training generalisation ({n} test digits)",
            "",
            f"Sigmoid nets (λ = {CROSS_TRAINING_DECAY:g}) trained on two disjoint halves of the training set: {parts}.",
            "Each row's L-BFGS examples are fed to every net; the digits are classified correctly by all three.",
            "",
            _report.markdown_table(header, rows),
            "",
            "Published (Szegedy et al. 2014, MNIST halves of 30,000 images):",
            "",
            _report.markdown_table(["crafted on \\ fed to", *PUBLISHED_CROSS_TRAINING["columns"]], published),
        ]
    )


def lipschitz_markdown(reports: dict[str, Any]) -> str:
    """Per-layer Lipschitz bounds (dense and conv layers, and layers whose constant is not 1) and products."""
    header = ["model", "layer", "size", "stride", "upper bound"]
    rows = []
    for name, report in reports.items():
        for layer in report["layers"]:
            if layer["kind"] in ("Linear", "Conv2d") or abs(layer["norm"] - 1.0) > 1e-12:
                rows.append(
                    [
                        name,
                        f"{layer['name']} ({layer['kind']})",
                        layer["size"] or "—",
                        layer["stride"] or "N/A",
                        f"{layer['norm']:.3f}",
                    ]
                )
        rows.append([name, "**product**", "", "", f"**{report['product']:.4g}**"])
    return "\n".join(
        [
            "### Lipschitz upper bounds per layer (L2)",
            "",
            "Dense layers: exact spectral norm (SVD). Convolutions: power iteration on the actual operator at the",
            "layer's input size (stride and padding included). The product bounds the model's Lipschitz constant.",
            "",
            _report.markdown_table(header, rows),
        ]
    )


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
