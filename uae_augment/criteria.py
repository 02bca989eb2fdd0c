"""Attack criteria f_x: non-negative, zero exactly when the attack succeeds (docs/method.md section 3).

A criterion is used in two stages: :meth:`Criterion.prepare` computes what it
needs from the clean batch once (without gradients), and calling the criterion
on a candidate ``x_adv`` returns f_x(x_adv) per sample, differentiable with
respect to ``x_adv``.
"""

from __future__ import annotations

import abc
import weakref
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .mine import find_feature_layer


class Criterion(abc.ABC):
    """Base class: ``reference = crit.prepare(x, y, index)``; ``f = crit(x_adv, reference)``."""

    requires_labels: bool = False

    def __init__(self, model: nn.Module):
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        self.model = model

    def models(self) -> list[nn.Module]:
        """The modules the criterion runs (frozen by attacks while they work)."""
        return [self.model]

    @abc.abstractmethod
    def prepare(self, x: torch.Tensor, y: torch.Tensor | None, index: torch.Tensor) -> Any:
        """Reference quantities of the clean batch x (N, ...), computed without gradients."""

    @abc.abstractmethod
    def __call__(self, x_adv: torch.Tensor, reference: Any) -> torch.Tensor:
        """f_x(x_adv) per sample: (N,), >= 0, zero on success; differentiable in x_adv."""

    def feature_layer(self) -> nn.Module | None:
        """The victim's first layer for MINE's feature-map mode (None: random projections)."""
        return find_feature_layer(self.model)

    def config(self) -> dict[str, Any]:
        """JSON-serialisable description (used in cache provenance)."""
        return {"criterion": type(self).__name__, "model": type(self.model).__name__}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({type(self.model).__name__})"


class ClassifierMargin(Criterion):
    """C&W margin on logits: f = max(0, Z_y - max_{j!=y} Z_j + kappa) (untargeted).

    Targeted (``y`` holds the targets t): f = max(0, max_{j!=t} Z_j - Z_t + kappa).
    The model must return logits (pre-softmax), shape (N, classes).

    Example:
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
        >>> crit = ClassifierMargin(net)
        >>> x, y = torch.rand(2, 1, 2, 2), torch.tensor([0, 2])
        >>> crit(x, crit.prepare(x, y, torch.arange(2))).shape
        torch.Size([2])
    """

    requires_labels = True

    def __init__(self, model: nn.Module, targeted: bool = False, kappa: float = 0.0):
        super().__init__(model)
        if kappa < 0:
            raise ValueError(f"kappa must be >= 0, got {kappa}")
        self.targeted = targeted
        self.kappa = float(kappa)
        self._checked: tuple[weakref.ref[torch.Tensor], int] | None = None

    def prepare(self, x: torch.Tensor, y: torch.Tensor | None, index: torch.Tensor) -> torch.Tensor:
        if y is None:
            raise ValueError("ClassifierMargin needs labels (or targets when targeted=True)")
        return y

    def __call__(self, x_adv: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        logits = self.model(x_adv)
        if logits.dim() != 2:
            raise ValueError(f"the classifier must return logits (N, classes), got {tuple(logits.shape)}")
        self._check_labels(reference, logits.shape[1])
        return margin(logits, reference, targeted=self.targeted, kappa=self.kappa)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_checked": None}  # a weak reference does not pickle

    def _check_labels(self, labels: torch.Tensor, classes: int) -> None:
        """Raises ValueError on labels outside ``range(classes)``; once per labels tensor and class count.

        The check reads the labels on the host (a device sync on a GPU), so an
        attack's iterations, which all pass the same labels, pay for it once.
        """
        if labels.device.type == "meta":  # no values to check (device tests run victims there)
            return
        if self._checked is not None and self._checked[0]() is labels and self._checked[1] == classes:
            return
        low, high = int(labels.min()), int(labels.max())
        if low < 0 or high >= classes:
            raise ValueError(f"label {high if high >= classes else low} out of range for {classes} classes")
        self._checked = (weakref.ref(labels), classes)

    def config(self) -> dict[str, Any]:
        return {**super().config(), "targeted": self.targeted, "kappa": self.kappa}


def margin(logits: torch.Tensor, labels: torch.Tensor, *, targeted: bool, kappa: float) -> torch.Tensor:
    """The C&W margin criterion on logits (N, C) for labels/targets (N,)."""
    label_logit = logits.gather(1, labels[:, None]).squeeze(1)
    # the label mask by comparison: one_hot checks the labels' range on the host (a device sync)
    own = labels[:, None] == torch.arange(logits.shape[1], device=labels.device)
    others = logits.masked_fill(own, float("-inf"))
    best_other = others.amax(dim=1)
    gap = best_other - label_logit if targeted else label_logit - best_other
    return torch.clamp(gap + kappa, min=0.0)


@dataclass
class _ReconstructionReference:
    x: torch.Tensor
    clean_error: torch.Tensor


class Reconstruction(Criterion):
    """Autoencoder criterion: f = max(0, ||x - g(x+delta)||^2 - ||x - g(x)||^2).

    Squared errors are summed over all features of a sample (as in the release),
    so f = 0 means the autoencoder reconstructs x from x+delta no worse than from x.
    ``g`` must map (N, ...) to a reconstruction of the same shape.

    Example:
        >>> ae = nn.Sequential(nn.Flatten(), nn.Linear(4, 4), nn.Sigmoid(), nn.Unflatten(1, (1, 2, 2)))
        >>> crit = Reconstruction(ae)
        >>> x = torch.rand(3, 1, 2, 2)
        >>> bool((crit(x, crit.prepare(x, None, torch.arange(3))) == 0).all())
        True
    """

    def prepare(self, x: torch.Tensor, y: torch.Tensor | None, index: torch.Tensor) -> _ReconstructionReference:
        with torch.no_grad():
            clean_error = self._error(x, x)
        return _ReconstructionReference(x=x, clean_error=clean_error)

    def __call__(self, x_adv: torch.Tensor, reference: _ReconstructionReference) -> torch.Tensor:
        return torch.clamp(self._error(reference.x, x_adv) - reference.clean_error, min=0.0)

    def _error(self, target: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
        output = self.model(source)
        if output.shape != target.shape:
            raise ValueError(
                f"the autoencoder must return a reconstruction of shape {tuple(target.shape)},"
                f" got {tuple(output.shape)}"
            )
        return (target - output).pow(2).flatten(1).sum(dim=1)
