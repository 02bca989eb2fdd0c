"""GPU readiness on CPU: the MinMax loop and the contrastive criterion issue no host-device sync.

A :class:`~tests.sync_ops.SyncCounter` records the aten calls that would stall a
CUDA stream (``.item()``, ``nonzero``, boolean indexing, ...). Counting a whole
attack at two step counts isolates the per-iteration cost: the set-up's
once-per-attack checks cancel, and the difference must be zero.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tests.helpers import (
    digits,
    digits_classifier,
    digits_conv_autoencoder,
    digits_dense_autoencoder,
)
from tests.sync_ops import count_syncs
from uae_augment import MINEUAE, ClassifierMargin, Contrastive, LpUAE, MinMaxAttack, Reconstruction
from uae_augment.views import SimCLRViews


def test_counter_sees_sync_causing_operations():
    x = torch.rand(6)
    counts = count_syncs(lambda: (x[x > 0.5], x.nonzero(), float(x.sum()), x.clone().__setitem__(x > 0.5, 0.0)))
    assert counts == {
        "aten.index[bool]": 1,
        "aten.nonzero": 1,
        "aten._local_scalar_dense": 1,
        "aten.index_put_[bool]": 1,
    }
    assert not count_syncs(lambda: (torch.where(x > 0.5, x, 0.0), x.masked_fill(x > 0.5, 0.0)))


def _attacks():
    ae, dense, classifier = (
        digits_conv_autoencoder(),
        digits_dense_autoencoder(),
        digits_classifier(),
    )
    return {
        "mine-uae fast": lambda steps: MINEUAE(Reconstruction(ae), preset="fast", steps=steps, mine_steps=2),
        "mine-uae paper": lambda steps: MINEUAE(
            Reconstruction(ae), preset="paper", steps=steps, mine_steps=2, statistics_hidden=16
        ),
        "mine-uae projections": lambda steps: MINEUAE(
            Reconstruction(dense),
            preset="fast",
            steps=steps,
            mine_steps=2,
            projections=16,
            projection_dim=8,
        ),
        "supervised minmax": lambda steps: MinMaxAttack(
            ClassifierMargin(classifier), steps=steps, statistics_hidden=16
        ),
        "lp-uae": lambda steps: LpUAE(Reconstruction(ae), steps=steps),
    }


@pytest.mark.parametrize("name", list(_attacks()))
def test_minmax_iterations_issue_no_sync(name):
    make = _attacks()[name]
    x, y = digits()
    args = (x[:5], y[:5]) if name.startswith("supervised") else (x[:5],)
    short, long = count_syncs(make(2), *args), count_syncs(make(5), *args)
    extra = {op: long[op] - short.get(op, 0) for op in long if long[op] != short.get(op, 0)}
    assert extra == {}, f"{name}: sync-causing calls per 3 extra iterations: {extra}"


def _contrastive(negatives: bool) -> Contrastive:
    torch.manual_seed(0)
    backbone = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    bank = torch.rand(5, 3, 8, 8) if negatives else None
    return Contrastive(backbone, nn.Linear(4, 8), SimCLRViews(size=8), n_views=4, negatives=bank)


@pytest.mark.parametrize("negatives", [False, True])
def test_contrastive_criterion_call_issues_no_sync(negatives):
    criterion = _contrastive(negatives)
    x = torch.rand(6, 3, 8, 8)
    reference = criterion.prepare(x, None, torch.arange(6))
    candidate = (x + 0.05 * torch.randn_like(x)).clamp(0, 1).requires_grad_(True)

    def call_and_backward() -> None:
        criterion(candidate, reference).sum().backward()

    assert count_syncs(call_and_backward) == {}
    assert candidate.grad is not None and candidate.grad.abs().sum() > 0


def test_contrastive_minmax_iterations_issue_no_sync():
    criterion, x = _contrastive(True), torch.rand(3, 3, 8, 8)
    short = count_syncs(MINEUAE(criterion, preset="fast", steps=2, mine_steps=1), x)
    long = count_syncs(MINEUAE(criterion, preset="fast", steps=4, mine_steps=1), x)
    assert long == short


def test_label_range_is_still_checked_once_per_labels():
    criterion = ClassifierMargin(digits_classifier())
    x, y = digits()
    with pytest.raises(ValueError, match="label 10 out of range for 10 classes"):
        criterion(x[:2], torch.tensor([3, 10]))
    with pytest.raises(ValueError, match="label -1 out of range"):
        criterion(x[:2], torch.tensor([-1, 2]))
    labels = y[:4]
    first = count_syncs(criterion, x[:4], labels)
    assert first and count_syncs(criterion, x[:4], labels) == {}
