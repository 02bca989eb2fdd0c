"""The shared attack base: input checks, model state, chunking and progress."""

from __future__ import annotations

import abc
import itertools
import logging
from typing import Any

import torch
from torch import nn

from .._heap import retain_freed_memory
from .._model_state import frozen, model_device
from .._progress import Progress, auto_options
from .._validation import (
    check_batch_rank,
    check_images,
    check_labels,
    check_precision,
    resolve_index,
)
from .result import AttackResult

logger = logging.getLogger(__name__)

EVALUATION_BLOCK = 8
"""Every chunk (and every L-BFGS model call) is padded to a multiple of this many rows.

BLAS and oneDNN pick their kernels, blocking and thread split by the number of
rows: on an AMD EPYC batches of 1 to 3 rows (1: GEMV), and with 2 threads also
of 5, 7 and 9 rows, give a row other bits than the same row inside a larger
batch, while multiples of 8 (8 to 512 rows, offsets 0 and 3) give identical
rows for ``nn.Linear`` and ``nn.Conv2d``, forward and backward.
"""


def check_attack(attack: object, where: str) -> Attack:
    """Returns ``attack`` if it is an :class:`Attack` (any subclass).

    Args:
        attack: the object to check.
        where: who asks, e.g. ``"UAETransform"``; starts the error message.

    Raises:
        TypeError: for anything else, naming the type found.
    """
    if not isinstance(attack, Attack):
        raise TypeError(f"{where}: attack must be a uae_augment Attack, got {type(attack).__name__}")
    return attack


def pad_rows(tensor: torch.Tensor, block: int = EVALUATION_BLOCK) -> torch.Tensor:
    """Appends copies of the last row until the row count is a multiple of ``block``.

    Args:
        tensor: (N, ...) with N >= 1.
        block: the row multiple (>= 1).

    Returns:
        (ceil(N / block) * block, ...): ``tensor`` itself when no row is missing.
    """
    missing = -tensor.shape[0] % block
    if missing == 0:
        return tensor
    return torch.cat([tensor, tensor[-1:].expand(missing, *tensor.shape[1:])])


def padding_rows(index: torch.Tensor) -> torch.Tensor:
    """(N,) bool: the rows :func:`pad_rows` appended to a chunk (they repeat the last index).

    Global indices are unique (:func:`~uae_augment._validation.resolve_index`),
    so a row whose index equals its predecessor's is padding.
    """
    repeated = torch.zeros(index.shape[0], dtype=torch.bool, device=index.device)
    repeated[1:] = index[1:] == index[:-1]
    return repeated


class Attack(abc.ABC):
    """Base class of every attack: ``result = attack(x, y=None, *, index=None)``.

    Subclasses implement :meth:`_attack_batch` for one chunk of samples and
    :meth:`_config` for their hyperparameters. The base class validates inputs,
    puts the models into eval mode with frozen parameters (restoring both
    afterwards), splits the input into chunks of ``batch_size`` and joins the
    per-chunk results. Results never depend on the chunking: all randomness of
    sample ``i`` comes from generators seeded by ``(seed, index[i])``, and every
    chunk is padded to a multiple of :data:`EVALUATION_BLOCK` rows (copies of
    its last row, discarded afterwards), so no kernel sees a batch shape whose
    rounding differs from that of a larger batch (see README, "Batch
    independence", for what is tested bitwise).

    Args:
        seed: base seed of all per-sample random generators.
        batch_size: largest number of samples attacked together (memory knob;
            ``None`` attacks all at once).
        progress: show a tqdm bar and log an estimate of the call's total time after
            its first update (see :class:`~uae_augment._progress.Progress`). The bar
            counts samples and moves once per chunk; MinMax attacks (``MINEUAE``,
            ``MinMaxAttack``, ``LpUAE``, ``PenaltyAttack``) count iterations, so it
            moves within a chunk. ``None`` (default): automatic, shown for a call
            that runs longer than a few seconds unless it runs inside another
            bar (``precompute``, ``UAEAugmented``), see
            :func:`~uae_augment._progress.auto_options`.
    """

    requires_labels: bool = False
    # Rows of each chunk handed to _attack_batch are padded to a multiple of this.
    _chunk_block: int = EVALUATION_BLOCK
    # What the progress bar counts: samples (per chunk), or what _advance counts (_chunk_units).
    _progress_unit: str = "sample"
    _bar: Progress | None = None

    def __init__(self, *, seed: int = 0, batch_size: int | None = None, progress: bool | None = None):
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"batch_size must be >= 1 or None, got {batch_size}")
        self.seed = int(seed)
        self.batch_size = batch_size
        self.progress = progress

    @abc.abstractmethod
    def models(self) -> list[nn.Module]:
        """The models whose gradients the attack uses (frozen during the attack)."""

    def device(self) -> torch.device:
        """Where the attack runs: the device of its first model; CPU for an attack without models.

        Inputs are moved here before the attack (``precompute``, ``UAEAugmented``).
        """
        models = self.models()
        return model_device(models[0]) if models else torch.device("cpu")

    @abc.abstractmethod
    def _attack_batch(self, x: torch.Tensor, y: torch.Tensor | None, index: torch.Tensor) -> AttackResult:
        """Attacks one chunk; ``index`` holds the chunk's global indices (CPU int64)."""

    @abc.abstractmethod
    def _config(self) -> dict[str, Any]:
        """The attack's hyperparameters (JSON-serialisable)."""

    def config(self) -> dict[str, Any]:
        """A JSON-serialisable description: class, seed and hyperparameters.

        Two attacks with equal configs (and equal model states) produce equal results.
        """
        return {"attack": type(self).__name__, "seed": self.seed, **self._config()}

    def __call__(
        self,
        x: torch.Tensor,
        y: torch.Tensor | None = None,
        *,
        index: torch.Tensor | None = None,
    ) -> AttackResult:
        """Attacks ``x`` (N, ...) in [0, 1]; returns per-sample results on ``x.device``.

        Args:
            x: float tensor (N, ...) with values in [0, 1].
            y: int labels (N,) (targets for targeted attacks); required by
                supervised attacks, ignored by unsupervised ones.
            index: global dataset indices (N,) of the samples; default ``arange(N)``.

        Raises:
            TypeError: non-tensor or non-float ``x``, non-integer labels or index.
            ValueError: empty batch, wrong rank (a missing batch axis is named as such:
                the rank comes from the first of :meth:`models`, the one that
                takes ``x``), NaN/Inf, values outside [0, 1],
                missing labels, mismatched shapes, or a model on another device.
        """
        x = check_images(x)
        check_precision(x, self.models())
        check_batch_rank(x, next(iter(self.models()), None))  # the first model takes x
        labels = check_labels(y, x.shape[0], required=self.requires_labels, device=x.device)
        global_index = resolve_index(index, x.shape[0])
        self._check_devices(x.device)
        retain_freed_memory()  # steps free and re-allocate their state (uae_augment._heap)
        n = x.shape[0]
        chunk = self.batch_size or n
        parts: list[AttackResult] = []
        bounds = [(start, min(start + chunk, n)) for start in range(0, n, chunk)]
        units = [self._chunk_units(stop - start) for start, stop in bounds]
        bar = Progress(
            sum(units),
            f"{type(self).__name__} ({n} samples)",
            unit=self._progress_unit,
            preset=getattr(self, "preset", None),
            log=logger,
            leave=False,
            **auto_options(self.progress),
        )
        self._bar = bar
        try:
            with frozen(self.models()), bar:
                for (start, stop), end in zip(bounds, itertools.accumulate(units)):
                    parts.append(self._attack_chunk(x[start:stop].detach(), labels, global_index, start, stop))
                    bar.update(end - bar.done)  # the rest of the chunk's units (all, without _advance)
                clean_success = self._clean_success(x.detach(), labels, global_index, chunk)
        finally:
            self._bar = None
        result = AttackResult.cat(parts).to(x.device)
        result.clean_success = None if clean_success is None else clean_success.to(x.device)
        logger.debug(
            "%s on %d samples: ASR %.4f (all inputs %.4f)",
            type(self).__name__,
            n,
            result.asr,
            result.asr_all,
        )
        return result

    def _chunk_units(self, rows: int) -> int:
        """The units the progress bar counts for a chunk of ``rows`` samples: the samples.

        Attacks that move the bar within a chunk by calling :meth:`_advance` once per
        iteration override this (and ``_progress_unit``) with their iterations per chunk.
        """
        return rows

    def _advance(self) -> None:
        """Moves the running call's bar by one unit (Python counters only: no device sync)."""
        if self._bar is not None:
            self._bar.update(1)

    def _attack_chunk(
        self,
        x: torch.Tensor,
        labels: torch.Tensor | None,
        index: torch.Tensor,
        start: int,
        stop: int,
    ) -> AttackResult:
        """Attacks rows ``start:stop`` (``x`` holds them) padded to ``_chunk_block`` rows."""
        block = self._chunk_block
        part = self._attack_batch(
            pad_rows(x, block),
            None if labels is None else pad_rows(labels[start:stop], block),
            pad_rows(index[start:stop], block),
        )
        return part[: stop - start] if len(part) != stop - start else part

    def _clean_success(
        self, x: torch.Tensor, y: torch.Tensor | None, index: torch.Tensor, chunk: int
    ) -> torch.Tensor | None:
        """(N,) bool: whether each clean input already meets a supervised attack's criterion
        (see ``AttackResult.clean_success``), evaluated in chunks of ``chunk`` padded like the
        attack's own; None for unsupervised attacks."""
        if not self.requires_labels or y is None:
            return None
        parts = []
        for a in range(0, x.shape[0], chunk):
            rows = min(chunk, x.shape[0] - a)
            part = self._clean_success_chunk(*(pad_rows(t[a : a + chunk], self._chunk_block) for t in (x, y, index)))
            if part is None:
                return None
            parts.append(part[:rows])
        return torch.cat(parts)

    def _clean_success_chunk(self, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor) -> torch.Tensor | None:
        """:meth:`_clean_success` of one chunk: the clean criterion is 0 (criterion attacks)."""
        criterion = getattr(self, "criterion", None)
        if criterion is None:
            return None
        with torch.no_grad():
            return criterion(x, criterion.prepare(x, y, index)) == 0

    def _check_devices(self, device: torch.device) -> None:
        for model in self.models():
            found = model_device(model)
            if found.type != device.type or (
                device.index is not None and found.index is not None and found.index != device.index
            ):
                raise ValueError(f"{type(model).__name__} is on {found} but x is on {device}; move one of them")

    def __repr__(self) -> str:
        items = ", ".join(f"{k}={v!r}" for k, v in self.config().items() if k != "attack")
        return f"{type(self).__name__}({items})"
