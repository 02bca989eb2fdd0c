"""Supervised ASR counts only the inputs the model classified correctly; the all-inputs figure stays available."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from tests.helpers import digits
from uae_augment import (
    FGSM,
    PGD,
    AttackResult,
    ClassifierMargin,
    GaussianNoise,
    MinMaxAttack,
    Reconstruction,
)


def poor_classifier() -> nn.Module:
    """An untrained linear classifier (fixed seed): it misclassifies most, but not all, inputs."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 10)).eval()


@pytest.fixture(scope="module")
def data() -> tuple[torch.Tensor, torch.Tensor]:
    x, y = digits()
    return x[:40], y[:40]


def predictions(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x).argmax(dim=1)


@pytest.mark.parametrize("batch_size", [None, 1, 7])
def test_gradient_attack_asr_leaves_out_misclassified_inputs(data, batch_size):
    x, y = data
    model = poor_classifier()
    wrong = predictions(model, x) != y
    assert 0 < int(wrong.sum()) < len(y)  # a deliberately poor classifier: most inputs already wrong
    result = FGSM(model, epsilon=0.02, batch_size=batch_size)(x, y)
    torch.testing.assert_close(result.clean_success, wrong, atol=0, rtol=0)
    assert result.success[wrong].all()  # counted as successes with (almost) no perturbation
    assert result.asr == pytest.approx(float(result.success[~wrong].float().mean()))
    assert result.asr_all == pytest.approx(float(result.success.float().mean()))
    assert result.asr < result.asr_all
    assert result.clean_accuracy == pytest.approx(float((~wrong).float().mean()))
    summary = result.summary()
    assert (summary["asr"], summary["asr_all"]) == (result.asr, result.asr_all)


def test_targeted_attacks_leave_out_inputs_already_at_their_target(data):
    x, y = data
    model = poor_classifier()
    targets = predictions(model, x).clone()
    targets[::2] = (targets[::2] + 1) % 10  # the odd rows already sit at their target
    result = PGD(model, epsilon=0.05, steps=3, targeted=True)(x, targets)
    torch.testing.assert_close(result.clean_success, predictions(model, x) == targets, atol=0, rtol=0)
    assert result.clean_success[1::2].all() and not result.clean_success[::2].any()
    assert result.asr == pytest.approx(float(result.success[::2].float().mean()))


def test_criterion_based_supervised_attacks_use_the_clean_criterion(data):
    x, y = data
    model = poor_classifier()
    result = MinMaxAttack(ClassifierMargin(model), preset="fast", steps=2)(x[:12], y[:12])
    torch.testing.assert_close(result.clean_success, predictions(model, x[:12]) != y[:12], atol=0, rtol=0)
    assert result.asr == pytest.approx(float(result.success[~result.clean_success].float().mean()))


def test_unsupervised_asr_is_over_all_inputs(data):
    x, _ = data
    ae = nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.Sigmoid(), nn.Unflatten(1, (1, 8, 8)))
    result = GaussianNoise(Reconstruction(ae), sigma=0.05)(x)
    assert result.clean_success is None and result.clean_accuracy is None
    assert result.asr == result.asr_all


def test_asr_is_nan_when_every_input_already_succeeded():
    result = AttackResult(
        adversarial=torch.zeros(3, 1),
        success=torch.ones(3, dtype=torch.bool),
        mi=torch.zeros(3),
        criterion=torch.zeros(3),
        clean_success=torch.ones(3, dtype=torch.bool),
    )
    assert math.isnan(result.asr) and result.asr_all == 1.0
    merged = AttackResult.cat([result, result[:1]])
    assert merged.clean_success.tolist() == [True] * 4
