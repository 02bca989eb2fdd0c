"""What you get: an in-memory torch Dataset of float samples and integer labels."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

Transform = Callable[[torch.Tensor], Any]


class ArrayDataset(Dataset):
    """An in-memory data set of float samples and integer labels (picklable for workers).

    Args:
        data: (N, ...) float32 samples; images (N, C, H, W), tabular rows (N, D).
            :func:`load_dataset` guarantees values in [0, 1].
        targets: (N,) int64 labels in [0, len(classes)).
        name: data-set name, e.g. ``"mnist"``.
        split: ``"train"``, ``"test"`` or ``"all"``.
        classes: class names; label ``k`` is ``classes[k]`` (torchvision convention).
        indices: (N,) int64 positions of the samples among the canonical rows
            (``x_train`` followed by ``x_test``); defaults to ``arange(N)``.
        source: the file the samples were read from (``None`` for embedded sets).
        transform: optional callable applied to each sample on access.
        target_transform: optional callable applied to each label on access.

    Raises:
        TypeError: if ``data`` is not a floating tensor or ``targets`` not an integer tensor.
        ValueError: if the shapes do not match or a label is out of range.

    Example:
        >>> ds = ArrayDataset(torch.zeros(4, 3), torch.tensor([0, 1, 1, 0]), name="toy",
        ...                   split="train", classes=("a", "b"))
        >>> len(ds), ds[1][1], ds.num_classes
        (4, 1, 2)
    """

    def __init__(
        self,
        data: torch.Tensor,
        targets: torch.Tensor,
        *,
        name: str,
        split: str,
        classes: Sequence[str],
        indices: torch.Tensor | None = None,
        source: Path | None = None,
        transform: Transform | None = None,
        target_transform: Callable[[int], Any] | None = None,
    ) -> None:
        if not isinstance(data, torch.Tensor) or not data.is_floating_point():
            raise TypeError(f"data must be a floating-point tensor, got {_describe(data)}")
        if not isinstance(targets, torch.Tensor) or targets.is_floating_point() or targets.dtype == torch.bool:
            raise TypeError(f"targets must be an integer tensor, got {_describe(targets)}")
        if data.dim() < 2 or targets.shape != (data.shape[0],):
            raise ValueError(
                f"data must be (N, ...) and targets (N,), got {tuple(data.shape)} and {tuple(targets.shape)}"
            )
        if targets.numel() and (int(targets.min()) < 0 or int(targets.max()) >= len(classes)):
            raise ValueError(
                f"labels must lie in [0, {len(classes)}), found [{int(targets.min())}, {int(targets.max())}]"
            )
        if indices is None:
            indices = torch.arange(data.shape[0])
        if indices.shape != (data.shape[0],):
            raise ValueError(f"indices must have shape ({data.shape[0]},), got {tuple(indices.shape)}")
        self.data = data
        self.targets = targets.long()
        self.indices = indices.long()
        self.name = name
        self.split = split
        self.classes = tuple(classes)
        self.source = source
        self.transform = transform
        self.target_transform = target_transform

    @property
    def num_classes(self) -> int:
        """Number of classes (``len(classes)``)."""
        return len(self.classes)

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """Shape of one sample, e.g. (1, 28, 28) or (617,)."""
        return tuple(self.data.shape[1:])

    def __len__(self) -> int:
        return self.data.shape[0]

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        sample: Any = self.data[index]
        label: Any = int(self.targets[index])
        if self.transform is not None:
            sample = self.transform(sample)
        if self.target_transform is not None:
            label = self.target_transform(label)
        return sample, label

    def __repr__(self) -> str:
        parts = [
            f"name={self.name!r}",
            f"split={self.split!r}",
            f"samples={len(self)}",
            f"sample_shape={self.sample_shape}",
            f"classes={self.num_classes}",
            f"dtype={self.data.dtype}",
        ]
        if self.source is not None:
            parts.append(f"source={str(self.source)!r}")
        if self.transform is not None:
            parts.append(f"transform={self.transform!r}")
        if self.target_transform is not None:
            parts.append(f"target_transform={self.target_transform!r}")
        return f"{type(self).__name__}({', '.join(parts)})"


def _describe(value: object) -> str:
    if isinstance(value, torch.Tensor):
        return f"tensor of dtype {value.dtype}"
    return type(value).__name__
