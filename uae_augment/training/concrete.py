"""The concrete autoencoder's retry rule (Abid, Balin, Zou 2019): :func:`fit_concrete`."""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.utils.data import Dataset

from ..models.base import positive_int
from ..models.concrete import ConcreteAutoencoder
from .fit import FitHistory, fit

logger = logging.getLogger(__name__)

__all__ = ["MEAN_MAX_TARGET", "ConcreteFit", "fit_concrete"]

MEAN_MAX_TARGET = 0.998
"""The authors' convergence target for the mean (over rows) of the max selection probability."""


@dataclass
class ConcreteFit:
    """Result of :func:`fit_concrete`.

    Attributes:
        model: the model of the last try (trained, in eval mode).
        history: its :class:`~uae_augment.FitHistory`.
        tries: number of trainings run (1 when the first one converged).
        epochs: epochs of each try, e.g. [800, 1600].
        mean_max_probabilities: the selector's mean max probability after each try.
        converged: whether the last try reached ``target``.
    """

    model: ConcreteAutoencoder
    history: FitHistory
    tries: int
    epochs: list[int]
    mean_max_probabilities: list[float]
    converged: bool


def fit_concrete(
    model: ConcreteAutoencoder | Callable[[], ConcreteAutoencoder],
    dataset: Dataset | torch.Tensor,
    *,
    epochs: int | None = None,
    tries: int = 5,
    target: float = MEAN_MAX_TARGET,
    batch_size: int | None = None,
    seed: int = 0,
    progress: bool = True,
    device: torch.device | str | None = None,
    num_workers: int = 0,
) -> ConcreteFit:
    """Trains a concrete autoencoder with the authors' retry rule.

    Trains a fresh model; while its mean max selection probability is below
    ``target`` (0.998) and fewer than ``tries`` trainings have run, doubles the
    epochs and trains a fresh model again (the authors' ``tryout_limit`` = 5).
    Every try shows :func:`uae_augment.fit`'s bar and time estimate; every
    retry is logged as a WARNING with its reason and its epochs (with the
    defaults, the fifth try runs 16 times the first one's epochs).

    Args:
        model: a :class:`ConcreteAutoencoder` (every try restarts from a copy of
            its current weights) or a zero-argument factory returning a fresh one
            (every try calls it, as the authors rebuild their model).
        dataset: as for :func:`uae_augment.fit`.
        epochs: epochs of the first try; default the model's ``default_fit`` (800, kept by
            measurement: on the README's 4,000 MNIST digits 100 epochs reach a mean max
            probability of 0.45 with the test error still halving per doubling;
            ``benchmarks/concrete_epochs.py``, README "Models and training").
        tries: the most trainings to run (>= 1).
        target: the mean max probability that counts as converged, in (0, 1].
        batch_size, seed, progress, device, num_workers: passed to :func:`uae_augment.fit`.

    Returns:
        A :class:`ConcreteFit` with the last model and the record of the tries.

    Raises:
        TypeError: if ``model`` is neither a ConcreteAutoencoder nor a callable
            returning one.
        ValueError: if ``tries`` < 1 or ``target`` is not in (0, 1].
    """
    positive_int(tries, "tries")
    if not 0.0 < target <= 1.0:
        raise ValueError(f"target must lie in (0, 1], got {target}")
    factory = _factory(model)
    record: list[int] = []
    probabilities: list[float] = []
    for attempt in range(tries):
        candidate = factory()
        if epochs is None:
            epochs = candidate.default_fit(len(dataset)).epochs  # type: ignore[arg-type]
        history = fit(
            candidate,
            dataset,
            epochs=epochs,
            batch_size=batch_size,
            seed=seed,
            progress=progress,
            device=device,
            num_workers=num_workers,
        )
        record.append(epochs)
        probabilities.append(candidate.mean_max_probability())
        logger.info(
            "concrete AE try %d/%d: %d epochs, mean max probability %.5f (target %.3f)",
            attempt + 1,
            tries,
            epochs,
            probabilities[-1],
            target,
        )
        if probabilities[-1] >= target:
            break
        if attempt + 1 < tries:
            logger.warning(
                "concrete AE try %d/%d did not converge (mean max probability %.5f < target %.3f):"
                " training a fresh model with %d epochs (twice the last try's); %d tries left",
                attempt + 1,
                tries,
                probabilities[-1],
                target,
                2 * epochs,
                tries - attempt - 1,
            )
        epochs *= 2
    return ConcreteFit(
        model=candidate,
        history=history,
        tries=len(record),
        epochs=record,
        mean_max_probabilities=probabilities,
        converged=probabilities[-1] >= target,
    )


def _factory(
    model: ConcreteAutoencoder | Callable[[], ConcreteAutoencoder],
) -> Callable[[], ConcreteAutoencoder]:
    if isinstance(model, ConcreteAutoencoder):
        initial = copy.deepcopy(model)
        return lambda: copy.deepcopy(initial)
    if not callable(model):
        raise TypeError(f"model must be a ConcreteAutoencoder or a factory returning one, got {type(model).__name__}")

    def build() -> ConcreteAutoencoder:
        built = model()
        if not isinstance(built, ConcreteAutoencoder):
            raise TypeError(f"the model factory must return a ConcreteAutoencoder, got {type(built).__name__}")
        return built

    return build
