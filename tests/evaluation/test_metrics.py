"""uae_augment.evaluation.metrics against independent recomputations on real digits and real attacks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from uae_augment import FGSM
from uae_augment.evaluation import (
    ConfidenceTable,
    accuracy,
    confidence_table,
    correctly_classified,
    distortion,
    predict,
    reconstruction_error,
)

from ..helpers import digits, digits_classifier, digits_dense_autoencoder
from .helpers import digits_mlp


def test_confidence_table_matches_a_numpy_recomputation():
    model = digits_classifier()
    x, y = digits()
    x, y = x[:400], y[:400]
    fooled = FGSM(model, epsilon=0.15)(x, y).adversarial
    for inputs in (x, fooled):
        with torch.no_grad():
            logits = model(inputs).double().numpy()
        shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
        probabilities = shifted / shifted.sum(axis=1, keepdims=True)
        predicted, confidence = probabilities.argmax(axis=1), probabilities.max(axis=1)
        hit = predicted == y.numpy()
        table = confidence_table(model, inputs, y, batch_size=64)
        assert table.n == 400
        assert table.correct == pytest.approx(hit.mean(), abs=1e-9)
        assert table.error == pytest.approx(1 - hit.mean(), abs=1e-9)
        assert table.confidence == pytest.approx(confidence.mean(), abs=1e-5)
        assert table.confidence_correct == pytest.approx(confidence[hit].mean(), abs=1e-5)
        assert table.confidence_error == pytest.approx(confidence[~hit].mean(), abs=1e-5)
        # the reference's columns are consistent: overall = mix of correct and wrong
        mixed = table.correct * table.confidence_correct + table.error * table.confidence_error
        assert table.confidence == pytest.approx(mixed, abs=1e-5)
        assert accuracy(model, inputs, y) == pytest.approx(table.correct)
    clean, attacked = confidence_table(model, x, y), confidence_table(model, fooled, y)
    assert clean.correct > 0.9 and attacked.correct < clean.correct - 0.3


def test_confidence_table_without_errors_reports_nan_and_as_dict():
    logits = torch.tensor([[5.0, 0.0], [0.0, 5.0]])
    table = ConfidenceTable.from_logits(logits, torch.tensor([0, 1]))
    assert table.correct == 1.0 and math.isnan(table.confidence_error)
    assert table.confidence_correct == pytest.approx(1 / (1 + math.exp(-5)))
    assert set(table.as_dict()) == {
        "n",
        "correct",
        "error",
        "confidence",
        "confidence_correct",
        "confidence_error",
    }


def test_predict_restores_modes_and_checks_inputs():
    model = nn.Sequential(nn.Flatten(), nn.Dropout(0.5), nn.Linear(4, 2)).train()
    x = torch.rand(16, 1, 2, 2)
    first, second = predict(model, x, batch_size=5), predict(model, x)
    assert torch.allclose(first, second, atol=1e-6)  # eval mode: no dropout; chunking does not matter
    assert model.training and all(p.requires_grad for p in model.parameters())
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        predict(model, x * 3)
    with pytest.raises(ValueError, match="batch_size"):
        predict(model, x, batch_size=0)
    with pytest.raises(ValueError, match="out of range"):
        accuracy(model, x, torch.full((16,), 7))


def test_correctly_classified_keeps_rows_every_model_gets_right_in_a_seeded_order():
    conv, mlp = digits_classifier(), digits_mlp()
    x, y = digits()
    with torch.no_grad():
        both = ((conv(x).argmax(1) == y) & (mlp(x).argmax(1) == y)).nonzero().flatten()
    assert torch.equal(correctly_classified({"conv": conv, "mlp": mlp}, x, y), both)
    some = correctly_classified([conv, mlp], x, y, count=50, seed=3)
    assert len(some) == 50 and torch.equal(some, some.sort().values)
    assert set(some.tolist()) <= set(both.tolist())
    assert not torch.equal(some, both[:50])  # a random choice, not a prefix (digits are not shuffled by class)
    assert torch.equal(some, correctly_classified([conv, mlp], x, y, count=50, seed=3))
    assert len(correctly_classified(conv, x, y)) >= len(both)
    with pytest.raises(ValueError, match="at least one model"):
        correctly_classified([], x, y)


def test_reconstruction_error_is_the_per_pixel_mse():
    model = digits_dense_autoencoder()
    x, _ = digits()
    with torch.no_grad():
        expected = ((model(x) - x) ** 2).mean(dim=(1, 2, 3))
    per_sample = reconstruction_error(model, x, reduction="none", batch_size=100)
    assert torch.allclose(per_sample, expected, atol=1e-7)
    assert reconstruction_error(model, x) == pytest.approx(float(expected.mean()), rel=1e-5)
    assert 0 < float(expected.mean()) < 0.1
    with pytest.raises(ValueError, match="reconstructions of shape"):
        reconstruction_error(nn.Flatten(), x)
    with pytest.raises(ValueError, match="reduction"):
        reconstruction_error(model, x, reduction="sum")


def test_distortion_matches_the_definitions():
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(5, 1, 3, 3, generator=generator)
    x_adv = torch.rand(5, 1, 3, 3, generator=generator)
    sizes = distortion(x, x_adv)
    delta = (x_adv - x).reshape(5, 9).numpy().astype(np.float64)
    assert np.allclose(sizes["l2"].numpy(), np.sqrt((delta**2).sum(axis=1)), atol=1e-6)
    assert np.allclose(sizes["linf"].numpy(), np.abs(delta).max(axis=1), atol=1e-7)
    assert np.allclose(sizes["rms"].numpy(), np.sqrt((delta**2).mean(axis=1)), atol=1e-6)
    with pytest.raises(ValueError, match="same shape"):
        distortion(x, x[:2])
