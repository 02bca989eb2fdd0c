"""A dataset wrapper that serves a base dataset together with its unsupervised adversarial examples.

:class:`UAEAugmented` keeps the base dataset's item structure (a bare sample,
``(x, y)``, ``(x, y, extra...)`` or a dict with a named sample key) and replaces
only the sample. The UAEs are generated once,
in batches, in the main process (kept in memory, or written to an HDF5 cache
with :func:`~uae_augment.data.cache.precompute`), and afterwards only read, so
the wrapper works inside DataLoader workers like any other dataset.
"""

from __future__ import annotations

import dataclasses
import logging
import operator
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from torch.utils.data import Dataset

from .._names import PRECOMPUTE_BATCH_SIZE
from .._progress import Progress
from .._validation import (
    check_images,
    check_probability,
    ensure_main_process,
    positive_int,
)
from ..attacks.base import Attack, check_attack
from ..attacks.result import AttackResult
from ._items import (
    FLAG_KEY,
    Item,
    dataset_length,
    parse_item,
    require_labels,
    stack_batch,
)
from .cache import UAECache, precompute
from .transforms import replacement_mask

logger = logging.getLogger(__name__)

AugmentMode = Literal["concat", "replace", "pair"]
_MODES: tuple[str, ...] = ("concat", "replace", "pair")
FailedPolicy = Literal["keep", "drop", "clean"]
_FAILED: tuple[str, ...] = ("keep", "drop", "clean")

_SOURCE = "the base dataset"
_IN_WORKER_HINT = (
    "Call .materialize() on the UAEAugmented dataset in the main process before creating the"
    " DataLoader (it generates every UAE once and keeps them in memory), or pass cache=path to"
    " precompute them into an HDF5 file that workers read."
)


class UAEAugmented(Dataset):
    """A base dataset augmented with the unsupervised adversarial examples (UAEs) of its samples.

    Modes (N = ``len(dataset)``):

    * ``"concat"`` (default, the paper's 1:1 protocol): length 2N; item
      ``i < N`` is the clean item ``i``, item ``N + i`` is item ``i`` with its
      sample replaced by its UAE (same label and extras).
    * ``"replace"``: length N; each access returns the UAE with probability
      ``p``. The draw of item ``i`` comes from a generator seeded by
      ``(seed, i, epoch)`` (see :func:`~uae_augment.data.transforms.replacement_mask`),
      so it is the same in every worker and process; :meth:`set_epoch` changes
      it (call it at the start of every epoch, like
      ``DistributedSampler.set_epoch``; the epoch lives in shared memory, so
      persistent workers see it too).
    * ``"pair"``: length N; item ``i`` is ``((clean, uae), y, extra...)``.

    Items keep the base dataset's structure, with only the sample replaced:
    ``(sample, y, extra...)``, plus a trailing bool "is UAE" when
    ``return_flag=True`` (not in pair mode). Unlabelled data works in every
    mode (with attacks that need no labels): a bare-sample item stays a bare
    sample (``(sample, is_uae)`` with ``return_flag``; ``(clean, uae)`` in pair
    mode), a ``(x,)`` tuple stays one, and a dict item (``sample_key`` names its
    sample) keeps its other entries, gets ``"is_uae"`` with ``return_flag``, and
    holds ``(clean, uae)`` under ``sample_key`` in pair mode.
    ``transform`` runs on the sample after the choice between clean and UAE
    (on both in pair mode), so random augmentations belong there, not in the
    base dataset (whose samples must be deterministic: the UAE of item ``i``
    is computed from the sample it returned at generation time).
    ``target_transform`` runs on the label.

    Failed UAEs (``success`` False: the attack criterion was not met, or, for
    MINE attacks, MI <= 0). ``failed="keep"`` (default) serves them like the
    others. ``failed="clean"`` serves the clean sample in their place (the
    ``return_flag`` flag is then False; a pair holds the clean sample twice);
    lengths are unchanged. ``failed="drop"`` serves only successful UAEs, so
    the UAEs are generated at construction and, with ``K`` successful samples
    at base indices ``kept = uae_success.nonzero().flatten()`` (ascending):
    concat has length ``N + K`` and item ``N + j`` is the UAE of base item
    ``kept[j]``; pair has length ``K`` and item ``j`` holds base item
    ``kept[j]``; replace keeps length N and serves base item ``i`` clean
    whenever its UAE failed.

    Generation. The attack runs on batches of ``batch_size`` base samples with
    their global indices ``i`` (the positions in ``dataset``) and with the
    labels when ``attack.requires_labels``, so row ``i`` equals
    ``attack(x, y, index=[i])``. Without ``cache`` the UAEs are generated on
    first need (or eagerly by :meth:`materialize`) in the main process and kept
    in memory; a first need inside a DataLoader worker raises a RuntimeError,
    because attacks never run in workers. With ``cache=path``,
    :func:`~uae_augment.data.cache.precompute` runs at construction (it reuses
    a finished file with the same provenance at once, resumes a partial one)
    and the items read rows of a :class:`~uae_augment.data.cache.UAECache`,
    which each worker opens lazily.

    Args:
        dataset: a map-style dataset of ``(x, y, extra...)`` items, of bare
            samples ``x`` or ``(x,)`` tuples, or of dicts with ``x`` under
            ``sample_key``; ``x`` a float tensor with values in [0, 1] (all of
            one shape).
        attack: a uae_augment attack, e.g. ``MINEUAE(Reconstruction(ae))``; its
            models may live on any device (inputs are moved there, results
            kept on the CPU).
        mode: ``"concat"``, ``"replace"`` or ``"pair"``.
        p: probability of the UAE in ``"replace"`` mode, in [0, 1].
        cache: path of an HDF5 cache file (created or reused), or None for memory.
        batch_size: number of base samples per attack call during generation.
        transform: callable applied to the chosen sample (each of clean and UAE in pair mode).
        target_transform: callable applied to the label (labelled items only).
        return_flag: append a bool "is UAE" to every item (concat and replace modes).
        seed: seed of the replace-mode draws (the attack has its own seed).
        failed: what to do with failed UAEs: ``"keep"``, ``"drop"`` or ``"clean"`` (see above).
        progress: show a tqdm bar while generating, moving once per batch, and log
            an estimate of the total time after the first batch.
        sample_key: the key of the sample in dict items (None for tensors and tuples).

    Raises:
        TypeError: ``attack`` is not an Attack, a transform is not callable, the
            base dataset has no length, or its items are none of the accepted
            structures, or have no float tensor sample.
        ValueError: unknown mode or ``failed``, ``p`` outside [0, 1], ``batch_size < 1``,
            an empty dataset, samples outside [0, 1], ``return_flag`` in pair
            mode (or on dicts that hold ``"is_uae"``), a supervised attack or a
            ``target_transform`` on unlabelled items, or a cache that does not
            match the dataset.

    Example:
        >>> from torch import nn
        >>> from torch.utils.data import TensorDataset
        >>> from uae_augment import GaussianNoise, Reconstruction
        >>> ae = nn.Sequential(nn.Flatten(), nn.Linear(4, 4), nn.Sigmoid(), nn.Unflatten(1, (1, 2, 2)))
        >>> base = TensorDataset(torch.rand(6, 1, 2, 2), torch.arange(6))
        >>> ds = UAEAugmented(base, GaussianNoise(Reconstruction(ae)), progress=False)
        >>> len(ds), ds.generated
        (12, False)
        >>> x, y, is_uae = UAEAugmented(base, ds.attack, return_flag=True, progress=False)[7]
        >>> x.shape, int(y), is_uae
        (torch.Size([1, 2, 2]), 1, True)
    """

    def __init__(
        self,
        dataset: Dataset,
        attack: Attack,
        *,
        mode: AugmentMode = "concat",
        p: float = 0.5,
        cache: str | os.PathLike[str] | None = None,
        batch_size: int = PRECOMPUTE_BATCH_SIZE,
        transform: Callable[[Any], Any] | None = None,
        target_transform: Callable[[Any], Any] | None = None,
        return_flag: bool = False,
        seed: int = 0,
        progress: bool = True,
        sample_key: str | None = None,
        failed: FailedPolicy = "keep",
    ) -> None:
        check_attack(attack, "UAEAugmented")
        if mode not in _MODES:
            raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")
        if failed not in _FAILED:
            raise ValueError(f"failed must be one of {_FAILED}, got {failed!r}")
        positive_int(batch_size, "batch_size")
        for name, function in (("transform", transform), ("target_transform", target_transform)):
            if function is not None and not callable(function):
                raise TypeError(f"{name} must be callable or None, got {type(function).__name__}")
        if return_flag and mode == "pair":
            raise ValueError("return_flag has no meaning in pair mode (every item holds both samples)")
        size = dataset_length(dataset, "augment")

        self.dataset = dataset
        self.attack = attack
        self.mode: AugmentMode = mode
        self.p = check_probability(p)
        self.batch_size = batch_size
        self.transform = transform
        self.target_transform = target_transform
        self.return_flag = bool(return_flag)
        self.seed = int(seed)
        self.progress = bool(progress)
        self.sample_key = sample_key
        self.failed: FailedPolicy = failed
        self.cache_path = Path(cache) if cache is not None else None
        self._size = size
        # Shared memory, so that set_epoch reaches persistent DataLoader workers too.
        self._epoch = torch.zeros((), dtype=torch.long).share_memory_()
        self._result: AttackResult | None = None
        self._cache: UAECache | None = None
        self._kept: list[int] | None = None

        self._check_first_item(self._item(0))
        if self.cache_path is not None:
            self._attach_cache()
        if failed == "drop":
            self.materialize()  # the length depends on which UAEs succeeded

    # ------------------------------------------------------------------ dataset protocol

    def __len__(self) -> int:
        if self.mode == "replace":
            return self._size
        uaes = self._size if self.failed != "drop" else len(self._kept_indices())
        return self._size + uaes if self.mode == "concat" else uaes

    def __getitem__(self, index: int) -> Any:
        return self.__getitems__([index])[0]

    def __getitems__(self, indices: Sequence[int]) -> list[Any]:
        """Batched fetching (used by ``DataLoader``): one UAE read for the whole batch."""
        base, is_uae = self._sources([self._position(i) for i in indices])
        items = [self._item(b) for b in base]
        wanted = [b for b, flag in zip(base, is_uae) if flag]
        uae_rows = iter(self._uae_rows(wanted)) if wanted else iter(())

        out: list[Any] = []
        for item, flag in zip(items, is_uae):
            x = item.sample
            uae = next(uae_rows).to(x.dtype) if flag else None
            if self.mode == "pair":
                sample: Any = (self._transform(x), self._transform(uae if uae is not None else x))
            else:
                sample = self._transform(uae if uae is not None else x)
            if self.target_transform is not None:
                item = dataclasses.replace(item, label=self.target_transform(item.label))
            out.append(item.with_sample(sample, flag if self.return_flag else None))
        return out

    # ------------------------------------------------------------------ epochs and generation

    @property
    def epoch(self) -> int:
        """The epoch mixed into the replace-mode draws."""
        return int(self._epoch)

    def set_epoch(self, epoch: int) -> None:
        """Sets the epoch of the replace-mode draws (call before iterating each epoch)."""
        self._epoch.fill_(operator.index(epoch))

    @property
    def generated(self) -> bool:
        """Whether the UAEs exist (in memory or in the attached cache)."""
        return self._result is not None or self._cache is not None

    def materialize(self) -> UAEAugmented:
        """Generates every UAE now, in the main process, and keeps them in memory.

        Call it before creating a DataLoader with workers. Does nothing when the
        UAEs already exist (or a cache is attached).

        Returns:
            ``self``, for chaining.

        Raises:
            RuntimeError: when called inside a DataLoader worker.
            TypeError, ValueError: a base sample or label the attack cannot take.
        """
        if self.generated:
            return self
        ensure_main_process("Generating the UAEs of UAEAugmented", _IN_WORKER_HINT)
        device = self.attack.device()
        logger.info(
            "generating %d UAEs with %r in batches of %d on %s",
            self._size,
            self.attack,
            self.batch_size,
            device,
        )
        parts: list[AttackResult] = []
        with Progress(
            self._size,
            "UAEAugmented",
            unit="sample",
            enabled=self.progress,
            preset=getattr(self.attack, "preset", None),
            log=logger,
        ) as bar:
            for start in range(0, self._size, self.batch_size):
                index = torch.arange(start, min(start + self.batch_size, self._size))
                x, y = self._read_batch(index)
                result = self.attack(x.to(device), None if y is None else y.to(device), index=index)
                parts.append(result.to("cpu"))
                bar.update(index.numel())
        self._result = AttackResult.cat(parts)
        logger.info("generated %d UAEs, ASR %.4f", self._size, self._result.asr)
        return self

    # ------------------------------------------------------------------ results

    @property
    def uae_success(self) -> torch.Tensor | None:
        """(N,) bool: whether the attack succeeded on base sample ``i`` (None before generation)."""
        flags = self._flags()
        return None if flags is None else flags[0]

    @property
    def uae_mi(self) -> torch.Tensor | None:
        """(N,) float: the attack's MI estimate of UAE ``i`` (NaN for attacks without MINE;
        None before generation)."""
        flags = self._flags()
        return None if flags is None else flags[1]

    @property
    def asr(self) -> float | None:
        """Attack success rate over the base dataset (None before generation)."""
        success = self.uae_success
        return None if success is None else float(success.float().mean())

    @property
    def attack_result(self) -> AttackResult | None:
        """The full in-memory :class:`AttackResult` (None before generation or with a cache)."""
        return self._result

    def __repr__(self) -> str:
        parts = [f"dataset={self.dataset!r}", f"mode={self.mode!r}"]
        if self.mode == "replace":
            parts += [f"p={self.p}", f"seed={self.seed}", f"epoch={self.epoch}"]
        parts += [f"samples={len(self)}", f"attack={self.attack!r}"]
        if self.cache_path is not None:
            parts.append(f"cache={str(self.cache_path)!r}")
        if self.failed != "keep":
            parts.append(f"failed={self.failed!r}")
        parts.append(f"generated={self.generated}")
        if self.generated:
            parts.append(f"asr={self.asr:.4f}")
        if self.transform is not None:
            parts.append(f"transform={self.transform!r}")
        if self.target_transform is not None:
            parts.append(f"target_transform={self.target_transform!r}")
        if self.return_flag:
            parts.append("return_flag=True")
        if self.sample_key is not None:
            parts.append(f"sample_key={self.sample_key!r}")
        return f"{type(self).__name__}({', '.join(parts)})"

    # ------------------------------------------------------------------ internals

    def _position(self, index: Any) -> int:
        position = operator.index(index)
        length = len(self)
        if position < 0:
            position += length
        if not 0 <= position < length:
            raise IndexError(f"index {index} is out of range for {type(self).__name__} of length {length}")
        return position

    def _sources(self, positions: list[int]) -> tuple[list[int], list[bool]]:
        """The base index of each position, and whether its item serves the UAE."""
        size = self._size
        if self.mode == "concat":
            base = [p if p < size else self._uae_base(p - size) for p in positions]
            is_uae = [p >= size for p in positions]
        elif self.mode == "replace":
            base = list(positions)
            is_uae = replacement_mask(self.p, self.seed, base, self.epoch).tolist()
        else:
            base = [self._uae_base(p) for p in positions]
            is_uae = [True] * len(base)
        if self.failed != "keep" and any(is_uae):
            success = self._success()
            is_uae = [flag and bool(success[b]) for b, flag in zip(base, is_uae)]
        return base, is_uae

    def _uae_base(self, position: int) -> int:
        """The base index of the ``position``-th UAE (after dropping failed ones)."""
        return self._kept_indices()[position] if self.failed == "drop" else position

    def _kept_indices(self) -> list[int]:
        if self._kept is None:
            self._kept = torch.nonzero(self._success()).flatten().tolist()
        return self._kept

    def _success(self) -> torch.Tensor:
        """(N,) bool success flags, generating the UAEs first when needed."""
        if not self.generated:
            self.materialize()
        flags = self._flags()
        assert flags is not None
        return flags[0]

    def _item(self, index: int) -> Item:
        return parse_item(self.dataset[index], index, sample_key=self.sample_key, source=_SOURCE)

    def _check_first_item(self, first: Item) -> None:
        """Checks item 0 against the attack and the options (labels, flag key, sample range)."""
        check_images(first.sample.unsqueeze(0), name="sample 0 of the base dataset")
        require_labels(self.attack, first.labelled, 0, _SOURCE)
        if self.target_transform is not None and not first.labelled:
            raise ValueError(
                f"target_transform needs labels, but item 0 of the base dataset is {first.describe()} without one"
            )
        if self.return_flag and first.mapping is not None and FLAG_KEY in first.mapping:
            raise ValueError(
                f"return_flag=True adds the key {FLAG_KEY!r} to dict items, but item 0 of the base"
                " dataset already has it"
            )

    def _transform(self, sample: Any) -> Any:
        return self.transform(sample) if self.transform is not None else sample

    def _uae_rows(self, base_indices: list[int]) -> torch.Tensor:
        if self._cache is not None:
            adversarial, _ = self._cache.rows(base_indices)
            return adversarial
        if self._result is None:
            self.materialize()
        assert self._result is not None
        return self._result.adversarial[base_indices]

    def _read_batch(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Stacks the base samples (and labels, when the attack needs them) at ``index``."""
        positions = index.tolist()
        items = [self._item(i) for i in positions]
        first, last = positions[0], positions[-1]
        wanted = [item.label for item in items] if self.attack.requires_labels else None
        x, labels = stack_batch([item.sample for item in items], wanted, positions, _SOURCE)
        check_images(x, name=f"samples {first}..{last} of the base dataset")
        if wanted is not None:
            require_labels(self.attack, labels is not None, first, _SOURCE)
        return x, labels

    def _attach_cache(self) -> None:
        ensure_main_process("Precomputing the UAE cache of UAEAugmented", _IN_WORKER_HINT)
        assert self.cache_path is not None
        path = precompute(
            self.dataset,
            self.attack,
            self.cache_path,
            batch_size=self.batch_size,
            progress=self.progress,
            sample_key=self.sample_key,
        )
        cache = UAECache(path)
        if len(cache) != self._size:
            raise ValueError(f"cache {str(path)!r} holds {len(cache)} rows but the dataset has {self._size} samples")
        self._cache = cache

    def _flags(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        if self._result is not None:
            return self._result.success, self._result.mi
        if self._cache is not None:
            return self._cache.success, self._cache.mi
        return None
