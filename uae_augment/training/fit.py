"""The training loop: :func:`fit` runs a model's own training protocol over a data set.

The model brings its release settings (epochs, batch size), optimisers and
training step (see :mod:`uae_augment.models.base`); :func:`fit` brings the
seeded data order, the device, the progress bar, the step budget and the history.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, RandomSampler, TensorDataset

from .._model_state import model_device
from .._progress import Progress
from .._seeding import derive_seed
from .._validation import check_images
from ..models.base import FitSettings, Trainable, positive_int

logger = logging.getLogger(__name__)

_FIT_KEY = 0xF17
_SHUFFLE_STREAM = 1
_MODEL_STREAM = 2
_WORKER_STREAM = 3

__all__ = ["FitHistory", "FitSettings", "fit"]


@dataclass
class FitHistory:
    """What :func:`fit` did.

    Attributes:
        losses: mean training loss of each epoch run (the last epoch may be
            partial when ``max_steps`` ended it).
        metrics: per epoch, the mean of every value the model's ``training_step``
            returned (``"loss"`` and its parts, e.g. ``"discriminator"``).
        steps: optimisation steps run (one per batch; a step may update several
            optimisers, as the adversarial autoencoder's does).
        epochs: epochs started (``len(losses)``).
        batch_size: the batch size used.
        seconds: wall time of the loop.
    """

    losses: list[float] = field(default_factory=list)
    metrics: list[dict[str, float]] = field(default_factory=list)
    steps: int = 0
    epochs: int = 0
    batch_size: int = 0
    seconds: float = 0.0


def fit(
    model: nn.Module,
    dataset: Dataset | torch.Tensor,
    *,
    epochs: int | None = None,
    batch_size: int | None = None,
    seed: int = 0,
    progress: bool = True,
    device: torch.device | str | None = None,
    num_workers: int = 0,
    max_steps: int | None = None,
) -> FitHistory:
    """Trains ``model`` on ``dataset`` with the model's own training protocol.

    The data order is shuffled by a generator seeded from ``seed``, and every
    random draw of the training step (dropout, Gumbel noise, prior samples)
    comes from the default generators (CPU, and the training GPU's) re-seeded from ``seed`` inside a forked RNG
    state, so the caller's random state is untouched and the same model,
    data and seed give the same weights (on the same device and torch build).

    Args:
        model: an ``nn.Module`` implementing ``default_fit``, ``configure_optimizers``
            and ``training_step`` (all reference models of :mod:`uae_augment.models`);
            it may define ``on_fit_start(total_steps)``.
        dataset: a Dataset whose items are ``x``, ``(x,)``, ``(x, y)`` or
            ``(x, y, ...)`` (extra fields are ignored), or a tensor of inputs
            (N, ...). Inputs must be floats in [0, 1] (the first batch is checked).
        epochs: number of epochs; default the model's release setting. With
            ``max_steps`` and no ``epochs``, as many epochs as ``max_steps`` needs.
        batch_size: default the model's release setting (``default_fit(len(dataset))``).
        seed: seed of the data order and of the training step's randomness.
        progress: show a tqdm bar (one update per step) with the epoch and the running mean
            loss of the epoch, and log an estimate of the total time after the first step.
        device: where to train; default the model's current device. The model is
            moved there and stays there.
        num_workers: DataLoader worker processes.
        max_steps: stop after this many optimisation steps (batches). Use it to
            train a control model for exactly as many steps as another one.

    Returns:
        A :class:`FitHistory`. The model is left in eval mode.

    Raises:
        TypeError: if the model does not implement the training protocol, or a
            batch is not a tensor or a tuple/list starting with one.
        ValueError: on an empty data set, non-positive ``epochs``, ``batch_size``
            or ``max_steps``, a negative ``num_workers``, or inputs that are not
            floats in [0, 1].
        FloatingPointError: if the training loss becomes NaN or infinite.

    Example:
        >>> import torch
        >>> from uae_augment import fit
        >>> from uae_augment.models import ConvAutoencoder
        >>> model = ConvAutoencoder(in_channels=1, image_size=8)
        >>> history = fit(model, torch.rand(64, 1, 8, 8), epochs=2, batch_size=16, progress=False)
        >>> history.steps, len(history.losses), model.training
        (8, 2, False)
    """
    if not isinstance(model, nn.Module) or not isinstance(model, Trainable):
        missing = [
            name for name in ("default_fit", "configure_optimizers", "training_step")
            if not callable(getattr(model, name, None))
        ]
        raise TypeError(
            f"fit needs an nn.Module implementing the training protocol (missing: "
            f"{', '.join(missing) or 'nn.Module'}), got {type(model).__name__}; see"
            " uae_augment.models.base"
        )
    if isinstance(dataset, torch.Tensor):
        dataset = TensorDataset(dataset)
    num_samples = len(dataset)  # type: ignore[arg-type]
    if num_samples == 0:
        raise ValueError("fit got an empty data set")
    settings = model.default_fit(num_samples)
    batch_size = _positive(batch_size, "batch_size", settings.batch_size)
    if num_workers < 0:
        raise ValueError(f"num_workers must be >= 0, got {num_workers}")
    batches_per_epoch = math.ceil(num_samples / batch_size)
    if max_steps is not None:
        max_steps = positive_int(max_steps, "max_steps")
        epochs = _positive(epochs, "epochs", math.ceil(max_steps / batches_per_epoch))
        total_steps = min(max_steps, epochs * batches_per_epoch)
    else:
        epochs = _positive(epochs, "epochs", settings.epochs)
        total_steps = epochs * batches_per_epoch

    device = torch.device(device) if device is not None else model_device(model)
    model.to(device)
    # The order has its own generator so worker seeding (drawn from the loader's
    # generator, once per iterator) cannot shift it: same order with or without workers.
    order = torch.Generator().manual_seed(derive_seed(seed, _FIT_KEY, _SHUFFLE_STREAM))
    workers = torch.Generator().manual_seed(derive_seed(seed, _FIT_KEY, _WORKER_STREAM))
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=RandomSampler(dataset, generator=order),
        generator=workers,
        num_workers=num_workers,
        pin_memory=device.type == "cuda",
        persistent_workers=num_workers > 0,
    )
    history = FitHistory(batch_size=batch_size)
    name = type(model).__name__
    logger.info(
        "fit %s: %d samples, %d epochs, batch %d, %d steps on %s",
        name, num_samples, epochs, batch_size, total_steps, device,
    )
    start = time.perf_counter()
    cuda_devices = _cuda_indices(device)
    with torch.random.fork_rng(devices=cuda_devices):
        _seed_generators(derive_seed(seed, _FIT_KEY, _MODEL_STREAM), cuda_devices)
        optimizers = list(model.configure_optimizers())
        on_fit_start = getattr(model, "on_fit_start", None)
        if callable(on_fit_start):
            on_fit_start(total_steps)
        model.train()
        try:
            with Progress(total_steps, f"fit {name}", unit="step", enabled=progress, log=logger) as bar:
                for epoch in range(epochs):
                    if history.steps >= total_steps:
                        break
                    sums: dict[str, float] = {}
                    count = 0
                    for batch in loader:
                        x, y = _split_batch(batch, device, check=history.steps == 0)
                        values = model.training_step(x, y, optimizers)
                        _check_loss(values, history.steps, name)
                        for key, value in values.items():
                            sums[key] = sums.get(key, 0.0) + float(value)
                        count += 1
                        history.steps += 1
                        bar.update(1)
                        bar.set_postfix(epoch=epoch + 1, loss=f"{sums['loss'] / count:.4g}")
                        if history.steps >= total_steps:
                            break
                    means = {key: total / count for key, total in sums.items()}
                    history.metrics.append(means)
                    history.losses.append(means["loss"])
                    history.epochs += 1
                    logger.info("fit %s: epoch %d/%d mean loss %.6g", name, epoch + 1, epochs, means["loss"])
        finally:
            model.eval()
    history.seconds = time.perf_counter() - start
    return history


def _positive(value: int | None, name: str, default: int) -> int:
    return default if value is None else positive_int(value, name)


def _cuda_indices(device: torch.device) -> list[int]:
    if device.type != "cuda":
        return []
    torch.cuda.init()  # default_generators is populated on initialisation
    return [device.index if device.index is not None else torch.cuda.current_device()]


def _seed_generators(seed: int, cuda_devices: list[int]) -> None:
    """Seeds the CPU generator and the training device's (not every GPU's, as manual_seed does)."""
    torch.default_generator.manual_seed(seed)
    for index in cuda_devices:
        torch.cuda.default_generators[index].manual_seed(seed)


def _split_batch(
    batch: Any, device: torch.device, *, check: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    if isinstance(batch, torch.Tensor):
        x, y = batch, None
    elif isinstance(batch, Sequence) and batch and isinstance(batch[0], torch.Tensor):
        x = batch[0]
        y = batch[1] if len(batch) > 1 and isinstance(batch[1], torch.Tensor) else None
    else:
        raise TypeError(
            "fit expects data-set items x, (x,), (x, y) or (x, y, ...) with tensor x, got a"
            f" batch of type {type(batch).__name__}"
        )
    if check:
        check_images(x, name="training inputs")
    non_blocking = device.type == "cuda"
    x = x.to(device, non_blocking=non_blocking)
    return x, (y.to(device, non_blocking=non_blocking) if y is not None else None)


def _check_loss(values: object, step: int, name: str) -> None:
    if not isinstance(values, dict) or "loss" not in values:
        raise TypeError(f"{name}.training_step must return a dict with a 'loss' entry, got {values!r}")
    loss = float(values["loss"])
    if not math.isfinite(loss):
        raise FloatingPointError(f"training loss of {name} became {loss} at step {step}")
