"""The one parser of the dataset item contract, and its error messages (private).

An item of a base dataset is one of:

* a bare sample ``x`` (unlabelled data, e.g. for unsupervised or contrastive learning);
* a tuple or list ``(x,)`` (unlabelled, e.g. ``TensorDataset(x)``), ``(x, y)`` or
  ``(x, y, extra...)``: element 1 is the label, the rest are extras carried along;
* a mapping with the sample under a named ``sample_key`` (e.g. ``{"image": x, "id": 7}``);
  it has no label, and its other entries are carried along.

``x`` is a float tensor (values in [0, 1], checked where the samples are stacked).
:func:`parse_item` splits an item into an :class:`Item` (sample, label or None,
structure); :meth:`Item.with_sample` rebuilds it with another sample.
:class:`~uae_augment.data.augmented.UAEAugmented`, :func:`~uae_augment.data.cache.precompute`,
the cache writer and :class:`~uae_augment.data.transforms.UAETransform` all parse items here.
"""

from __future__ import annotations

import dataclasses
import operator
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch
from torch.utils.data import Dataset

ItemKind = Literal["bare", "tuple", "dict"]
FLAG_KEY = "is_uae"
"""Key of the "is UAE" flag that ``return_flag=True`` adds to dict items."""

_SAMPLE_HINT = (
    " (give the base dataset a ToTensor-like transform, and put random augmentations in UAEAugmented(transform=...))"
)
_UNSUPERVISED = "MINEUAE with Reconstruction or Contrastive, LpUAE or GaussianNoise"


@dataclasses.dataclass(frozen=True)
class Item:
    """One parsed dataset item.

    Attributes:
        sample: the sample, a float tensor.
        label: the label (element 1 of a tuple item), or None when the item has none.
        kind: ``"bare"``, ``"tuple"`` or ``"dict"``.
        extras: the elements after the label of a tuple item (else ``()``).
        mapping: the whole mapping of a dict item (else None).
        sample_key: the key of the sample in a dict item (else None).
    """

    sample: torch.Tensor
    label: Any = None
    kind: ItemKind = "bare"
    extras: tuple[Any, ...] = ()
    mapping: Mapping[str, Any] | None = None
    sample_key: str | None = None

    @property
    def labelled(self) -> bool:
        """Whether the item has a label."""
        return self.label is not None

    def with_sample(self, sample: Any, flag: bool | None = None) -> Any:
        """The item with ``sample`` in place of its sample (same label, extras and entries).

        Args:
            sample: the new sample (any object: a tensor, or a ``(clean, uae)`` pair).
            flag: an optional bool "is UAE": appended to a tuple, paired with a bare
                sample (``(sample, flag)``), or stored under ``"is_uae"`` in a dict.

        Returns:
            A bare sample, a tuple ``(sample[, label], *extras[, flag])`` or a dict.
        """
        flag_part = () if flag is None else (flag,)
        if self.kind == "dict":
            assert self.mapping is not None and self.sample_key is not None
            rebuilt = {**self.mapping, self.sample_key: sample}
            if flag is not None:
                rebuilt[FLAG_KEY] = flag
            return rebuilt
        if self.kind == "bare":
            return (sample, *flag_part) if flag_part else sample
        label_part = (self.label,) if self.labelled else ()
        return (sample, *label_part, *self.extras, *flag_part)

    def describe(self) -> str:
        """Names the item's structure for error messages, e.g. ``"a bare sample"``."""
        if self.kind == "dict":
            return f"a dict with the sample under {self.sample_key!r}"
        if self.kind == "bare":
            return "a bare sample"
        return "a tuple (x, y, ...)" if self.labelled else "a tuple (x,)"


def where(index: int | None, source: str) -> str:
    """``"item 3 of the base dataset"``, or ``source`` itself for ``index=None`` (a batch)."""
    return source if index is None else f"item {index} of {source}"


def parse_item(item: Any, index: int | None, *, sample_key: str | None = None, source: str = "the dataset") -> Item:
    """Splits a dataset item into its sample, its label (or None) and its structure.

    Args:
        item: a bare float tensor, a tuple/list ``(x[, y, extra...])``, or a mapping
            holding the sample under ``sample_key``.
        index: the item's position (for error messages), or None for a whole batch.
        sample_key: the key of the sample in dict items; None for tensors and tuples.
        source: what holds the item, for error messages (``"the base dataset"``).

    Returns:
        The parsed :class:`Item`.

    Raises:
        TypeError: the item has none of the accepted structures, ``sample_key`` does
            not match it, or its sample is not a float tensor.
    """
    name = where(index, source)
    if sample_key is not None:
        if not isinstance(item, Mapping):
            raise TypeError(
                f"sample_key={sample_key!r} expects dicts, but {name} is a {type(item).__name__}"
                " (leave sample_key=None for bare samples and (x, y, ...) tuples)"
            )
        if sample_key not in item:
            raise TypeError(f"{name} has no sample key {sample_key!r}: its keys are {sorted(map(str, item))}")
        sample = _check_sample(item[sample_key], name)
        return Item(sample, kind="dict", mapping=item, sample_key=sample_key)
    if isinstance(item, torch.Tensor):
        return Item(_check_sample(item, name))
    if isinstance(item, (tuple, list)) and item:
        sample = _check_sample(item[0], name)
        label = item[1] if len(item) > 1 else None
        return Item(sample, label=label, kind="tuple", extras=tuple(item[2:]))
    if isinstance(item, Mapping):
        raise TypeError(f"{name} is a dict (keys {sorted(map(str, item))}): pass sample_key=... naming its sample")
    found = f"an empty {type(item).__name__}" if isinstance(item, (tuple, list)) else type(item).__name__
    raise TypeError(
        f"{name} must be a float tensor sample, a tuple (x, y, ...) or a dict with sample_key=..., got {found}"
    )


def _check_sample(x: Any, name: str) -> torch.Tensor:
    if isinstance(x, torch.Tensor) and x.is_floating_point():
        return x
    found = f"a tensor of dtype {x.dtype}" if isinstance(x, torch.Tensor) else type(x).__name__
    raise TypeError(f"the sample of {name} must be a float tensor with values in [0, 1]{_SAMPLE_HINT}, got {found}")


def integer_label(y: Any, index: int | None, source: str = "the dataset") -> int:
    """An integer class label from a Python/NumPy integer or a one-element integer tensor.

    Raises:
        TypeError: ``y`` is not an integer label.
    """
    if isinstance(y, torch.Tensor):
        if y.numel() == 1 and not (y.is_floating_point() or y.is_complex() or y.dtype == torch.bool):
            return int(y.item())
    else:
        try:
            return operator.index(y)
        except TypeError:
            pass
    raise TypeError(f"the label of {where(index, source)} must be an integer class label, got {y!r}")


def split_item(item: Any, index: int, source: str = "the dataset") -> tuple[torch.Tensor, int | None]:
    """(sample, integer label or None) of a dataset item (see :func:`parse_item`).

    Raises:
        TypeError: a malformed item, or a label that is not an integer.
    """
    parsed = parse_item(item, index, source=source)
    return parsed.sample, None if parsed.label is None else integer_label(parsed.label, index, source)


def batch_labels(labels: Sequence[Any], indices: Sequence[int], source: str = "the dataset") -> torch.Tensor | None:
    """The (B,) int64 labels of a batch of items, or None when none of them has a label.

    Args:
        labels: the label (or None) of each item.
        indices: the item positions (for error messages).
        source: what holds the items.

    Raises:
        ValueError: some items have labels and others do not.
        TypeError: a label is not an integer.
    """
    missing = [i for i, y in zip(indices, labels) if y is None]
    if len(missing) == len(labels):
        return None
    if missing:
        present = next(i for i, y in zip(indices, labels) if y is not None)
        raise ValueError(
            f"item {missing[0]} of {source} has no label but item {present} has one:"
            " the items of a dataset must all have labels or all have none"
        )
    return torch.tensor([integer_label(y, i, source) for y, i in zip(labels, indices)], dtype=torch.long)


def require_labels(attack: Any, labelled: bool, index: int | None, source: str = "the dataset") -> None:
    """Raises ValueError when ``attack`` needs labels and the data has none.

    Raises:
        ValueError: ``attack.requires_labels`` and ``labelled`` is False.
    """
    if getattr(attack, "requires_labels", False) and not labelled:
        raise ValueError(
            f"{type(attack).__name__} needs labels, but {where(index, source)} has none;"
            f" use (x, y) items, or an unsupervised attack ({_UNSUPERVISED})"
        )


def stack_batch(
    samples: Sequence[torch.Tensor],
    labels: Sequence[Any] | None,
    positions: Sequence[int],
    source: str = "the dataset",
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Stacks the samples of the items at ``positions`` into (B, ...), and their labels into (B,).

    Args:
        samples: the sample of each item (one shape for all).
        labels: the label (or None) of each item; None skips the labels (the caller needs none).
        positions: the item positions, in order (for error messages).
        source: what holds the items.

    Returns:
        ``(x, y)``: ``y`` is int64 (B,), or None when ``labels`` is None or no item has a label.

    Raises:
        ValueError: the samples have different shapes, or some items have labels and others not.
        TypeError: a label is not an integer.
    """
    shapes = {tuple(x.shape) for x in samples}
    if len(shapes) > 1:
        raise ValueError(
            f"samples {positions[0]}..{positions[-1]} of {source} have different shapes {sorted(shapes)};"
            " the attack needs samples of one shape"
        )
    x = torch.stack(list(samples))
    return x, None if labels is None else batch_labels(labels, positions, source)


def dataset_length(dataset: Dataset, action: str = "precompute") -> int:
    """The length of a non-empty map-style dataset.

    Args:
        dataset: the dataset.
        action: what needs the rows, for the empty-dataset message (``"precompute"``).

    Raises:
        TypeError: the dataset has no ``__len__``.
        ValueError: the dataset is empty.
    """
    try:
        length = len(dataset)  # type: ignore[arg-type]
    except TypeError as error:
        raise TypeError(f"dataset must be a map-style dataset with __len__, got {type(dataset).__name__}") from error
    if length == 0:
        raise ValueError(f"dataset is empty: there is nothing to {action}")
    return length


class KeyedSamples(Dataset):
    """The samples of a dataset of dict items, as bare tensors (item ``i`` is ``dataset[i][sample_key]``).

    Used by :func:`~uae_augment.data.cache.precompute`, which stores only samples
    (dict items carry no label).
    """

    def __init__(self, dataset: Dataset, sample_key: str):
        self.dataset = dataset
        self.sample_key = sample_key

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> torch.Tensor:
        return parse_item(self.dataset[index], index, sample_key=self.sample_key).sample
