"""The SimCLR recipe's training and test images: a named data set, or a torchvision ImageFolder tree."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch.utils.data import Dataset

import _protocol
from uae_augment.data import ArrayDataset


def load_data(args: argparse.Namespace) -> tuple[Dataset, Dataset, str]:
    """(train, test, label): ``--dataset`` through load_dataset, or ``--image-folder``."""
    if args.image_folder is None:
        train, test = _protocol.load_splits(
            args.dataset, args.data_root, train_rows=args.train_rows, test_rows=args.test_rows
        )
        return train, test, args.dataset
    train, test = image_folder_splits(args.image_folder, args.image_size)
    label = f"{args.image_folder.name} (image folder, {args.image_size}px)"
    return (
        _protocol.subset_rows(train, args.train_rows),
        _protocol.subset_rows(test, args.test_rows),
        label,
    )


def image_folder_splits(root: Path, size: int) -> tuple[ArrayDataset, ArrayDataset]:
    """A torchvision ImageFolder tree as in-memory (train, test) sets of (C, size, size) images in [0, 1].

    ``root/train`` and ``root/test`` when both exist, else every image of
    ``root`` split 80/20 by a fixed random permutation.

    Raises:
        FileNotFoundError: if ``root`` is not a folder.
    """
    from torchvision import datasets, transforms

    if not root.is_dir():
        raise FileNotFoundError(f"--image-folder {str(root)!r} is not a folder")
    to_tensor = transforms.Compose([transforms.Resize(size), transforms.CenterCrop(size), transforms.ToTensor()])
    if (root / "train").is_dir() and (root / "test").is_dir():
        parts = [datasets.ImageFolder(str(root / split), transform=to_tensor) for split in ("train", "test")]
        (x_train, y_train), (x_test, y_test) = (_protocol.stack(part) for part in parts)
        classes = parts[0].classes
    else:
        folder = datasets.ImageFolder(str(root), transform=to_tensor)
        x, y = _protocol.stack(folder)
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(_protocol.SUBSET_SEED))
        cut = int(round(0.8 * len(x)))
        (x_train, y_train), (x_test, y_test) = (
            (x[order[:cut]], y[order[:cut]]),
            (x[order[cut:]], y[order[cut:]]),
        )
        classes = folder.classes
    return tuple(  # type: ignore[return-value]
        ArrayDataset(x, y, name=root.name, split=split, classes=classes)
        for x, y, split in ((x_train, y_train, "train"), (x_test, y_test, "test"))
    )
