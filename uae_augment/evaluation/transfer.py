"""Transferability: :func:`transfer_matrix`, the cross-model table of Szegedy et al. (2014).

"Intriguing properties of neural networks": the error rate of every target model
on the examples crafted against every source model, plus rows of Gaussian noise
of matched distortion.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .._seeding import Stream, sample_generators, stacked_normal
from .._validation import check_images, check_labels, resolve_index
from ..attacks.base import Attack
from ..controls import bisect_scale
from .metrics import DEFAULT_BATCH, accuracy, distortion

logger = logging.getLogger(__name__)

__all__ = ["TransferMatrix", "transfer_matrix"]

# Key of the NOISE stream for the matched-noise rows of a transfer matrix (row r uses r + key).
_TRANSFER_NOISE_KEY = 0x7A


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
                row: {t: float(self.error[i, j]) for j, t in enumerate(self.targets)} for i, row in enumerate(self.rows)
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
    batch_size: int = DEFAULT_BATCH,
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

    The distortion after clipping grows monotonically with s_i, so s_i is bisected
    (:func:`~uae_augment.controls.bisect_scale`); a distortion beyond the box's
    reach gets the largest reachable one.
    """
    generators = sample_generators(seed, index, Stream.NOISE, _TRANSFER_NOISE_KEY + row)
    noise = stacked_normal(generators, x.shape[1:], device=x.device, dtype=torch.float64)
    clean = x.double()
    view = (-1,) + (1,) * (x.dim() - 1)

    def measured(scale: torch.Tensor) -> torch.Tensor:
        return (torch.clamp(clean + scale.view(view) * noise, 0.0, 1.0) - clean).flatten(1).pow(2).mean(dim=1).sqrt()

    target = rms.to(device=x.device, dtype=torch.float64)
    scale = bisect_scale(measured, target, "RMS distortion", unreachable="cap")
    return torch.clamp(clean + scale.view(view) * noise, 0.0, 1.0).to(x.dtype)
