"""Analysis tools for classifiers and their adversarial examples.

* Predictions and scores: :func:`predict`, :func:`accuracy`, :func:`confidence_table`
  (the columns of ``references/harnessing-adversarial-examples.md``),
  :func:`reconstruction_error` (per-pixel MSE) and :func:`distortion` (per-sample
  L2, L-infinity and RMS size of a perturbation).
* Transferability: :func:`transfer_matrix`, the cross-model table of Szegedy et
  al. ("Intriguing properties of neural networks", 2014): the error rate of every
  target model on the examples crafted against every source model, plus rows of
  Gaussian noise of matched distortion.
* Lipschitz bounds (Szegedy et al., section 4.3): :func:`operator_norm` (spectral
  norm of a linear or convolutional layer, on the actual operator with its stride
  and padding), :func:`conv_norm_bound` (a closed-form upper bound) and
  :func:`lipschitz_bounds` (every layer of a feed-forward model and the product).

Every function takes inputs in [0, 1] (the library's convention), evaluates models
in eval mode without gradients and restores the models' modes afterwards.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ._model_state import frozen, model_device
from ._seeding import Stream, sample_generators, stacked_normal
from ._validation import check_images, check_labels, resolve_index
from .attacks.base import Attack

logger = logging.getLogger(__name__)

__all__ = [
    "ConfidenceTable",
    "LayerBound",
    "LipschitzReport",
    "TransferMatrix",
    "accuracy",
    "confidence_table",
    "conv_norm_bound",
    "correctly_classified",
    "distortion",
    "lipschitz_bounds",
    "operator_norm",
    "predict",
    "reconstruction_error",
    "transfer_matrix",
]

# Key of the NOISE stream for the matched-noise rows of a transfer matrix (row r uses r + key).
_TRANSFER_NOISE_KEY = 0x7A
_DEFAULT_BATCH = 1024


# --------------------------------------------------------------------------- predictions and scores


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


def predict(model: nn.Module, x: torch.Tensor, *, batch_size: int = _DEFAULT_BATCH) -> torch.Tensor:
    """The model's outputs (e.g. logits (N, C)) for inputs x (N, ...) in [0, 1], on ``x.device``.

    Runs in eval mode without gradients, ``batch_size`` rows at a time on the
    model's device; the model's train/eval flags are restored afterwards.

    Raises:
        TypeError, ValueError: if ``x`` is not a float tensor (N, ...) in [0, 1].
    """
    x = check_images(x)
    return _model_outputs(model, x, batch_size, lambda out: out)


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, batch_size: int = _DEFAULT_BATCH) -> float:
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
    batch_size: int = _DEFAULT_BATCH,
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
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, batch_size: int = _DEFAULT_BATCH
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
    batch_size: int = _DEFAULT_BATCH,
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


# --------------------------------------------------------------------------- transferability


@dataclass
class TransferMatrix:
    """Error rates of target models on examples crafted against source models.

    Attributes:
        rows: row names: the sources, then the noise rows
            (``"noise matched to <source>"`` and ``"noise rms=<s>"``).
        targets: column names.
        error: (rows, targets) fraction of the row's examples that the column's
            model misclassifies (Szegedy et al.'s table: 100% on the diagonal when
            every attack succeeds).
        distortion: (rows,) mean RMS distortion sqrt(mean((x' - x)^2)) of the row's examples.
        l2: (rows,) mean L2 distortion.
        linf: (rows,) mean L-infinity distortion.
        clean_error: (targets,) error rate of every target on the clean inputs.
        attack_success: source name -> the attack's own success rate on its model
            (``AttackResult.asr``: over the inputs that model classified correctly).
    """

    rows: list[str]
    targets: list[str]
    error: torch.Tensor
    distortion: torch.Tensor
    l2: torch.Tensor
    linf: torch.Tensor
    clean_error: torch.Tensor
    attack_success: dict[str, float] = field(default_factory=dict)

    def entry(self, row: str, target: str) -> float:
        """The error rate of ``target`` on the examples of ``row``.

        Raises:
            KeyError: for an unknown row or target name.
        """
        if row not in self.rows or target not in self.targets:
            raise KeyError(f"unknown row {row!r} or target {target!r}")
        return float(self.error[self.rows.index(row), self.targets.index(target)])

    def as_dict(self) -> dict[str, Any]:
        """JSON-serialisable form: nested dicts row -> target -> error, plus distortions."""
        return {
            "rows": list(self.rows),
            "targets": list(self.targets),
            "error": {
                row: {t: float(self.error[i, j]) for j, t in enumerate(self.targets)}
                for i, row in enumerate(self.rows)
            },
            "distortion_rms": {row: float(self.distortion[i]) for i, row in enumerate(self.rows)},
            "distortion_l2": {row: float(self.l2[i]) for i, row in enumerate(self.rows)},
            "distortion_linf": {row: float(self.linf[i]) for i, row in enumerate(self.rows)},
            "clean_error": {t: float(self.clean_error[j]) for j, t in enumerate(self.targets)},
            "attack_success": dict(self.attack_success),
        }


def transfer_matrix(
    sources: Mapping[str, tuple[nn.Module, Attack]],
    targets: Mapping[str, nn.Module],
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    noise_rows: bool = True,
    noise_stds: Sequence[float] = (),
    seed: int = 0,
    index: torch.Tensor | None = None,
    batch_size: int = _DEFAULT_BATCH,
) -> TransferMatrix:
    """Cross-model generalisation of adversarial examples (Szegedy et al., 2014, table 4).

    Every source attack crafts examples of x against its own model; every target
    model classifies every source's examples. Entry (A, B) is the fraction of the
    examples crafted on A that B misclassifies (over all of x: choose x correctly
    classified by every model for the paper's setting; ``clean_error`` says how
    far that holds). With ``noise_rows`` one more row per source holds Gaussian
    noise of matched distortion: sample i gets clip(x_i + s_i z_i, 0, 1), z_i ~ N(0, I),
    with the scale s_i found by bisection so that the RMS distortion after clipping
    equals that of the source's example i (clipping at the [0, 1] box would
    otherwise remove much of the noise on black MNIST pixels). ``noise_stds`` adds
    rows of fixed RMS distortion (the paper's "Gaussian noise, stddev" rows, 0.1
    and 0.3). Noise is drawn per sample from ``(seed, index)``; a target RMS
    larger than the box allows gives the largest reachable one (the row's
    ``distortion`` is always measured).

    Args:
        sources: name -> (source model, attack built on that model).
        targets: name -> target model (include the sources for the diagonal).
        x: inputs (N, ...) in [0, 1]; y: their true labels (N,).
        noise_rows: add one matched-noise row per source.
        noise_stds: extra rows of Gaussian noise with these RMS distortions.
        seed: seed of the noise; index: global indices of x (default ``arange(N)``).
        batch_size: rows per forward pass of the targets.

    Returns:
        A :class:`TransferMatrix`.

    Raises:
        ValueError: on no sources or no targets, an attack not built on its source
            model, a negative noise std, or bad inputs.

    Example:
        >>> from uae_augment import FGSM
        >>> _ = torch.manual_seed(0)
        >>> a, b = nn.Sequential(nn.Flatten(), nn.Linear(16, 3)), nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
        >>> x, y = torch.rand(8, 1, 4, 4), torch.randint(0, 3, (8,))
        >>> m = transfer_matrix({"a": (a, FGSM(a, epsilon=0.2))}, {"a": a, "b": b}, x, y)
        >>> m.rows, tuple(m.error.shape)
        (['a', 'noise matched to a'], (2, 2))
    """
    if not sources or not targets:
        raise ValueError("transfer_matrix needs at least one source and one target")
    x = check_images(x)
    labels = check_labels(y, x.shape[0], required=True, device=x.device)
    assert labels is not None
    global_index = resolve_index(index, x.shape[0])
    for std in noise_stds:
        if not std >= 0:
            raise ValueError(f"noise_stds must be >= 0, got {std}")
    for name, (model, attack) in sources.items():
        if not _attack_uses(attack, model):
            raise ValueError(f"the attack of source {name!r} was not built on its source model")

    row_names: list[str] = []
    examples: list[torch.Tensor] = []
    success: dict[str, float] = {}
    for name, (_, attack) in sources.items():
        result = attack(x, labels, index=global_index)
        row_names.append(name)
        examples.append(result.adversarial.to(x.device))
        success[name] = result.asr
        logger.info("transfer_matrix: source %s, attack ASR %.4f", name, result.asr)
    if noise_rows:
        for position, (name, crafted) in enumerate(zip(list(row_names), list(examples))):
            sigma = distortion(x, crafted)["rms"]
            row_names.append(f"noise matched to {name}")
            examples.append(_gaussian(x, sigma, seed, global_index, position))
    for position, std in enumerate(noise_stds, start=len(sources)):
        row_names.append(f"noise rms={std:g}")
        examples.append(_gaussian(x, torch.full((x.shape[0],), float(std)), seed, global_index, position))

    target_names = list(targets)
    error = torch.empty(len(examples), len(target_names))
    clean_error = torch.empty(len(target_names))
    for column, name in enumerate(target_names):
        model = targets[name]
        clean_error[column] = 1.0 - accuracy(model, x, labels, batch_size=batch_size)
        for row, crafted in enumerate(examples):
            error[row, column] = 1.0 - accuracy(model, crafted, labels, batch_size=batch_size)
    sizes = [distortion(x, crafted) for crafted in examples]
    return TransferMatrix(
        rows=row_names,
        targets=target_names,
        error=error,
        distortion=torch.stack([s["rms"].mean() for s in sizes]).cpu(),
        l2=torch.stack([s["l2"].mean() for s in sizes]).cpu(),
        linf=torch.stack([s["linf"].mean() for s in sizes]).cpu(),
        clean_error=clean_error,
        attack_success=success,
    )


def _attack_uses(attack: Attack, model: nn.Module) -> bool:
    """Whether one of the attack's models is ``model``, contains it or is part of it."""
    for used in attack.models():
        if used is model or any(m is model for m in used.modules()) or any(m is used for m in model.modules()):
            return True
    return False


def _gaussian(x: torch.Tensor, rms: torch.Tensor, seed: int, index: torch.Tensor, row: int) -> torch.Tensor:
    """clip(x + s_i z_i, 0, 1) per sample with RMS distortion ``rms_i``; z_i drawn from (seed, index, row).

    The distortion after clipping grows monotonically with s_i, so s_i is found by
    bisection (to a relative 1e-6).
    """
    generators = sample_generators(seed, index, Stream.NOISE, _TRANSFER_NOISE_KEY + row)
    noise = stacked_normal(generators, x.shape[1:], device=x.device, dtype=torch.float64)
    clean = x.double()
    target = rms.to(device=x.device, dtype=torch.float64)
    view = (-1,) + (1,) * (x.dim() - 1)

    def measured(scale: torch.Tensor) -> torch.Tensor:
        return (torch.clamp(clean + scale.view(view) * noise, 0.0, 1.0) - clean).flatten(1).pow(2).mean(dim=1).sqrt()

    low = torch.zeros_like(target)
    high = target.clone().clamp_min(1e-12)
    for _ in range(60):  # grow the bracket; the box caps the reachable distortion
        short = measured(high) < target
        if not short.any():
            break
        high = torch.where(short, high * 2, high)
    for _ in range(60):
        middle = (low + high) / 2
        below = measured(middle) < target
        low, high = torch.where(below, middle, low), torch.where(below, high, middle)
        if ((high - low) <= 1e-6 * high).all():
            break
    return torch.clamp(clean + high.view(view) * noise, 0.0, 1.0).to(x.dtype)


# --------------------------------------------------------------------------- Lipschitz bounds


def _conv_adjoint(conv: nn.Conv2d, output: torch.Tensor, input_shape: tuple[int, int, int]) -> torch.Tensor:
    """The adjoint of the bias-free conv operator: conv_transpose2d with the matching output size."""
    stride, padding, dilation = conv.stride, conv.padding, conv.dilation
    kernel = conv.weight.shape[2:]
    output_padding = []
    for axis in range(2):
        produced = (output.shape[2 + axis] - 1) * stride[axis] - 2 * padding[axis] + dilation[axis] * (kernel[axis] - 1) + 1
        output_padding.append(input_shape[1 + axis] - produced)
    return F.conv_transpose2d(
        output, conv.weight, None, stride, padding, tuple(output_padding), conv.groups, dilation
    )


def _linear_operator(
    layer: nn.Module, input_shape: tuple[int, ...]
) -> tuple[Callable[[torch.Tensor], torch.Tensor], Callable[[torch.Tensor], torch.Tensor]]:
    """(forward, adjoint) of the layer's linear part (bias dropped) on batches of ``input_shape``."""
    if isinstance(layer, nn.Linear):
        weight = layer.weight
        return (lambda v: v @ weight.T), (lambda u: u @ weight)
    if isinstance(layer, nn.Conv2d):
        if isinstance(layer.padding, str) or layer.padding_mode != "zeros":
            return _autograd_operator(lambda v: layer._conv_forward(v, layer.weight, None), input_shape)

        def forward(v: torch.Tensor) -> torch.Tensor:
            return F.conv2d(v, layer.weight, None, layer.stride, layer.padding, layer.dilation, layer.groups)

        return forward, (lambda u: _conv_adjoint(layer, u, input_shape))  # type: ignore[arg-type]
    raise TypeError(f"operator_norm supports nn.Linear and nn.Conv2d, got {type(layer).__name__}")


def _autograd_operator(
    forward: Callable[[torch.Tensor], torch.Tensor], input_shape: tuple[int, ...]
) -> tuple[Callable[[torch.Tensor], torch.Tensor], Callable[[torch.Tensor], torch.Tensor]]:
    """The adjoint of a linear map by a vector-Jacobian product (for padding modes without a closed form)."""

    def adjoint(u: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():
            probe = torch.zeros((u.shape[0], *input_shape), dtype=u.dtype, device=u.device, requires_grad=True)
            (grad,) = torch.autograd.grad(forward(probe), probe, grad_outputs=u)
        return grad

    return forward, adjoint


def operator_norm(
    layer: nn.Module,
    input_shape: Sequence[int] | None = None,
    *,
    iterations: int = 2000,
    tol: float = 1e-7,
    seed: int = 0,
) -> float:
    """Spectral norm ||W||_2 of a layer's linear part (bias ignored): its exact Lipschitz constant in L2.

    * ``nn.Linear``: the largest singular value of the weight by SVD (exact).
    * ``nn.Conv2d``: power iteration on the actual operator for inputs of
      ``input_shape`` (C, H, W), with its stride, padding, dilation and groups:
      ``v <- A^T A v / ||A^T A v||`` where A is ``F.conv2d`` and its adjoint
      ``F.conv_transpose2d`` (a vector-Jacobian product for string or non-zero
      padding modes). The estimate ||A v|| increases monotonically towards the
      true norm from below; iteration stops when it changes by less than ``tol``
      (relative) or after ``iterations`` steps. It depends on the input size
      (border effects of the padding); :func:`conv_norm_bound` does not.

    Args:
        layer: an ``nn.Linear`` or ``nn.Conv2d``.
        input_shape: (C, H, W) of one input; required for convolutions.
        iterations: maximum power-iteration steps; tol: relative stopping tolerance.
        seed: seed of the random start vector.

    Raises:
        TypeError: for another layer type.
        ValueError: if a convolution gets no (C, H, W) input shape.

    Example:
        >>> layer = nn.Linear(3, 2, bias=False)
        >>> with torch.no_grad():
        ...     _ = layer.weight.copy_(torch.tensor([[3.0, 0, 0], [0, 4.0, 0]]))
        >>> operator_norm(layer)
        4.0
        >>> conv = nn.Conv2d(1, 1, 1, bias=False)
        >>> _ = nn.init.constant_(conv.weight, 2.0)
        >>> round(operator_norm(conv, (1, 5, 5)), 6)
        2.0
    """
    if isinstance(layer, nn.Linear):
        with torch.no_grad():
            return float(torch.linalg.matrix_norm(layer.weight.detach().double(), ord=2))
    if not isinstance(layer, nn.Conv2d):
        raise TypeError(f"operator_norm supports nn.Linear and nn.Conv2d, got {type(layer).__name__}")
    if input_shape is None or len(tuple(input_shape)) != 3:
        raise ValueError(f"a convolution needs input_shape (C, H, W), got {input_shape}")
    shape = tuple(int(s) for s in input_shape)
    generator = torch.Generator().manual_seed(seed)
    vector = torch.randn((1, *shape), generator=generator, dtype=torch.float64).to(layer.weight.device)
    vector = vector / vector.norm()
    estimate = 0.0
    with torch.no_grad():
        operator = _double(layer)
        forward, adjoint = _linear_operator(operator, shape)
        for step in range(iterations):
            image = forward(vector)
            new_estimate = float(image.norm())
            back = adjoint(image)
            size = back.norm()
            if size == 0:
                return 0.0
            vector = back / size
            if step > 0 and abs(new_estimate - estimate) <= tol * max(new_estimate, 1e-30):
                return new_estimate
            estimate = new_estimate
    logger.debug("operator_norm: %d iterations without reaching tol %.1e", iterations, tol)
    return estimate


def _double(layer: nn.Conv2d) -> nn.Conv2d:
    """A float64 copy of the convolution (the power iteration runs in double precision)."""
    copy = nn.Conv2d(
        layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride, layer.padding,  # type: ignore[arg-type]
        layer.dilation, layer.groups, bias=False, padding_mode=layer.padding_mode,
        device=layer.weight.device, dtype=torch.float64,
    )
    copy.weight.data.copy_(layer.weight.detach())
    return copy.requires_grad_(False)


def conv_norm_bound(conv: nn.Conv2d) -> float:
    """A closed-form upper bound on the spectral norm of a convolution, for every input size.

    Each output position applies the kernel matrix M (out/groups, in/groups * kh * kw)
    of its group to one input patch, and every input pixel lies in at most
    n = n_h * n_w patches, n_axis = min(k, ceil(((k - 1) * dilation + 1) / stride)).
    Hence ||conv(x)||^2 <= max_g ||M_g||_2^2 * n * ||x||^2 and the bound is
    sqrt(n) * max_g ||M_g||_2. It equals the true norm for 1x1 kernels and is
    looser (by up to sqrt(n)) otherwise. Padding only adds zeros, so it holds for
    every zero padding; circular padding wraps pixels into more patches only when
    the input is smaller than the kernel.

    Example:
        >>> conv = nn.Conv2d(1, 1, 3, bias=False)
        >>> _ = nn.init.constant_(conv.weight, 1.0)
        >>> conv_norm_bound(conv)  # sqrt(9 patches) * ||ones(1, 9)||_2 = 3 * 3
        9.0
    """
    if not isinstance(conv, nn.Conv2d):
        raise TypeError(f"conv_norm_bound needs an nn.Conv2d, got {type(conv).__name__}")
    weight = conv.weight.detach().double()
    groups = conv.groups
    per_group = weight.shape[0] // groups
    norms = [
        float(torch.linalg.matrix_norm(weight[g * per_group:(g + 1) * per_group].flatten(1), ord=2))
        for g in range(groups)
    ]
    return math.sqrt(_overlap(conv.kernel_size, conv.stride, conv.dilation)) * max(norms)


def _pair(value: Any) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


def _overlap(kernel: Any, stride: Any, dilation: Any = 1) -> int:
    """The largest number of (kernel, stride, dilation) windows that contain one input pixel."""
    count = 1
    for k, s, d in zip(_pair(kernel), _pair(stride), _pair(dilation)):
        count *= min(k, math.ceil(((k - 1) * d + 1) / s))
    return count


@dataclass(frozen=True)
class LayerBound:
    """The Lipschitz constant (L2) of one layer of a model.

    Attributes:
        name: the layer's qualified name in the model.
        kind: its class name.
        size: the parameter shape in the notation of Szegedy et al.'s table:
            ``in x kh x kw x out`` for convolutions, ``in x out`` for dense layers, "" otherwise.
        stride: the convolution's stride ("" for other layers).
        input_shape, output_shape: per-sample shapes seen in the traced forward pass.
        norm: the layer's Lipschitz constant: the operator norm by power iteration
            (convolutions) or SVD (dense layers), or the closed-form constant of
            other layers (ReLU 1, sigmoid 1/4, max pooling 1 without overlap, ...).
        bound: an input-size independent upper bound (:func:`conv_norm_bound` for
            convolutions; equal to ``norm`` for every other layer).
    """

    name: str
    kind: str
    size: str
    stride: str
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    norm: float
    bound: float


@dataclass
class LipschitzReport:
    """Per-layer Lipschitz constants of a feed-forward model and their products.

    Attributes:
        layers: one :class:`LayerBound` per executed layer, in execution order.
        product: prod(layer.norm): an upper bound on the model's Lipschitz constant (L2).
        product_bound: prod(layer.bound) (>= product).
    """

    layers: list[LayerBound]
    product: float
    product_bound: float

    def as_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return {
            "layers": [asdict(layer) for layer in self.layers],
            "product": self.product,
            "product_bound": self.product_bound,
        }


def _batch_norm_constant(layer: nn.modules.batchnorm._BatchNorm) -> float:
    if layer.running_var is None:
        raise ValueError(f"{type(layer).__name__} without running statistics has no fixed Lipschitz constant")
    scale = (layer.running_var + layer.eps).rsqrt()
    if layer.weight is not None:
        scale = scale * layer.weight.detach().abs()
    return float(scale.max())


def _elementwise_constant(layer: nn.Module) -> float | None:
    """The Lipschitz constant of parameter-free or element-wise layers (None: unknown)."""
    one = (nn.ReLU, nn.ReLU6, nn.Tanh, nn.Softplus, nn.Identity, nn.Flatten, nn.Unflatten,
           nn.Dropout, nn.Dropout2d, nn.Softmax, nn.Hardtanh, nn.Softsign)
    if isinstance(layer, one):
        return 1.0
    if isinstance(layer, nn.Sigmoid):
        return 0.25
    if isinstance(layer, nn.LeakyReLU):
        return max(1.0, abs(layer.negative_slope))
    if isinstance(layer, nn.ELU):
        return max(1.0, layer.alpha)
    if isinstance(layer, nn.GELU):
        return 1.1289  # max of d/dx x*Phi(x), at x = sqrt(2)
    if isinstance(layer, nn.SiLU):
        return 1.0998  # max of d/dx x*sigmoid(x), at x ~ 2.3994
    if isinstance(layer, nn.MaxPool2d):
        # |max_W a - max_W b| <= ||a - b||_W, and a pixel lies in at most `overlap` windows
        return math.sqrt(_overlap(layer.kernel_size, layer.stride or layer.kernel_size, layer.dilation))
    if isinstance(layer, nn.AvgPool2d) and _pair(layer.padding) == (0, 0):
        # a mean over `area` pixels is (1 / sqrt(area))-Lipschitz in L2 (Cauchy-Schwarz)
        area = math.prod(_pair(layer.kernel_size))
        return math.sqrt(_overlap(layer.kernel_size, layer.stride or layer.kernel_size) / area)
    if isinstance(layer, nn.modules.batchnorm._BatchNorm):
        return _batch_norm_constant(layer)
    declared = getattr(layer, "lipschitz_constant", None)
    if callable(declared):
        return float(declared())
    return None


def _describe(layer: nn.Module) -> tuple[str, str]:
    if isinstance(layer, nn.Conv2d):
        out_channels, in_per_group, kh, kw = layer.weight.shape
        stride = "x".join(map(str, layer.stride)) if layer.stride[0] != layer.stride[1] else str(layer.stride[0])
        return f"{in_per_group * layer.groups}x{kh}x{kw}x{out_channels}", stride
    if isinstance(layer, nn.Linear):
        return f"{layer.in_features}x{layer.out_features}", ""
    return "", ""


def lipschitz_bounds(
    model: nn.Module,
    input_shape: Sequence[int],
    *,
    iterations: int = 2000,
    tol: float = 1e-7,
    seed: int = 0,
) -> LipschitzReport:
    """Upper bounds on the L2 Lipschitz constant of every layer of a model, and their product.

    Traces one forward pass of a zero input of ``input_shape`` (in eval mode) to
    find the executed leaf modules, their order and their input shapes; then takes
    :func:`operator_norm` of every ``nn.Linear`` / ``nn.Conv2d`` (on the actual
    operator at that layer's input size) and the closed-form constant of every
    other layer (activations, pooling, eval-mode batch norm, dropout, reshapes,
    or a module's own ``lipschitz_constant()`` method). Biases do not change a
    Lipschitz constant. The product bounds the whole model's constant when the
    model is a chain of its leaf modules (no skip connections, no functional
    linear operations in ``forward``).

    Args:
        model: the model; its train/eval flags are restored afterwards.
        input_shape: shape of one input, e.g. (1, 28, 28).
        iterations, tol, seed: power-iteration settings of :func:`operator_norm`.

    Returns:
        A :class:`LipschitzReport`.

    Raises:
        ValueError: for a layer without a known Lipschitz constant, or a layer run
            more than once in one forward pass.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(1, 2, 3, stride=2), nn.ReLU(), nn.Flatten(), nn.Linear(8, 3))
        >>> report = lipschitz_bounds(net, (1, 5, 5))
        >>> [layer.kind for layer in report.layers], report.layers[0].size, report.layers[0].stride
        (['Conv2d', 'ReLU', 'Flatten', 'Linear'], '1x3x3x2', '2')
        >>> report.product <= report.product_bound
        True
    """
    names = {module: name for name, module in model.named_modules()}
    trace: list[tuple[nn.Module, tuple[int, ...], tuple[int, ...]]] = []

    def record(module: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
        if any(seen is module for seen, _, _ in trace):
            raise ValueError(f"layer {names.get(module, type(module).__name__)!r} runs more than once per forward pass")
        shape_in = tuple(inputs[0].shape[1:]) if inputs and isinstance(inputs[0], torch.Tensor) else ()
        shape_out = tuple(output.shape[1:]) if isinstance(output, torch.Tensor) else ()
        trace.append((module, shape_in, shape_out))

    leaves = [m for m in model.modules() if not list(m.children())]
    handles = [leaf.register_forward_hook(record) for leaf in leaves]
    try:
        probe = torch.zeros((1, *input_shape), device=model_device(model))
        with frozen([model]), torch.no_grad():
            model(probe)
    finally:
        for handle in handles:
            handle.remove()

    layers = []
    with frozen([model]):
        for module, shape_in, shape_out in trace:
            name = names.get(module, "")
            if isinstance(module, (nn.Linear, nn.Conv2d)):
                norm = operator_norm(module, shape_in, iterations=iterations, tol=tol, seed=seed)
                bound = conv_norm_bound(module) if isinstance(module, nn.Conv2d) else norm
            else:
                constant = _elementwise_constant(module)
                if constant is None:
                    raise ValueError(
                        f"no Lipschitz constant known for layer {name!r} ({type(module).__name__});"
                        " give the module a lipschitz_constant() method"
                    )
                norm = bound = constant
            size, stride = _describe(module)
            layers.append(LayerBound(name, type(module).__name__, size, stride, shape_in, shape_out, norm, bound))
    return LipschitzReport(
        layers=layers,
        product=math.prod(layer.norm for layer in layers),
        product_bound=math.prod(layer.bound for layer in layers),
    )
