"""Gradient attacks on classifiers: FGSM, I-FGSM (BIM) and PGD (docs/method.md section 4).

Every attack here takes a classifier that maps x (N, ...) in [0, 1] to logits
(N, C), is called ``attack(x, y, *, index=None)`` and returns the shared
:class:`~uae_augment.attacks.result.AttackResult` (not a bare tensor), filled as
follows:

* ``adversarial``: the returned example, inside the epsilon-ball around x and
  inside the [0, 1] box. Iterative attacks return their *final* iterate (the
  standard of Madry et al.; no early stopping, no best-iterate selection).
* ``success``: judged on the returned example: ``argmax model(adv) != y``
  (untargeted) or ``argmax model(adv) == target`` (targeted).
* ``criterion``: the C&W margin (:func:`uae_augment.criteria.margin`, kappa 0)
  of the returned example with respect to ``y`` (untargeted) or the target
  (targeted): ``max(0, Z_y - max_{j!=y} Z_j)`` resp. ``max(0, max_{j!=t} Z_j - Z_t)``;
  it is 0 exactly on success (up to exact logit ties).
* ``mi``: NaN (these attacks do not estimate mutual information).
* ``best_iteration``: the number of gradient steps behind the returned example
  (1 for FGSM, ``steps`` for I-FGSM and PGD).
* ``first_success``: the first iterate k in 0..steps that met the success
  criterion (iterate 0 is the starting point: x, or PGD's random start); -1 if none.
* ``moved_linf`` / ``moved_l2``: distance from the starting point to the
  returned example (for attacks without random start the starting point is x).
* ``criterion_trace`` (iterative attacks): (N, steps + 1) margins of iterates 0..steps.

Targets (``targeted=True``): ``target="given"`` reads ``y`` as the targets;
``target="least_likely"`` reads ``y`` as the true labels and aims at the class
with the lowest clean logit other than ``y`` (Kurakin et al.'s least-likely
class argmin_j p(j|x), except that the true class itself is never chosen);
``target="random"`` reads ``y`` as the true labels and draws a target uniformly
from the other classes with the sample's own generator. :meth:`ClassifierAttack.select_targets`
returns the targets an attack aims at.

Losses J, always ascended: ``"ce"`` is the cross-entropy CE(Z, y) (untargeted)
or -CE(Z, t) (targeted, i.e. a descent towards t); ``"margin"`` is the
*unclipped* C&W logit gap ``max_{j!=y} Z_j - Z_y`` (untargeted) or
``Z_t - max_{j!=t} Z_j`` (targeted), so the gradient never vanishes.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import nn

from .._model_state import frozen
from .._seeding import Stream, sample_generators, stacked_normal, stacked_uniform
from .._validation import (
    check_batch_rank,
    check_images,
    check_labels,
    check_positive,
    resolve_index,
)
from ..criteria import margin
from ._minmax_loop import initial_delta
from .base import Attack, pad_rows
from .result import AttackResult

Loss = Literal["ce", "margin"]
Target = Literal["given", "least_likely", "random"]
Norm = Literal["linf", "l2"]

_LOSSES = ("ce", "margin")
_TARGETS = ("given", "least_likely", "random")
_NORMS = ("linf", "l2")


class ClassifierAttack(Attack):
    """Shared base of the classifier attacks: targets, loss, input gradients and results.

    Args:
        model: classifier mapping (N, ...) in [0, 1] to logits (N, C).
        loss: ``"ce"`` (cross-entropy) or ``"margin"`` (unclipped C&W logit gap);
            see the module docstring.
        targeted: aim at target classes instead of away from the true labels.
        target: how targets are chosen when ``targeted=True``: ``"given"`` (``y``
            holds the targets), ``"least_likely"`` or ``"random"`` (``y`` holds
            the true labels); must be ``"given"`` when ``targeted=False``.
        seed, batch_size, progress: see :class:`~uae_augment.attacks.base.Attack`.

    Raises:
        TypeError: if ``model`` is not an ``nn.Module``.
        ValueError: on an unknown loss or target mode, or a target mode without ``targeted=True``.
    """

    requires_labels = True

    def __init__(
        self,
        model: nn.Module,
        *,
        loss: Loss = "ce",
        targeted: bool = False,
        target: Target = "given",
        seed: int = 0,
        batch_size: int | None = None,
        progress: bool = False,
    ):
        super().__init__(seed=seed, batch_size=batch_size, progress=progress)
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if loss not in _LOSSES:
            raise ValueError(f"loss must be one of {_LOSSES}, got {loss!r}")
        if target not in _TARGETS:
            raise ValueError(f"target must be one of {_TARGETS}, got {target!r}")
        if target != "given" and not targeted:
            raise ValueError(f"target={target!r} chooses target classes and needs targeted=True")
        self.model = model
        self.loss = loss
        self.targeted = bool(targeted)
        self.target = target

    def models(self) -> list[nn.Module]:
        return [self.model]

    def _config(self) -> dict[str, Any]:
        return {
            "model": type(self.model).__name__,
            "loss": self.loss,
            "targeted": self.targeted,
            "target": self.target,
        }

    def select_targets(self, x: torch.Tensor, y: torch.Tensor, *, index: torch.Tensor | None = None) -> torch.Tensor:
        """The labels the attack aims at (targeted) or away from (untargeted): (N,) int64.

        Args:
            x: float tensor (N, ...) in [0, 1].
            y: int labels (N,): true labels, or targets when ``target="given"``.
            index: global indices (N,) (they seed ``target="random"``); default ``arange(N)``.

        Raises:
            TypeError, ValueError: on bad input, as :meth:`Attack.__call__`.
        """
        x = check_images(x)
        check_batch_rank(x, self.model)
        labels = check_labels(y, x.shape[0], required=True, device=x.device)
        global_index = resolve_index(index, x.shape[0])
        self._check_devices(x.device)
        with frozen(self.models()):
            return self._aim(x.detach(), labels, global_index)

    def _aim(self, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        if self.target == "given":
            return y
        with torch.no_grad():
            logits = self._logits(x, y)
        others = nn.functional.one_hot(y, logits.shape[1]).bool()
        if self.target == "least_likely":
            return logits.masked_fill(others, float("inf")).argmin(dim=1)
        draws = torch.stack(
            [
                torch.randint(0, logits.shape[1] - 1, (), generator=g)
                for g in sample_generators(self.seed, index, Stream.TARGET)
            ]
        ).to(y.device)
        return draws + (draws >= y).long()

    def _logits(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The model's logits (N, C) for x (N, ...), evaluated on x padded by :func:`pad_rows`.

        Raises:
            ValueError: on logits that are not (N, C >= 2) or a label >= C.
        """
        padded = pad_rows(x)
        logits = self.model(padded)
        if logits.dim() != 2 or logits.shape[0] != padded.shape[0]:
            raise ValueError(
                f"the classifier must return logits ({padded.shape[0]}, classes) for"
                f" {padded.shape[0]} inputs, got {tuple(logits.shape)}"
            )
        logits = logits[: x.shape[0]]
        if logits.shape[1] < 2:
            raise ValueError(f"the classifier must have >= 2 classes, got {logits.shape[1]}")
        if labels.device.type != "meta" and int(labels.max()) >= logits.shape[1]:
            raise ValueError(f"label {int(labels.max())} out of range for {logits.shape[1]} classes")
        return logits

    def _objective(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Per-sample J (N,) that the attack ascends (see the module docstring)."""
        if self.loss == "ce":
            ce = nn.functional.cross_entropy(logits, labels, reduction="none")
            return -ce if self.targeted else ce
        label_logit = logits.gather(1, labels[:, None]).squeeze(1)
        best_other = logits.masked_fill(nn.functional.one_hot(labels, logits.shape[1]).bool(), float("-inf")).amax(
            dim=1
        )
        return label_logit - best_other if self.targeted else best_other - label_logit

    def _gradient(self, x_adv: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """grad_x J(x_adv) (same shape as x_adv) and the detached logits at x_adv."""
        with torch.enable_grad():
            x_adv = x_adv.detach().requires_grad_(True)
            logits = self._logits(x_adv, labels)
            (grad,) = torch.autograd.grad(self._objective(logits, labels).sum(), x_adv)
        return grad, logits.detach()

    def _clean_success_chunk(self, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """(N,) bool: whether the clean input is already misclassified (untargeted) or
        classified as its target (targeted)."""
        with torch.no_grad():
            targets = self._aim(x, y, index)
            return self._succeeded(self._logits(x, targets), targets)

    def _succeeded(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        predicted = logits.argmax(dim=1)
        return predicted == labels if self.targeted else predicted != labels

    def _margin(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return margin(logits, labels, targeted=self.targeted, kappa=0.0)

    def _result(
        self, start: torch.Tensor, adversarial: torch.Tensor, labels: torch.Tensor, **extra: Any
    ) -> AttackResult:
        """Scores ``adversarial`` (success, margin) and measures how far it moved from ``start``."""
        with torch.no_grad():
            logits = self._logits(adversarial, labels)
        moved = (adversarial - start).flatten(1)
        criterion = self._margin(logits, labels)
        return AttackResult(
            adversarial=adversarial.detach(),
            success=self._succeeded(logits, labels),
            mi=torch.full_like(criterion, float("nan")),
            criterion=criterion,
            moved_linf=moved.abs().amax(dim=1),
            moved_l2=moved.norm(dim=1),
            **extra,
        )


class FGSM(ClassifierAttack):
    """Fast gradient sign method (Goodfellow et al., 2015): x' = clip(x + eps sign(grad_x J), 0, 1).

    Targeted (``targeted=True``): one step *down* the cross-entropy of the target,
    x' = clip(x - eps sign(grad_x CE(x, t)), 0, 1) (Kurakin et al.'s "step l.l."
    with ``target="least_likely"``). L-infinity distance to x <= epsilon.

    The result follows the module conventions: ``success`` and ``criterion`` (C&W
    margin) are those of the returned example, ``mi`` is NaN, iterate 0 is x and
    iterate 1 the returned example (``best_iteration`` = 1).

    Args:
        model: classifier mapping (N, ...) in [0, 1] to logits (N, C).
        epsilon: L-infinity step (> 0), in units of the [0, 1] input range.
        loss, targeted, target, seed, batch_size, progress: see :class:`ClassifierAttack`.

    Raises:
        ValueError: if ``epsilon`` is not > 0, or as :class:`ClassifierAttack`.

    Example:
        >>> _ = torch.manual_seed(0)
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
        >>> x, y = torch.rand(4, 1, 4, 4), torch.tensor([0, 1, 2, 0])
        >>> result = FGSM(net, epsilon=0.1)(x, y)
        >>> bool(((result.adversarial - x).abs() <= 0.1 + 1e-6).all()), result.mi.isnan().all().item()
        (True, True)
    """

    def __init__(
        self,
        model: nn.Module,
        epsilon: float = 8 / 255,
        *,
        loss: Loss = "ce",
        targeted: bool = False,
        target: Target = "given",
        seed: int = 0,
        batch_size: int | None = None,
        progress: bool = False,
    ):
        super().__init__(
            model,
            loss=loss,
            targeted=targeted,
            target=target,
            seed=seed,
            batch_size=batch_size,
            progress=progress,
        )
        self.epsilon = float(check_positive(epsilon, "epsilon"))

    def _config(self) -> dict[str, Any]:
        return {**super()._config(), "epsilon": self.epsilon}

    def _attack_batch(self, x: torch.Tensor, y: torch.Tensor | None, index: torch.Tensor) -> AttackResult:
        assert y is not None
        labels = self._aim(x, y, index)
        grad, logits = self._gradient(x, labels)
        adversarial = torch.clamp(x + self.epsilon * grad.sign(), 0.0, 1.0)
        result = self._result(x, adversarial, labels, best_iteration=torch.ones_like(labels))
        clean_success = self._succeeded(logits, labels)
        result.first_success = torch.where(clean_success, 0, torch.where(result.success, 1, -1)).to(labels.dtype)
        return result


class PGD(ClassifierAttack):
    """Projected gradient descent (Madry et al., 2018) with a random start in the epsilon-ball.

    x_0 = clip(x + delta_0, 0, 1) with delta_0 uniform in the epsilon-ball (drawn
    from the sample's own generator, seeded by ``(seed, index)``: the result of a
    sample never depends on which samples share its batch); then ``steps`` times
    x_{k+1} = Proj(x_k + step_size * s_k), with s_k = sign(grad J) (``norm="linf"``)
    or grad J / ||grad J||_2 (``norm="l2"``). Proj is the projection onto the
    epsilon-ball around x followed by clipping to [0, 1]: for L-infinity this is
    the exact projection onto their intersection; for L2 it is feasible (clipping
    towards a point of the box never increases the distance to x) but not the
    exact Euclidean projection. The final iterate is returned.

    The result follows the module conventions: ``success`` and ``criterion`` (C&W
    margin) belong to the returned example, ``mi`` is NaN, ``best_iteration`` =
    ``steps``, ``first_success`` is the first successful iterate (0 = the random
    start), ``moved_*`` are measured from the random start x_0 and
    ``criterion_trace`` holds the margins of iterates 0..steps.

    Targeted: ``PGD(model, targeted=True)(x, targets)`` aims at given targets;
    ``PGD(model, targeted=True, target="least_likely")(x, y)`` reads ``y`` as the true
    labels and aims at argmin_{j != y} Z_j(x) of the clean logits (see
    :meth:`select_targets` and the module docstring).

    Args:
        model: classifier mapping (N, ...) in [0, 1] to logits (N, C).
        epsilon: radius (> 0) of the ball, in units of the [0, 1] input range.
        steps: number of gradient steps (>= 1).
        step_size: step length (> 0): per coordinate for ``"linf"``, in L2 for ``"l2"``.
        random_start: start from a uniform random point of the ball (Madry et al.)
            instead of x.
        norm: ``"linf"`` or ``"l2"``.
        loss, targeted, target, seed, batch_size, progress: see :class:`ClassifierAttack`.

    Raises:
        ValueError: on a non-positive epsilon or step size, ``steps < 1``, an unknown
            norm, or as :class:`ClassifierAttack`.

    Example:
        >>> _ = torch.manual_seed(0)
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
        >>> x, y = torch.rand(4, 1, 4, 4), torch.tensor([0, 1, 2, 0])
        >>> result = PGD(net, epsilon=0.3, steps=10, step_size=0.05)(x, y)
        >>> result.adversarial.shape, result.criterion_trace.shape
        (torch.Size([4, 1, 4, 4]), torch.Size([4, 11]))
        >>> bool(((result.adversarial - x).abs() <= 0.3 + 1e-6).all())
        True
    """

    def __init__(
        self,
        model: nn.Module,
        epsilon: float = 8 / 255,
        steps: int = 40,
        step_size: float = 2 / 255,
        *,
        random_start: bool = True,
        norm: Norm = "linf",
        loss: Loss = "ce",
        targeted: bool = False,
        target: Target = "given",
        seed: int = 0,
        batch_size: int | None = None,
        progress: bool = False,
    ):
        super().__init__(
            model,
            loss=loss,
            targeted=targeted,
            target=target,
            seed=seed,
            batch_size=batch_size,
            progress=progress,
        )
        if norm not in _NORMS:
            raise ValueError(f"norm must be one of {_NORMS}, got {norm!r}")
        if int(steps) != steps or steps < 1:
            raise ValueError(f"steps must be an integer >= 1, got {steps}")
        self.epsilon = float(check_positive(epsilon, "epsilon"))
        self.step_size = float(check_positive(step_size, "step_size"))
        self.steps = int(steps)
        self.random_start = bool(random_start)
        self.norm = norm

    def _config(self) -> dict[str, Any]:
        return {
            **super()._config(),
            "epsilon": self.epsilon,
            "steps": self.steps,
            "step_size": self.step_size,
            "random_start": self.random_start,
            "norm": self.norm,
        }

    def _start(self, x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        if not self.random_start:
            return x
        if self.norm == "linf":
            delta = initial_delta("uniform", x, index, self.seed, self.epsilon)
        else:
            # Uniform in the L2 ball: a uniform direction times eps * U^(1/d).
            generators = sample_generators(self.seed, index, Stream.DELTA_INIT, 0)
            shape = tuple(x.shape[1:])
            direction = stacked_normal(generators, shape, device=x.device, dtype=x.dtype).flatten(1)
            direction = direction / direction.norm(dim=1, keepdim=True).clamp_min(1e-12)
            radius = stacked_uniform(generators, (1,), 0.0, 1.0, device=x.device, dtype=x.dtype)
            radius = self.epsilon * radius.pow(1.0 / direction.shape[1])
            delta = (direction * radius).view_as(x)
        return torch.clamp(x + delta, 0.0, 1.0)

    def _step(self, x: torch.Tensor, x_adv: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        if self.norm == "linf":
            delta = torch.clamp(x_adv + self.step_size * grad.sign() - x, -self.epsilon, self.epsilon)
        else:
            flat = grad.flatten(1)
            unit = flat / flat.norm(dim=1, keepdim=True).clamp_min(1e-12)
            delta = (x_adv - x).flatten(1) + self.step_size * unit
            delta = delta * (self.epsilon / delta.norm(dim=1, keepdim=True).clamp_min(1e-12)).clamp(max=1.0)
            delta = delta.view_as(x)
        return torch.clamp(x + delta, 0.0, 1.0)

    def _attack_batch(self, x: torch.Tensor, y: torch.Tensor | None, index: torch.Tensor) -> AttackResult:
        assert y is not None
        labels = self._aim(x, y, index)
        start = self._start(x, index)
        x_adv = start
        first_success = torch.full_like(labels, -1)
        trace = []
        for step in range(self.steps):
            grad, logits = self._gradient(x_adv, labels)
            trace.append(self._margin(logits, labels))
            _record_first(first_success, self._succeeded(logits, labels), step)
            x_adv = self._step(x, x_adv, grad).detach()
        result = self._result(start, x_adv, labels, best_iteration=torch.full_like(labels, self.steps))
        _record_first(first_success, result.success, self.steps)
        result.first_success = first_success
        result.criterion_trace = torch.stack([*trace, result.criterion], dim=1)
        return result


class IFGSM(PGD):
    """Iterative FGSM / basic iterative method (Kurakin et al., 2017): PGD without random start.

    x_0 = x; x_{k+1} = clip(clip(x_k + step_size sign(grad J), x - eps, x + eps), 0, 1)
    for ``steps`` steps (the projection onto the epsilon-ball and the [0, 1] box
    after every step); the final iterate is returned. With ``targeted=True,
    target="least_likely"`` this is Kurakin et al.'s iterative least-likely class method.

    Default step size: ``1.25 * epsilon / steps``. Kurakin et al. ("Adversarial
    examples in the physical world", 2017) take min(eps + 4, 1.25 eps) steps of
    1/255 (eps in 0..255 units), a total path of 1.25 eps for eps >= 16/255; the
    default spreads that same total path over ``steps`` steps. Their exact
    schedule is ``IFGSM(model, eps, steps=int(min(255 * eps + 4, 1.25 * 255 * eps)),
    step_size=1 / 255)``.

    The result follows the :class:`PGD` conventions (``first_success`` 0 = x itself).

    Args:
        model: classifier mapping (N, ...) in [0, 1] to logits (N, C).
        epsilon: L-infinity radius (> 0).
        steps: number of sign steps (>= 1).
        step_size: per-coordinate step (> 0); ``None``: ``1.25 * epsilon / steps``.
        loss, targeted, target, seed, batch_size, progress: see :class:`ClassifierAttack`.

    Raises:
        ValueError: as :class:`PGD`.

    Example:
        >>> _ = torch.manual_seed(0)
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
        >>> attack = IFGSM(net, epsilon=0.2, steps=5)
        >>> round(attack.step_size, 4), attack.random_start
        (0.05, False)
        >>> attack(torch.rand(2, 1, 4, 4), torch.tensor([0, 1])).best_iteration.tolist()
        [5, 5]
    """

    def __init__(
        self,
        model: nn.Module,
        epsilon: float = 8 / 255,
        steps: int = 10,
        step_size: float | None = None,
        *,
        loss: Loss = "ce",
        targeted: bool = False,
        target: Target = "given",
        seed: int = 0,
        batch_size: int | None = None,
        progress: bool = False,
    ):
        check_positive(epsilon, "epsilon")
        if int(steps) != steps or steps < 1:
            raise ValueError(f"steps must be an integer >= 1, got {steps}")
        super().__init__(
            model,
            epsilon,
            steps,
            1.25 * epsilon / steps if step_size is None else step_size,
            random_start=False,
            norm="linf",
            loss=loss,
            targeted=targeted,
            target=target,
            seed=seed,
            batch_size=batch_size,
            progress=progress,
        )


BIM = IFGSM
"""Alias: the basic iterative method is :class:`IFGSM`."""


def _record_first(first: torch.Tensor, success: torch.Tensor, iteration: int) -> None:
    """Sets ``first`` to ``iteration`` where ``success`` holds and nothing was recorded yet."""
    first.masked_fill_(success & (first < 0), iteration)
