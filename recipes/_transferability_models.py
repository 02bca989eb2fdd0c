"""The transferability recipe's models: the cross-model table's classifiers (FC10(λ), FC100-100-10,
FC200-200-10, AE400-10, LeNet), the cross-training nets, and their seeded training."""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Subset

import _protocol
import _report
from uae_augment.models import DenseAutoencoder, FitSettings, LeNet, MLPClassifier, ReferenceModel


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


# --------------------------------------------------------------------------- training


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
