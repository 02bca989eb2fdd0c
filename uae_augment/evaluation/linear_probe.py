"""Linear evaluation of a frozen backbone: a linear layer trained on its representations.

The protocol of SimCLR papers (and lightly's ``LinearClassifier`` benchmark):
the backbone's features of the clean training images are computed once (eval
mode, no augmentation) and a linear layer is trained on them with Adam and a
cosine decay; the test accuracy of ``Sequential(backbone, linear)`` is the score.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .._model_state import model_device

__all__ = ["linear_evaluation", "representations"]

SEED_KEY = 7919
"""The linear layer's weights come from ``seed * SEED_KEY`` and the batch order from ``seed * SEED_KEY + 1``."""


@torch.no_grad()
def representations(
    backbone: nn.Module,
    x: torch.Tensor,
    device: torch.device | str | None = None,
    batch_size: int = 1024,
) -> torch.Tensor:
    """Backbone features (N, F) of inputs (N, ...), in eval mode, returned on the CPU.

    Args:
        backbone: the network whose outputs are the features (left in eval mode).
        x: inputs (N, ...), e.g. images (N, C, H, W) in [0, 1].
        device: where the backbone runs; default its current device.
        batch_size: rows per forward pass.

    Example:
        >>> backbone = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
        >>> representations(backbone, torch.rand(5, 1, 2, 2)).shape
        torch.Size([5, 3])
    """
    device = model_device(backbone) if device is None else torch.device(device)
    backbone.eval()
    return torch.cat([backbone(rows.to(device)).cpu() for rows in x.split(batch_size)])


def linear_evaluation(
    backbone: nn.Module,
    train: tuple[torch.Tensor, torch.Tensor],
    test: tuple[torch.Tensor, torch.Tensor],
    *,
    classes: int,
    epochs: int,
    lr: float,
    batch_size: int,
    seed: int,
    device: torch.device | str | None = None,
) -> tuple[nn.Module, dict[str, float]]:
    """Trains a linear layer on the frozen representations of the training inputs.

    Adam with a cosine decay over ``epochs`` epochs, batches of ``batch_size``
    rows in a seeded random order; the representations are computed once (no
    augmentation). The global random state is left untouched.

    Args:
        backbone: the frozen feature extractor (not trained; left in eval mode).
        train, test: (inputs (N, ...), labels (N,)) of the two splits.
        classes: outputs of the linear layer.
        epochs, lr, batch_size: the linear layer's training.
        seed: seed of its initial weights and of the batch order.
        device: where to run; default the backbone's device.

    Returns:
        (classifier, metrics): ``classifier = Sequential(backbone, linear)`` in eval
        mode and ``{"train_acc", "test_acc"}`` in percent.

    Example:
        >>> _ = torch.manual_seed(0)
        >>> backbone = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
        >>> x, y = torch.rand(20, 1, 2, 2), torch.arange(20) % 2
        >>> classifier, scores = linear_evaluation(backbone, (x, y), (x, y), classes=2, epochs=2, lr=0.1,
        ...                                        batch_size=8, seed=0)
        >>> sorted(scores), classifier(x).shape
        (['test_acc', 'train_acc'], torch.Size([20, 2]))
    """
    device = model_device(backbone) if device is None else torch.device(device)
    features_train = representations(backbone, train[0], device)
    features_test = representations(backbone, test[0], device)
    generator = torch.Generator().manual_seed(seed * SEED_KEY + 1)
    with torch.random.fork_rng():
        torch.manual_seed(seed * SEED_KEY)
        linear = nn.Linear(features_train.shape[1], classes)
    linear.to(device)
    optimizer = torch.optim.Adam(linear.parameters(), lr=lr)
    steps = epochs * math.ceil(len(features_train) / batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    features_train, labels = features_train.to(device), train[1].to(device)
    for _ in range(epochs):
        for rows in torch.randperm(len(features_train), generator=generator).split(batch_size):
            optimizer.zero_grad(set_to_none=True)
            nn.functional.cross_entropy(linear(features_train[rows]), labels[rows]).backward()
            optimizer.step()
            schedule.step()
    with torch.no_grad():
        train_acc = (linear(features_train).argmax(1) == labels).float().mean()
        test_acc = (linear(features_test.to(device)).argmax(1).cpu() == test[1]).float().mean()
    classifier = nn.Sequential(backbone, linear).eval()
    return classifier, {"train_acc": 100.0 * float(train_acc), "test_acc": 100.0 * float(test_acc)}
