"""Predictions and scores of classifiers and autoencoders on inputs in [0, 1].

:func:`predict`, :func:`accuracy`, :func:`correctly_classified`,
:func:`confidence_table` (the columns of ``references/harnessing-adversarial-examples.md``),
:func:`reconstruction_error` (per-pixel MSE) and :func:`distortion` (per-sample
L2, L-infinity and RMS size of a perturbation). Models are evaluated in eval mode
without gradients; their modes are restored afterwards.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass

import torch
from torch import nn

from .._model_state import frozen, model_device
from .._validation import check_images, check_labels

logger = logging.getLogger(__name__)

__all__ = [
    "ConfidenceTable",
    "accuracy",
    "confidence_table",
    "correctly_classified",
    "distortion",
    "predict",
    "reconstruction_error",
]

DEFAULT_BATCH = 128
"""Rows per evaluation forward pass: activations of a conv model stay under glibc's 32 MB mmap
threshold, so the chunks reuse freed heap memory (measured, conv AE on 1,000 MNIST digits, one
thread: 1,024-row chunks page-faulted 286k times and spent 42 % of their CPU in the kernel;
128-row chunks: no faults, 43 % less wall time, the same error to the last bit)."""


def _model_outputs(
    model: nn.Module, x: torch.Tensor, batch_size: int, fn: Callable[[torch.Tensor], torch.Tensor]
) -> torch.Tensor:
    """``fn(model(rows))`` over ``x`` in chunks, in eval mode, without gradients; on ``x.device``."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    device = model_device(model)
    parts = []
    with frozen([model]), torch.no_grad():
        for rows in x.split(batch_size):
            parts.append(fn(model(rows.to(device))).to(x.device))
    return torch.cat(parts)


def predict(model: nn.Module, x: torch.Tensor, *, batch_size: int = DEFAULT_BATCH) -> torch.Tensor:
    """The model's outputs (e.g. logits (N, C)) for inputs x (N, ...) in [0, 1], on ``x.device``.

    Runs in eval mode without gradients, ``batch_size`` rows at a time on the
    model's device; the model's train/eval flags are restored afterwards.

    Raises:
        TypeError, ValueError: if ``x`` is not a float tensor (N, ...) in [0, 1].
    """
    x = check_images(x)
    return _model_outputs(model, x, batch_size, lambda out: out)


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, batch_size: int = DEFAULT_BATCH) -> float:
    """Fraction of inputs x (N, ...) in [0, 1] whose argmax prediction equals the labels y (N,).

    Example:
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
        >>> 0.0 <= accuracy(net, torch.rand(8, 1, 2, 2), torch.zeros(8, dtype=torch.long)) <= 1.0
        True

    Raises:
        TypeError, ValueError: on bad inputs or labels, or a model that does not return (N, C).
    """
    logits, labels = _logits_and_labels(model, x, y, batch_size)
    return float((logits.argmax(dim=1) == labels).double().mean())


def _logits_and_labels(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    x = check_images(x)
    labels = check_labels(y, x.shape[0], required=True, device=x.device)
    assert labels is not None
    logits = predict(model, x, batch_size=batch_size)
    if logits.dim() != 2:
        raise ValueError(f"the classifier must return logits (N, classes), got {tuple(logits.shape)}")
    if int(labels.max()) >= logits.shape[1]:
        raise ValueError(f"label {int(labels.max())} out of range for {logits.shape[1]} classes")
    return logits, labels


def correctly_classified(
    models: nn.Module | Sequence[nn.Module] | Mapping[str, nn.Module],
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    count: int | None = None,
    seed: int = 0,
    batch_size: int = DEFAULT_BATCH,
) -> torch.Tensor:
    """Indices of the inputs that every model classifies correctly (the usual set to attack).

    Args:
        models: one classifier, a sequence of them or a name -> classifier mapping.
        x: inputs (N, ...) in [0, 1]; y: labels (N,).
        count: keep at most this many: the first ``count`` of them in a random
            order drawn from ``seed`` (a prefix would not do: test splits may be
            sorted by class); default all.
        seed: seed of that order.
        batch_size: rows per forward pass.

    Returns:
        Sorted int64 indices (M,) on the CPU, M <= count.

    Raises:
        ValueError: on no models or a negative count.

    Example:
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
        >>> x, y = torch.rand(10, 1, 2, 2), torch.zeros(10, dtype=torch.long)
        >>> rows = correctly_classified(net, x, y, count=3)
        >>> len(rows) <= 3 and bool((predict(net, x[rows]).argmax(1) == 0).all())
        True
    """
    if isinstance(models, nn.Module):
        models = [models]
    elif isinstance(models, Mapping):
        models = list(models.values())
    if not models:
        raise ValueError("correctly_classified needs at least one model")
    if count is not None and count < 0:
        raise ValueError(f"count must be >= 0 or None, got {count}")
    correct = torch.ones(x.shape[0], dtype=torch.bool)
    for model in models:
        logits, labels = _logits_and_labels(model, x, y, batch_size)
        correct &= (logits.argmax(dim=1) == labels).cpu()
    order = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))
    chosen = order[correct[order]]
    if count is not None:
        chosen = chosen[:count]
    return chosen.sort().values


@dataclass(frozen=True)
class ConfidenceTable:
    """The columns of the reference's result tables for one classifier on one input set.

    Confidence is the softmax probability of the predicted class (the largest one).

    Attributes:
        n: number of inputs.
        correct: fraction predicted correctly ("Correctly Predicted").
        error: 1 - correct ("Error").
        confidence: mean confidence over all inputs ("Confidence").
        confidence_correct: mean confidence over the correct predictions (NaN if none).
        confidence_error: mean confidence over the wrong predictions (NaN if none).
    """

    n: int
    correct: float
    error: float
    confidence: float
    confidence_correct: float
    confidence_error: float

    @classmethod
    def from_logits(cls, logits: torch.Tensor, y: torch.Tensor) -> ConfidenceTable:
        """The table of logits (N, C) against labels (N,)."""
        probabilities = logits.double().softmax(dim=1)
        confidence, predicted = probabilities.max(dim=1)
        hit = predicted == y.to(predicted.device)

        def mean(values: torch.Tensor) -> float:
            return float(values.mean()) if values.numel() else math.nan

        correct = float(hit.double().mean())
        return cls(
            n=int(y.shape[0]),
            correct=correct,
            error=1.0 - correct,
            confidence=mean(confidence),
            confidence_correct=mean(confidence[hit]),
            confidence_error=mean(confidence[~hit]),
        )

    def as_dict(self) -> dict[str, float]:
        """The table as a plain dict (JSON-serialisable apart from NaN)."""
        return asdict(self)


def confidence_table(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, batch_size: int = DEFAULT_BATCH
) -> ConfidenceTable:
    """Correctly predicted, error and confidences of a classifier on x (N, ...) in [0, 1].

    Args:
        model: classifier returning logits (N, C).
        x: inputs (N, ...) in [0, 1] (clean or adversarial).
        y: true labels (N,).
        batch_size: rows per forward pass.

    Returns:
        A :class:`ConfidenceTable`.

    Raises:
        TypeError, ValueError: on bad inputs or labels, or a model that does not return (N, C).

    Example:
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
        >>> table = confidence_table(net, torch.rand(6, 1, 2, 2), torch.tensor([0, 1, 2, 0, 1, 2]))
        >>> round(table.correct + table.error, 6), 1 / 3 <= table.confidence <= 1
        (1.0, True)
    """
    logits, labels = _logits_and_labels(model, x, y, batch_size)
    return ConfidenceTable.from_logits(logits, labels)


def reconstruction_error(
    model: nn.Module,
    x: torch.Tensor,
    *,
    reduction: str = "mean",
    batch_size: int = DEFAULT_BATCH,
) -> float | torch.Tensor:
    """Per-pixel mean squared reconstruction error of an autoencoder g: mean((x - g(x))^2).

    Args:
        model: autoencoder mapping x (N, ...) to a reconstruction of the same shape.
        x: inputs (N, ...) in [0, 1].
        reduction: ``"mean"`` (a float over all pixels of all samples) or
            ``"none"`` (per-sample means, a tensor (N,) on ``x.device``).
        batch_size: rows per forward pass.

    Raises:
        ValueError: on an unknown reduction or a reconstruction of another shape.
        TypeError, ValueError: if ``x`` is not a float tensor (N, ...) in [0, 1].

    Example:
        >>> identity = nn.Identity()
        >>> reconstruction_error(identity, torch.rand(3, 1, 4, 4))
        0.0
    """
    if reduction not in ("mean", "none"):
        raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
    x = check_images(x)
    outputs = _model_outputs(model, x, batch_size, lambda out: out)
    if outputs.shape != x.shape:
        raise ValueError(
            f"the autoencoder must return reconstructions of shape {tuple(x.shape)}, got {tuple(outputs.shape)}"
        )
    per_sample = (outputs.float() - x.float()).pow(2).flatten(1).mean(dim=1)
    return float(per_sample.mean()) if reduction == "mean" else per_sample


def distortion(x: torch.Tensor, x_adv: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-sample size of the perturbation x_adv - x: ``l2``, ``linf`` and ``rms`` (N,) each.

    ``rms`` is Szegedy et al.'s "distortion" sqrt(mean((x_adv - x)^2)) over the
    features of a sample (for Gaussian noise it is the noise's standard deviation).

    Raises:
        ValueError: if the shapes differ.

    Example:
        >>> x = torch.zeros(2, 4)
        >>> {k: v.tolist() for k, v in distortion(x, x + 0.5).items()}
        {'l2': [1.0, 1.0], 'linf': [0.5, 0.5], 'rms': [0.5, 0.5]}
    """
    if x.shape != x_adv.shape:
        raise ValueError(f"x and x_adv must have the same shape, got {tuple(x.shape)} and {tuple(x_adv.shape)}")
    delta = (x_adv.to(x.device) - x).flatten(1).float()
    return {
        "l2": delta.norm(dim=1),
        "linf": delta.abs().amax(dim=1),
        "rms": delta.pow(2).mean(dim=1).sqrt(),
    }
