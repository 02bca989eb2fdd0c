"""Adversarial training as reusable steps: the caller owns the model, the optimiser and the loop.

Each ``*_step`` function runs one optimisation step on one mini-batch (x, y),
crafting its adversarial examples with a library attack against the model's
*current* parameters, and returns the step's losses as floats:

* :func:`clean_step`: standard training, CE(x, y).
* :func:`goodfellow_step`: Goodfellow et al.'s mixed objective (ICLR 2015)
  alpha * CE(x, y) + (1 - alpha) * CE(x_adv, y), x_adv = FGSM(x) (or any attack).
* :func:`kurakin_step`: Kurakin et al.'s mixed mini-batch (ICLR 2017): k of the
  m examples are replaced by their adversarial versions and the loss is
  [sum_clean CE + lam * sum_adv CE] / ((m - k) + lam * k).
* :func:`madry_step`: Madry et al.'s min-max training (ICLR 2018): CE on the
  PGD examples only.

:func:`train_epoch` runs any step over a shuffled data set; :func:`fgsm_augment_epoch`
is the protocol of ``references/harnessing-adversarial-examples.md``: at the start
of every epoch the adversarial example of every training image is computed with
the model of that epoch, and the epoch trains on clean and adversarial images
together (1:1, shuffled). :class:`InputNormalization` puts a normalisation (the
reference's mean-image subtraction) inside the model, so attacks still see [0, 1].

The attack must be built on the model being trained (or on a module containing
it); its examples are treated as constants (no gradient through their
construction). Attacks run the model in eval mode and restore train mode after.

Example:
    >>> from uae_augment import FGSM
    >>> _ = torch.manual_seed(0)
    >>> model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    >>> optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    >>> x, y = torch.rand(8, 1, 4, 4), torch.randint(0, 3, (8,))
    >>> sorted(goodfellow_step(model, optimizer, x, y, FGSM(model, epsilon=0.1)))
    ['adversarial_loss', 'clean_loss', 'loss']
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .._model_state import model_device
from .._seeding import derive_seed
from .._validation import check_images, check_labels, check_positive
from ..attacks.base import Attack, check_attack
from ._loss import check_step_values

logger = logging.getLogger(__name__)

__all__ = [
    "InputNormalization",
    "StepFn",
    "clean_step",
    "fgsm_augment_epoch",
    "goodfellow_step",
    "kurakin_step",
    "madry_step",
    "train_epoch",
]

_EPOCH_KEY = 0xAD7


class StepFn(Protocol):
    """What :func:`train_epoch` calls per batch: ``step(model, optimizer, x, y, index=...)``."""

    def __call__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        index: torch.Tensor | None = None,
    ) -> dict[str, float]: ...


class InputNormalization(nn.Module):
    """``model((x - mean) / std)``: a normalisation placed after the [0, 1] input.

    The reference subtracts the training set's mean image from every input; as a
    wrapper the model still takes [0, 1] images, so attacks, their epsilon and
    their box constraint keep working in pixel space.

    Args:
        model: the network that receives normalised inputs.
        mean: tensor broadcastable to one input (e.g. the mean image (1, 28, 28)).
        std: optional tensor (or float) broadcastable to one input; default 1 (subtraction only).

    Attributes:
        model: the wrapped network. ``mean`` and ``std`` are buffers (saved in the state dict).

    Raises:
        ValueError: if ``std`` has a non-positive entry.

    Example:
        >>> net = InputNormalization(nn.Flatten(), mean=torch.full((1, 2, 2), 0.5))
        >>> net(torch.ones(1, 1, 2, 2)).tolist()
        [[0.5, 0.5, 0.5, 0.5]]
    """

    def __init__(self, model: nn.Module, mean: torch.Tensor, std: torch.Tensor | float | None = None):
        super().__init__()
        self.model = model
        mean = torch.as_tensor(mean, dtype=torch.float32).detach().clone()
        std_tensor = (
            torch.ones_like(mean) if std is None else torch.as_tensor(std, dtype=torch.float32).detach().clone()
        )
        if not (std_tensor > 0).all():
            raise ValueError("std must be > 0 everywhere")
        self.register_buffer("mean", mean)
        self.register_buffer("std", std_tensor)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The wrapped model's output for inputs x (N, ...) in [0, 1]."""
        return self.model((x - self.mean) / self.std)

    def lipschitz_constant(self) -> float:
        """The normalisation's own L2 Lipschitz constant, 1 / min(std) (read by ``lipschitz_bounds``)."""
        return float(1.0 / self.std.min())

    @property
    def first_layer(self) -> nn.Module | None:
        """The wrapped model's first layer (MINE feature maps; it sees normalised inputs there)."""
        declared = getattr(self.model, "first_layer", None)
        return declared if isinstance(declared, nn.Module) else None


def _check_batch(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = check_images(x)
    labels = check_labels(y, x.shape[0], required=True, device=x.device)
    assert labels is not None
    return x, labels


def _check_attack(model: nn.Module, attack: Attack) -> None:
    check_attack(attack, "adversarial training")
    for used in attack.models():
        if used is model or any(m is model for m in used.modules()) or any(m is used for m in model.modules()):
            return
    raise ValueError(
        "the attack was built on another model: build it on the model being trained, e.g."
        " FGSM(model, epsilon), so it crafts examples against the current parameters"
    )


def _adversarial(
    model: nn.Module, attack: Attack, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor | None
) -> torch.Tensor:
    _check_attack(model, attack)
    return attack(x, y, index=index).adversarial.detach()


def _update(optimizer: torch.optim.Optimizer, loss: torch.Tensor) -> None:
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def clean_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    index: torch.Tensor | None = None,
) -> dict[str, float]:
    """One standard training step: minimise CE(model(x), y). ``index`` is accepted and unused.

    Returns:
        ``{"loss": ...}``.

    Raises:
        TypeError, ValueError: on bad inputs or labels.
    """
    x, y = _check_batch(model, x, y)
    model.train()
    loss = F.cross_entropy(model(x), y)
    _update(optimizer, loss)
    return {"loss": float(loss.detach())}


def goodfellow_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    attack: Attack,
    *,
    alpha: float = 0.5,
    index: torch.Tensor | None = None,
) -> dict[str, float]:
    """One step on Goodfellow et al.'s objective alpha * CE(x, y) + (1 - alpha) * CE(x_adv, y).

    Args:
        model: the classifier (logits), trained in place.
        optimizer: optimiser over the model's parameters.
        x: batch (m, ...) in [0, 1]; y: labels (m,).
        attack: the attack crafting x_adv against the current model (Goodfellow et
            al.: ``FGSM(model, epsilon)``).
        alpha: weight of the clean term, in [0, 1] (paper: 0.5).
        index: global indices of the batch (seed the attack's randomness).

    Returns:
        ``{"loss", "clean_loss", "adversarial_loss"}``.

    Raises:
        ValueError: if alpha is outside [0, 1] or the attack was built on another model.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    x, y = _check_batch(model, x, y)
    x_adv = _adversarial(model, attack, x, y, index)
    model.train()
    logits = model(torch.cat([x, x_adv]))
    clean_loss = F.cross_entropy(logits[: len(x)], y)
    adversarial_loss = F.cross_entropy(logits[len(x) :], y)
    loss = alpha * clean_loss + (1.0 - alpha) * adversarial_loss
    _update(optimizer, loss)
    return {
        "loss": float(loss.detach()),
        "clean_loss": float(clean_loss.detach()),
        "adversarial_loss": float(adversarial_loss.detach()),
    }


def kurakin_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    attack: Attack,
    *,
    k: int | None = None,
    lam: float = 0.3,
    generator: torch.Generator | None = None,
    index: torch.Tensor | None = None,
) -> dict[str, float]:
    """One step on Kurakin et al.'s mixed mini-batch of m - k clean and k adversarial examples.

    The k replaced rows are ``torch.randperm(m, generator=generator)[:k]``; the loss is

        L = [sum_{i clean} CE(x_i, y_i) + lam * sum_{j adv} CE(x_j^adv, y_j)] / ((m - k) + lam * k).

    Args:
        model, optimizer, x, y, attack, index: as :func:`goodfellow_step`.
        k: adversarial examples per batch, 0 <= k <= m (default m // 2; Kurakin et
            al.: 16 of 32).
        lam: weight of the adversarial examples (Kurakin et al.: 0.3), >= 0.
        generator: draws the replaced rows (default: torch's global generator).

    Returns:
        ``{"loss", "clean_loss", "adversarial_loss", "adversarial_rows"}``; the two
        part losses are means over their rows (NaN for an empty part).

    Raises:
        ValueError: on k outside [0, m], a negative lam, a zero denominator, or an
            attack built on another model.
    """
    x, y = _check_batch(model, x, y)
    m = x.shape[0]
    k = m // 2 if k is None else int(k)
    if not 0 <= k <= m:
        raise ValueError(f"k must lie in [0, {m}] for a batch of {m}, got {k}")
    check_positive(lam, "lam", allow_zero=True)
    denominator = (m - k) + lam * k
    if denominator <= 0:
        raise ValueError("the loss weights are all zero: use k < m or lam > 0")
    chosen = torch.randperm(m, generator=generator)[:k].to(x.device)
    mixed = x.clone()
    if k:
        sub_index = None if index is None else torch.as_tensor(index)[chosen.cpu()]
        mixed[chosen] = _adversarial(model, attack, x[chosen], y[chosen], sub_index)
    else:
        _check_attack(model, attack)
    weights = torch.ones(m, device=x.device)
    weights[chosen] = lam
    model.train()
    per_sample = F.cross_entropy(model(mixed), y, reduction="none")
    loss = (weights * per_sample).sum() / denominator
    _update(optimizer, loss)
    adversarial = torch.zeros(m, dtype=torch.bool, device=x.device)
    adversarial[chosen] = True
    detached = per_sample.detach()
    return {
        "loss": float(loss.detach()),
        "clean_loss": float(detached[~adversarial].mean()) if k < m else float("nan"),
        "adversarial_loss": float(detached[adversarial].mean()) if k else float("nan"),
        "adversarial_rows": float(k),
    }


def madry_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    attack: Attack,
    *,
    index: torch.Tensor | None = None,
) -> dict[str, float]:
    """One step of Madry et al.'s adversarial training: minimise CE(model(x_adv), y) only.

    ``attack`` solves the inner maximisation (Madry et al.: ``PGD(model, epsilon,
    steps, step_size)`` with random start); pass ``index`` (e.g. by
    :func:`train_epoch`) so that every epoch draws fresh random starts.

    Returns:
        ``{"loss", "adversarial_loss"}`` (equal) and ``"attack_success"``: the
        fraction of the batch the attack fooled before the update.

    Raises:
        ValueError: if the attack was built on another model.
    """
    x, y = _check_batch(model, x, y)
    _check_attack(model, attack)
    result = attack(x, y, index=index)
    model.train()
    loss = F.cross_entropy(model(result.adversarial.detach()), y)
    _update(optimizer, loss)
    value = float(loss.detach())
    return {"loss": value, "adversarial_loss": value, "attack_success": result.asr_all}


def _epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(derive_seed(seed, _EPOCH_KEY, epoch))
    return torch.randperm(n, generator=generator)


def train_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    step: StepFn | Callable[..., dict[str, float]],
    *,
    batch_size: int = 100,
    seed: int = 0,
    epoch: int = 0,
    progress: bool = False,
    **step_options: Any,
) -> dict[str, float]:
    """One epoch of ``step`` over (x, y) in a seeded random order; returns the mean of each metric.

    Batch rows are moved to the model's device. Every batch passes ``index = epoch
    * N + row`` to the step, so attacks with random starts (PGD) draw fresh,
    reproducible randomness in every epoch.

    Args:
        model, optimizer: trained in place.
        x: training inputs (N, ...) in [0, 1]; y: labels (N,).
        step: e.g. :func:`clean_step` or ``functools.partial(madry_step, attack=pgd)``.
        batch_size: rows per step (the last batch may be smaller).
        seed, epoch: the order is a permutation drawn from (seed, epoch).
        progress: show a tqdm bar.
        **step_options: passed to every ``step`` call (e.g. ``attack=..., alpha=0.5``).

    Raises:
        ValueError: on a non-positive batch size or mismatched x and y.
        FloatingPointError: if a step's loss is NaN or infinite.

    Example:
        >>> _ = torch.manual_seed(0)
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
        >>> optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        >>> metrics = train_epoch(model, optimizer, torch.rand(10, 1, 2, 2), torch.arange(10) % 2, clean_step, batch_size=4)
        >>> sorted(metrics)
        ['loss', 'steps']
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    x, y = _check_batch(model, x, y)
    n = x.shape[0]
    device = model_device(model)
    order = _epoch_order(n, seed, epoch)
    sums: dict[str, float] = {}
    steps = 0
    batches = order.split(batch_size)
    for rows in tqdm(batches, desc=f"epoch {epoch + 1}", disable=not progress, leave=False):
        values = step(
            model,
            optimizer,
            x[rows].to(device),
            y[rows].to(device),
            index=epoch * n + rows,
            **step_options,
        )
        values = check_step_values(values, "the training step", f"in epoch {epoch}, step {steps}")
        for key, value in values.items():
            sums[key] = sums.get(key, 0.0) + value
        steps += 1
    means = {key: total / steps for key, total in sums.items()}
    means["steps"] = float(steps)
    logger.info("train_epoch %d: %s", epoch, ", ".join(f"{k} {v:.4g}" for k, v in means.items()))
    return means


def fgsm_augment_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    attack: Attack,
    *,
    batch_size: int = 100,
    attack_batch_size: int = 1000,
    seed: int = 0,
    epoch: int = 0,
    progress: bool = False,
) -> dict[str, float]:
    """One epoch of the reference's adversarial training: fresh adversarial copies, then clean + adversarial 1:1.

    First the adversarial example of every training image is computed against the
    model as it is at the start of the epoch (``attack``, typically FGSM); then one
    epoch of :func:`clean_step` runs over the 2N images (the N clean ones and
    their N adversarial copies, labels copied) in a seeded random order.

    Args:
        model, optimizer, x, y: as :func:`train_epoch`.
        attack: the attack built on ``model``.
        batch_size: rows per training step; attack_batch_size: rows per attack call.
        seed, epoch, progress: as :func:`train_epoch`.

    Returns:
        :func:`train_epoch`'s metrics plus ``"adversarial_success"``: the fraction of
        the epoch's adversarial copies that fooled the model when they were made.

    Raises:
        ValueError: if the attack was built on another model, or as :func:`train_epoch`.
    """
    x, y = _check_batch(model, x, y)
    _check_attack(model, attack)
    n = x.shape[0]
    device = model_device(model)
    copies, fooled = [], 0
    for start in range(0, n, attack_batch_size):
        rows = slice(start, min(start + attack_batch_size, n))
        index = torch.arange(rows.start, rows.stop) + epoch * n
        result = attack(x[rows].to(device), y[rows].to(device), index=index)
        copies.append(result.adversarial.detach().to(x.device))
        fooled += int(result.success.sum())
    augmented_x = torch.cat([x, *copies])
    augmented_y = torch.cat([y, y])
    metrics = train_epoch(
        model,
        optimizer,
        augmented_x,
        augmented_y,
        clean_step,
        batch_size=batch_size,
        seed=seed,
        epoch=epoch,
        progress=progress,
    )
    metrics["adversarial_success"] = fooled / n
    return metrics
