"""The training loop: :func:`fit` runs a model's own training protocol over a data set.

The model brings its release settings (epochs, batch size), optimisers and
training step (see :mod:`uae_augment.models.base`); :func:`fit` brings the
seeded data order, the device, the progress bar, the step budget and the history.
"""

from __future__ import annotations

import inspect
import logging
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler, TensorDataset

from .._heap import retain_freed_memory
from .._model_state import model_device
from .._progress import Progress
from .._seeding import derive_seed
from .._validation import check_images
from ..models.base import FitSettings, Trainable, positive_int
from ._loss import check_step_values

logger = logging.getLogger(__name__)

_FIT_KEY = 0xF17
_SHUFFLE_STREAM = 1
_MODEL_STREAM = 2
_WORKER_STREAM = 3
_STEP_OPTIONS = ("index", "epoch", "seed", "forward")  # passed to a training_step that names them

__all__ = ["FitHistory", "FitSettings", "fit"]


@dataclass
class FitHistory:
    """What :func:`fit` did.

    Attributes:
        losses: mean training loss of each epoch run (the last epoch may be
            partial when ``max_steps`` ended it).
        step_losses: the loss of every step (averaged over the processes of a
            distributed fit).
        metrics: per epoch, the mean of every value the model's ``training_step``
            returned (``"loss"`` and its parts, e.g. ``"discriminator"``).
        steps: optimisation steps run (one per batch; a step may update several
            optimisers, as the adversarial autoencoder's does).
        epochs: epochs started (``len(losses)``).
        batch_size: the batch size used.
        seconds: wall time of the loop.
    """

    losses: list[float] = field(default_factory=list)
    step_losses: list[float] = field(default_factory=list)
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
    world: tuple[int, int] | None = None,
) -> FitHistory:
    """Trains ``model`` on ``dataset`` with the model's own training protocol.

    The data order is shuffled by a generator seeded from ``seed``, and every
    random draw of the training step (dropout, Gumbel noise, prior samples)
    comes from the default generators (CPU, and the training GPU's) re-seeded from ``seed`` inside a forked RNG
    state, so the caller's random state is untouched and the same model,
    data and seed give the same weights (on the same device and torch build).

    A ``training_step`` that names them in its signature also receives, per
    batch, ``index`` (the batch's row indices in ``dataset``, int64 (B,)),
    ``epoch`` (0-based), ``seed`` (this argument) and, in a distributed fit,
    ``forward`` (the ``DistributedDataParallel`` wrapper to run the network through).

    Args:
        model: an ``nn.Module`` implementing ``default_fit``, ``configure_optimizers``
            and ``training_step`` (all reference models of :mod:`uae_augment.models`);
            it may define ``on_fit_start(total_steps)``.
        dataset: a Dataset whose items are ``x``, ``(x,)``, ``(x, y)`` or
            ``(x, y, ...)`` (extra fields are ignored), or a tensor of inputs
            (N, ...). Inputs must be floats in [0, 1] (the first batch is checked).
        epochs: number of epochs; default the model's release setting. With
            ``max_steps`` and no ``epochs``, as many epochs as ``max_steps`` needs.
        batch_size: default the model's release setting (``default_fit(len(dataset))``);
            with ``world``, the global batch of all processes together.
        seed: seed of the data order and of the training step's randomness.
        progress: show a tqdm bar (one update per step) with the epoch and the running mean
            loss of the epoch, and log an estimate of the total time after the first step.
        device: where to train; default the model's current device. The model is
            moved there and stays there.
        num_workers: DataLoader worker processes.
        max_steps: stop after this many optimisation steps (batches). Use it to
            train a control model for exactly as many steps as another one.
        world: ``(rank, size)`` of a data-parallel run (``torch.distributed``
            initialised when size > 1), or ``(0, 1)`` for one process that sees
            the batches of such a run. Every epoch draws one permutation from
            ``torch.Generator().manual_seed(seed)`` (the same on every rank), cuts it
            into global batches of ``batch_size`` rows (the last, partial batch is
            dropped) and rank r trains on the r-th of ``size`` equal parts of each.
            With size > 1 the model runs under ``DistributedDataParallel``
            (``SyncBatchNorm`` on CUDA), its step must take ``forward``, the step's
            values are averaged over the ranks, BatchNorm buffers end as rank 0's,
            and only rank 0 shows a bar. ``None`` (default): batches of the whole
            shuffled set, the last one possibly partial.

    Returns:
        A :class:`FitHistory`. The model is left in eval mode.

    Raises:
        TypeError: if the model does not implement the training protocol (or its
            step takes no ``forward`` in a distributed fit), or a batch is not a
            tensor or a tuple/list starting with one.
        ValueError: on an empty data set, non-positive ``epochs``, ``batch_size``
            or ``max_steps``, a negative ``num_workers``, inputs that are not
            floats in [0, 1], or a ``world`` whose batch is larger than the data
            set or does not split evenly over its processes.
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
    _check_trainable(model)
    if isinstance(dataset, torch.Tensor):
        dataset = TensorDataset(dataset)
    num_samples = len(dataset)  # type: ignore[arg-type]
    if num_samples == 0:
        raise ValueError("fit got an empty data set")
    batch_size = _positive(batch_size, "batch_size", model.default_fit(num_samples).batch_size)
    if num_workers < 0:
        raise ValueError(f"num_workers must be >= 0, got {num_workers}")
    order = _EpochOrder(num_samples, batch_size, seed, world)
    epochs, total_steps = _schedule(model, num_samples, order.batches_per_epoch, epochs, max_steps)

    device = torch.device(device) if device is not None else model_device(model)
    model.to(device)
    loader = DataLoader(
        dataset,
        batch_sampler=order,
        generator=torch.Generator().manual_seed(derive_seed(seed, _FIT_KEY, _WORKER_STREAM)),
        num_workers=num_workers,
        pin_memory=device.type == "cuda",
        persistent_workers=num_workers > 0,
    )
    history = FitHistory(batch_size=batch_size)
    name = type(model).__name__
    retain_freed_memory()  # every step frees and re-allocates its activations (uae_augment._heap)
    logger.info(
        "fit %s: %d samples, %d epochs, batch %d, %d steps on %s",
        name,
        num_samples,
        epochs,
        batch_size,
        total_steps,
        device,
    )
    start = time.perf_counter()
    cuda_devices = _cuda_indices(device)
    with torch.random.fork_rng(devices=cuda_devices):
        _seed_generators(derive_seed(seed, _FIT_KEY, _MODEL_STREAM), cuda_devices)
        step = _Step(model, device, seed, world)
        optimizers = list(model.configure_optimizers())
        on_fit_start = getattr(model, "on_fit_start", None)
        if callable(on_fit_start):
            on_fit_start(total_steps)
        model.train()
        try:
            bar = Progress(
                total_steps,
                f"fit {name}",
                unit="step",
                enabled=progress and order.rank == 0,
                log=logger,
            )
            with bar:
                for epoch in range(epochs):
                    if history.steps >= total_steps:
                        break
                    order.start_epoch(total_steps - history.steps)
                    sums: dict[str, float] = {}
                    count = 0
                    for rows, batch in zip(order.rows, loader):
                        x, y = _split_batch(batch, device, check=history.steps == 0)
                        values = step(x, y, optimizers, rows, epoch, history.steps)
                        for key, value in values.items():
                            sums[key] = sums.get(key, 0.0) + value
                        count += 1
                        history.step_losses.append(values["loss"])
                        history.steps += 1
                        bar.update(1)
                        bar.set_postfix(epoch=epoch + 1, loss=f"{sums['loss'] / count:.4g}")
                    means = {key: total / count for key, total in sums.items()}
                    history.metrics.append(means)
                    history.losses.append(means["loss"])
                    history.epochs += 1
                    logger.info("fit %s: epoch %d/%d mean loss %.6g", name, epoch + 1, epochs, means["loss"])
            step.finish()
        finally:
            model.eval()
    history.seconds = time.perf_counter() - start
    return history


class _EpochOrder(Sampler[list[int]]):
    """fit's batch sampler: the row lists of the current epoch (this rank's part of each global batch).

    Without a world: batches of one seeded permutation per epoch, the last one
    possibly partial; the order stream is that of ``RandomSampler`` (which
    draws, and discards, a second permutation for the empty remainder of each
    epoch), so orders equal earlier releases'. With a world: the rule given
    under :func:`fit`'s ``world`` argument.
    """

    def __init__(self, num_samples: int, batch_size: int, seed: int, world: tuple[int, int] | None):
        self.num_samples, self.batch_size = num_samples, batch_size
        self.rank, self.size = world if world is not None else (0, 1)
        self.distributed = world is not None
        if self.distributed:
            if not 0 <= self.rank < self.size:
                raise ValueError(f"world must be (rank, size) with 0 <= rank < size, got {world}")
            if batch_size % self.size:
                raise ValueError(f"batch_size {batch_size} does not split evenly over {self.size} processes")
            self.batches_per_epoch = num_samples // batch_size
            if self.batches_per_epoch == 0:
                raise ValueError(
                    f"batch_size {batch_size} is larger than the {num_samples} rows (a fit with a world drops"
                    " the last partial batch)"
                )
            self._generator = torch.Generator().manual_seed(seed)
        else:
            self.batches_per_epoch = math.ceil(num_samples / batch_size)
            self._generator = torch.Generator().manual_seed(derive_seed(seed, _FIT_KEY, _SHUFFLE_STREAM))
        self.rows: list[torch.Tensor] = []

    def start_epoch(self, steps_left: int) -> None:
        """Draws the epoch's permutation and keeps at most ``steps_left`` batches of it."""
        permutation = torch.randperm(self.num_samples, generator=self._generator)
        batches = min(self.batches_per_epoch, steps_left)
        if not self.distributed:
            if batches == self.batches_per_epoch:
                torch.randperm(self.num_samples, generator=self._generator)  # RandomSampler's remainder draw
            self.rows = list(permutation.split(self.batch_size)[:batches])
            return
        local = self.batch_size // self.size
        self.rows = [
            permutation[b * self.batch_size : (b + 1) * self.batch_size][self.rank * local : (self.rank + 1) * local]
            for b in range(batches)
        ]

    def __iter__(self) -> Iterator[list[int]]:
        return (rows.tolist() for rows in self.rows)

    def __len__(self) -> int:
        return len(self.rows)


class _Step:
    """Calls the model's training step with the options it names; in a distributed fit, under DDP."""

    def __init__(self, model: nn.Module, device: torch.device, seed: int, world: tuple[int, int] | None):
        self.model, self.device, self.seed = model, device, seed
        self.size = world[1] if world is not None else 1
        self.owner = f"{type(model).__name__}.training_step"
        parameters = inspect.signature(model.training_step).parameters  # type: ignore[operator]
        self.options = {name for name in _STEP_OPTIONS if name in parameters}
        self.forward: Callable[[torch.Tensor], torch.Tensor] | None = None
        if self.size > 1:
            if "forward" not in self.options:
                raise TypeError(
                    f"a distributed fit needs a training step that takes `forward` (the DDP wrapper);"
                    f" {self.owner} does not"
                )
            if device.type == "cuda":
                nn.SyncBatchNorm.convert_sync_batchnorm(model)
            ids = [device.index] if device.type == "cuda" else None
            self.forward = nn.parallel.DistributedDataParallel(model, device_ids=ids)

    def __call__(
        self,
        x: torch.Tensor,
        y: torch.Tensor | None,
        optimizers: Sequence[torch.optim.Optimizer],
        rows: torch.Tensor,
        epoch: int,
        step: int,
    ) -> dict[str, float]:
        given = {"index": rows, "epoch": epoch, "seed": self.seed, "forward": self.forward}
        options = {name: given[name] for name in self.options if given[name] is not None}
        values = self.model.training_step(x, y, optimizers, **options)  # type: ignore[operator]
        if self.size > 1:
            values = self._mean_over_ranks(values)
        return check_step_values(values, self.owner, f"at step {step}")

    def _mean_over_ranks(self, values: object) -> object:
        if not isinstance(values, dict):
            return values
        keys = sorted(values)
        summed = torch.tensor([float(values[key]) for key in keys], dtype=torch.float64, device=self.device)
        dist.all_reduce(summed)
        summed /= self.size
        return dict(zip(keys, summed.tolist()))

    def finish(self) -> None:
        """Gives every rank rank 0's buffers (BatchNorm statistics last saw each rank's own batch)."""
        if self.size > 1:
            for buffer in self.model.buffers():
                dist.broadcast(buffer, src=0)


def _check_trainable(model: nn.Module) -> None:
    if not isinstance(model, nn.Module) or not isinstance(model, Trainable):
        missing = [
            name
            for name in ("default_fit", "configure_optimizers", "training_step")
            if not callable(getattr(model, name, None))
        ]
        raise TypeError(
            f"fit needs an nn.Module implementing the training protocol (missing: "
            f"{', '.join(missing) or 'nn.Module'}), got {type(model).__name__}; see"
            " uae_augment.models.base"
        )


def _schedule(
    model: nn.Module,
    num_samples: int,
    batches_per_epoch: int,
    epochs: int | None,
    max_steps: int | None,
) -> tuple[int, int]:
    """(epochs, total steps) of a fit."""
    if max_steps is not None:
        max_steps = positive_int(max_steps, "max_steps")
        epochs = _positive(epochs, "epochs", math.ceil(max_steps / batches_per_epoch))
        return epochs, min(max_steps, epochs * batches_per_epoch)
    epochs = _positive(epochs, "epochs", model.default_fit(num_samples).epochs)  # type: ignore[operator]
    return epochs, epochs * batches_per_epoch


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


def _split_batch(batch: Any, device: torch.device, *, check: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
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
