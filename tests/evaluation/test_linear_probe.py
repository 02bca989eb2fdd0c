"""uae_augment.evaluation.linear_probe on real digits, and the package's re-exports."""

from __future__ import annotations

import importlib

import pytest
import torch
from torch import nn

from uae_augment.evaluation import linear_evaluation, representations

from ..helpers import digits


def test_representations_are_the_eval_mode_outputs_in_any_batch_size():
    x, _ = digits()
    torch.manual_seed(0)
    backbone = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.BatchNorm1d(16), nn.Dropout(0.5)).train()
    features = representations(backbone, x[:101], batch_size=13)
    assert not backbone.training and features.shape == (101, 16) and features.device.type == "cpu"
    with torch.no_grad():
        expected = backbone(x[:101])
    torch.testing.assert_close(features, expected)
    torch.testing.assert_close(representations(backbone, x[:101], "cpu", batch_size=1), expected)


def test_linear_evaluation_is_seeded_leaves_the_global_rng_alone_and_learns_real_digits():
    x, y = digits()
    train, test = (x[:1000], y[:1000]), (x[1000:], y[1000:])
    backbone = nn.Flatten()
    state = torch.random.get_rng_state()
    classifier, scores = linear_evaluation(
        backbone, train, test, classes=10, epochs=20, lr=0.01, batch_size=100, seed=3
    )
    assert torch.equal(torch.random.get_rng_state(), state)
    again, scores_again = linear_evaluation(
        backbone, train, test, classes=10, epochs=20, lr=0.01, batch_size=100, seed=3
    )
    assert scores == scores_again and torch.equal(classifier[1].weight, again[1].weight)
    other, _ = linear_evaluation(backbone, train, test, classes=10, epochs=20, lr=0.01, batch_size=100, seed=4)
    assert not torch.equal(classifier[1].weight, other[1].weight)
    # pixels of 8x8 digits are nearly linearly separable
    assert scores["train_acc"] > 90 and scores["test_acc"] > 85
    with torch.no_grad():
        accuracy = (classifier(test[0]).argmax(1) == test[1]).float().mean()
    assert scores["test_acc"] == pytest.approx(100.0 * float(accuracy))
    assert not classifier.training


def test_every_public_evaluation_name_is_importable_from_the_package():
    evaluation = importlib.import_module("uae_augment.evaluation")
    modules = ("metrics", "transfer", "lipschitz", "linear_probe")
    owners = {
        name: module
        for module in modules
        for name in importlib.import_module(f"uae_augment.evaluation.{module}").__all__
    }
    assert sorted(owners) == sorted(evaluation.__all__)
    for name, module in owners.items():
        assert getattr(evaluation, name) is getattr(importlib.import_module(f"uae_augment.evaluation.{module}"), name)
