"""Batch-level UAE augmentation, applied in the training loop after the DataLoader.

:class:`UAETransform` is the on-the-fly path (like torchvision's ``CutMix`` /
``MixUp``): attacks need a model and gradients, so they run on whole batches in
the main process, never per item inside DataLoader workers. The per-index
``Dataset`` path is :class:`~uae_augment.data.augmented.UAEAugmented`, which
generates once (in memory or into an HDF5 cache) and then only reads.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any, Literal, overload

import torch
from torch import nn

from .._progress import log_duration
from .._seeding import Stream, sample_generators, stacked_uniform
from .._validation import (
    check_batch_rank,
    check_images,
    check_probability,
    ensure_main_process,
    resolve_index,
)
from ..attacks.base import Attack, check_attack
from ..attacks.result import AttackResult
from ._items import parse_item, require_labels

logger = logging.getLogger(__name__)

TransformMode = Literal["replace", "append"]
_MODES: tuple[str, ...] = ("replace", "append")


def replacement_mask(p: float, seed: int, indices: torch.Tensor | Sequence[int], epoch: int = 0) -> torch.Tensor:
    """Which samples to replace by their UAE: one Bernoulli(p) draw per (seed, index, epoch).

    Sample ``i`` is replaced when a uniform number drawn from the generator
    ``sample_generator(seed, indices[i], Stream.REPLACE, epoch)`` is below ``p``,
    so the decision of one sample never depends on the other samples of its
    batch, on the batch size or on the process that draws it. ``p = 0`` and
    ``p = 1`` are exact (no sample, every sample).

    Args:
        p: replacement probability in [0, 1].
        seed: base seed of the draw.
        indices: (n,) global indices of the samples.
        epoch: epoch number mixed into the draw (a new epoch gives new draws).

    Returns:
        (n,) bool CPU tensor.

    Example:
        >>> mask = replacement_mask(0.5, seed=0, indices=range(1000))
        >>> mask.shape, 400 < int(mask.sum()) < 600
        (torch.Size([1000]), True)
        >>> bool((mask == replacement_mask(0.5, 0, range(1000))).all())
        True
    """
    index = torch.as_tensor(indices, dtype=torch.long).reshape(-1)
    if p <= 0.0:
        return torch.zeros(index.numel(), dtype=torch.bool)
    if p >= 1.0:
        return torch.ones(index.numel(), dtype=torch.bool)
    generators = sample_generators(seed, index, Stream.REPLACE, int(epoch))
    return stacked_uniform(generators, (), 0.0, 1.0, dtype=torch.float64) < p


class UAETransform(nn.Module):
    """Replaces (or extends) a batch with its unsupervised adversarial examples.

    Used in the training loop after the DataLoader, like torchvision's
    ``CutMix``/``MixUp``: ``x, y = uae(x, y)``, or ``x = uae(x)`` for
    unsupervised training (only ``x`` is returned when ``y`` is None). With
    ``sample_key``, a batch is a dict (the default collation of dict items)
    holding the (N, ...) samples under that key: ``batch = uae(batch)`` returns
    a new dict with the samples augmented and the other entries kept (in
    ``append`` mode every other entry, a tensor or list with N rows, gets the
    rows of the attacked samples appended, like labels).

    * ``mode="replace"``: each sample is replaced by its UAE with probability
      ``p``; the batch keeps its shape and its labels.
    * ``mode="append"``: the samples drawn with probability ``p`` (all of them
      for the default ``p = 1``) are attacked and their UAEs appended after the
      clean batch, with their labels repeated: ``x_out = cat([x, uae(x[m])])``,
      ``y_out = cat([y, y[m]])``. Every attacked sample is appended, whether the
      attack succeeded or not (``last_result.success`` tells which did).

    Only the drawn samples are attacked. Randomness: the draw of sample ``i``
    and the attack's per-sample seed use a global index. Pass it explicitly
    (``uae(x, y, index=idx)``, e.g. dataset indices) for per-sample
    determinism: the same sample, epoch and seed always give the same decision
    and the same UAE, whatever batch it is in. Without ``index`` the transform
    numbers the samples it has seen with a running counter (batch ``k`` of
    sizes ``n_0, n_1, ...`` gets indices ``sum(n_<k) .. sum(n_<=k) - 1``), so a
    run is reproducible for the same sequence of calls. :meth:`set_epoch`
    changes the draws for explicit indices, like ``DistributedSampler.set_epoch``.

    The output is on the input's device with the input's dtype; the attack
    freezes and restores its model itself. The module holds no parameters (the
    attack's models are not registered as submodules). After each call,
    ``last_result`` holds the attack's :class:`AttackResult` for the attacked
    samples (None when none was drawn) and ``last_mask`` the (N,) bool mask of
    the attacked samples.

    Attacks never run inside DataLoader workers: calling the transform there
    raises a RuntimeError (use ``precompute``/``UAECache`` or
    ``UAEAugmented(..., cache=path)`` for per-item access).

    A call whose attack runs longer than a few seconds logs its time at INFO
    (see :func:`~uae_augment._progress.log_duration`); within a call, the attack's
    own bar (automatic by default: ``progress=None``) shows a call that runs longer
    than a few seconds, per iteration for the MinMax attacks.

    Args:
        attack: a uae_augment attack, e.g. ``MINEUAE(Reconstruction(ae))``; it
            receives the labels when ``attack.requires_labels``.
        p: probability that a sample is attacked, in [0, 1].
        mode: ``"replace"`` or ``"append"``.
        seed: seed of the Bernoulli draws (the attack has its own seed).
        sample_key: the key of the samples in dict batches (None: tensor batches).

    Raises:
        TypeError: ``attack`` is not an :class:`~uae_augment.attacks.base.Attack`.
        ValueError: ``p`` outside [0, 1] or an unknown ``mode``.

    Example:
        >>> from uae_augment import GaussianNoise, Reconstruction
        >>> ae = nn.Sequential(nn.Flatten(), nn.Linear(4, 4), nn.Sigmoid(), nn.Unflatten(1, (1, 2, 2)))
        >>> uae = UAETransform(GaussianNoise(Reconstruction(ae), sigma=0.01), p=1.0, mode="append")
        >>> x, y = uae(torch.rand(8, 1, 2, 2), torch.arange(8))
        >>> x.shape, y.tolist()[8:11]
        (torch.Size([16, 1, 2, 2]), [0, 1, 2])
    """

    def __init__(
        self,
        attack: Attack,
        p: float = 1.0,
        mode: TransformMode = "replace",
        seed: int = 0,
        *,
        sample_key: str | None = None,
    ):
        super().__init__()
        check_attack(attack, "UAETransform")
        if mode not in _MODES:
            raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")
        self.attack = attack
        self.p = check_probability(p)
        self.mode: TransformMode = mode
        self.seed = int(seed)
        self.sample_key = sample_key
        self.epoch = 0
        self.calls = 0
        self.samples_seen = 0
        self.last_result: AttackResult | None = None
        self.last_mask: torch.Tensor | None = None

    def set_epoch(self, epoch: int) -> None:
        """Sets the epoch mixed into the draws (matters for explicit ``index``)."""
        self.epoch = int(epoch)

    @overload
    def forward(
        self, x: torch.Tensor, y: None = None, *, index: torch.Tensor | Sequence[int] | None = None
    ) -> torch.Tensor: ...

    @overload
    def forward(
        self, x: torch.Tensor, y: torch.Tensor, *, index: torch.Tensor | Sequence[int] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]: ...

    @overload
    def forward(
        self,
        x: Mapping[str, Any],
        y: None = None,
        *,
        index: torch.Tensor | Sequence[int] | None = None,
    ) -> dict[str, Any]: ...

    def forward(
        self,
        x: torch.Tensor | Mapping[str, Any],
        y: torch.Tensor | None = None,
        *,
        index: torch.Tensor | Sequence[int] | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor] | dict[str, Any]:
        """Augments one batch.

        Args:
            x: float tensor (N, ...) with values in [0, 1]; or, with
                ``sample_key``, a dict holding such a tensor under that key.
            y: optional labels (N, ...) (any tensor whose first axis is N);
                required when ``attack.requires_labels``; not with dict batches.
            index: optional (N,) global sample indices (see the class docstring).

        Returns:
            ``x_out`` when ``y`` is None, else ``(x_out, y_out)``; a dict batch
            gives a new dict. ``replace``: shapes unchanged (``x`` itself when
            no sample is drawn); ``append``: N + (number of attacked samples) rows.

        Raises:
            RuntimeError: when called inside a DataLoader worker.
            TypeError, ValueError: invalid ``x``, ``y`` or ``index`` (also
                missing labels for a supervised attack, a dict batch without
                ``sample_key``, or a dict entry without N rows in append mode).
        """
        if self.sample_key is None and not isinstance(x, Mapping):
            return self._augment(x, y, index)
        if y is not None:
            raise TypeError("dict batches carry no separate labels: call uae(batch) without y")
        batch = parse_item(x, None, sample_key=self.sample_key, source="the batch")
        require_labels(self.attack, False, None, "the batch")
        assert batch.mapping is not None and batch.sample_key is not None
        out = self._augment(batch.sample, None, index)
        if self.mode == "replace" or self.last_result is None:
            return batch.with_sample(out)
        assert self.last_mask is not None
        rows = self.last_mask.nonzero().squeeze(1)
        n = batch.sample.shape[0]
        entries = {key: _append_rows(value, rows, n, key) for key, value in batch.mapping.items()}
        return {**entries, batch.sample_key: out}

    def _augment(self, x: torch.Tensor, y: torch.Tensor | None, index: torch.Tensor | Sequence[int] | None) -> Any:
        """The tensor path of :meth:`forward`: ``x_out`` or ``(x_out, y_out)``."""
        ensure_main_process(
            "UAETransform",
            "Apply it to whole batches in the training loop, after the DataLoader; for per-item"
            " access precompute the UAEs (uae_augment.precompute + UAECache, or"
            " UAEAugmented(dataset, attack, cache=path)).",
        )
        x = check_images(x)
        check_batch_rank(x, next(iter(self.attack.models()), None))  # also when no sample is drawn
        n = x.shape[0]
        if y is not None:
            if not isinstance(y, torch.Tensor):
                raise TypeError(f"y must be a torch.Tensor or None, got {type(y).__name__}")
            if y.dim() == 0 or y.shape[0] != n:
                raise ValueError(f"y must have {n} rows to match x, got shape {tuple(y.shape)}")
        if self.attack.requires_labels and y is None:
            raise ValueError(f"{type(self.attack).__name__} needs labels: call uae(x, y)")
        if index is None:
            global_index = torch.arange(self.samples_seen, self.samples_seen + n)
        else:
            global_index = resolve_index(index, n)
        self.calls += 1
        self.samples_seen += n

        mask = replacement_mask(self.p, self.seed, global_index, self.epoch)
        self.last_mask = mask
        if not mask.any():
            self.last_result = None
            return _outputs(x, y, y is not None)
        rows = mask.nonzero().squeeze(1)
        device_rows = rows.to(x.device)
        labels = y.index_select(0, rows.to(y.device)) if y is not None else None
        start = time.perf_counter()
        result = self.attack(
            x.index_select(0, device_rows),
            labels if self.attack.requires_labels else None,
            index=global_index[rows],
        )
        self.last_result = result
        adversarial = result.adversarial.to(device=x.device, dtype=x.dtype)
        log_duration(
            logger,
            time.perf_counter() - start,
            "UAETransform call %d: attacked %d of %d samples, ASR %.4f,",
            self.calls,
            rows.numel(),
            n,
            result.asr,
        )
        if self.mode == "replace":
            out = x.clone()
            out[device_rows] = adversarial
            return _outputs(out, y, y is not None)
        out = torch.cat([x, adversarial])
        y_out = torch.cat([y, labels]) if y is not None and labels is not None else None
        return _outputs(out, y_out, y is not None)

    def extra_repr(self) -> str:
        return (
            f"attack={self.attack!r}, p={self.p}, mode={self.mode!r}, seed={self.seed},"
            f" epoch={self.epoch}, calls={self.calls}"
            + (f", sample_key={self.sample_key!r}" if self.sample_key is not None else "")
        )


def _append_rows(value: Any, rows: torch.Tensor, n: int, key: str) -> Any:
    """A dict batch entry with its ``rows`` appended (append mode), like the labels.

    Raises:
        ValueError: the entry is not a tensor, list or tuple with ``n`` rows.
    """
    if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape[0] == n:
        return torch.cat([value, value.index_select(0, rows.to(value.device))])
    if isinstance(value, (list, tuple)) and len(value) == n:
        return type(value)([*value, *(value[r] for r in rows.tolist())])
    found = f"shape {tuple(value.shape)}" if isinstance(value, torch.Tensor) else type(value).__name__
    raise ValueError(
        f"append mode appends the attacked rows to every entry of a dict batch, so entry {key!r}"
        f" must be a tensor, list or tuple with {n} rows, got {found}"
    )


def _outputs(
    x: torch.Tensor, y: torch.Tensor | None, with_labels: bool
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    if not with_labels:
        return x
    assert y is not None
    return x, y
