"""Concrete selector and autoencoder: schedule, distinct selection, training (the retry rule: tests/training/test_concrete_fit.py)."""

from __future__ import annotations

import math

import pytest
import torch

from uae_augment import Reconstruction, fit
from uae_augment.models import ConcreteAutoencoder, ConcreteSelector
from uae_augment.models.concrete import distinct_assignment


@pytest.fixture(scope="module")
def rows(digits) -> torch.Tensor:
    """160 real digits as tabular rows (160, 64) in [0, 1]."""
    x, _ = digits
    return x[:160].reshape(160, 64)


def closed_form(step: int, total: int, start: float = 10.0, end: float = 0.1) -> float:
    return end if step >= total else start * (end / start) ** (step / total)


def test_temperature_schedule_is_the_exponential_closed_form():
    selector = ConcreteSelector(20, 4, start_temp=10.0, end_temp=0.1, total_steps=1000)
    for step in (0, 1, 7, 500, 999, 1000, 1200):
        assert selector.temperature(step) == pytest.approx(closed_form(step, 1000), rel=1e-12)
    # the authors' per-step decay alpha = (end/start)^(1/total), applied 999 times
    alpha = math.exp(math.log(0.1 / 10.0) / 1000)
    assert selector.temperature(999) == pytest.approx(10.0 * alpha**999, rel=1e-9)
    assert selector.temperature(1000) == 0.1
    for _ in range(3):
        selector.advance()
    assert int(selector.step) == 3 and selector.temperature() == closed_form(3, 1000)


def test_fit_anneals_once_per_optimiser_step(rows):
    torch.manual_seed(0)
    model = ConcreteAutoencoder((64,), k=6, hidden=(32, 32), epochs=3)
    history = fit(model, rows, progress=False)  # batch max(160 // 256, 16) = 16
    assert history.batch_size == 16 and history.steps == 30
    assert int(model.selector.total_steps) == 30 == int(model.selector.step)
    assert model.selector.temperature() == 0.1
    for epoch, metrics in enumerate(history.metrics):  # each step reports the T it trained at
        expected = sum(closed_form(s, 30) for s in range(10 * epoch, 10 * epoch + 10)) / 10
        assert metrics["temperature"] == pytest.approx(expected, rel=1e-9)
    # a second fit restarts the annealing over its own steps
    fit(model, rows, epochs=1, progress=False)
    assert int(model.selector.total_steps) == 10 == int(model.selector.step)


def test_a_fixed_schedule_is_kept_across_fits(rows):
    model = ConcreteAutoencoder((64,), k=6, hidden=(16,), total_steps=100, epochs=1)
    fit(model, rows, progress=False)
    fit(model, rows, progress=False)
    assert int(model.selector.total_steps) == 100 and int(model.selector.step) == 20


def test_eval_selection_is_distinct_and_equals_argmax_when_unique():
    selector = ConcreteSelector(10, 3, total_steps=5)
    with torch.no_grad():
        selector.logits.copy_(torch.full((3, 10), -5.0))
        selector.logits[0, 4] = 3.0
        selector.logits[1, 7] = 2.0
        selector.logits[2, 1] = 1.0
    assert selector.selected_features().tolist() == [4, 7, 1]
    assert selector.selected_features().tolist() == selector.logits.argmax(1).tolist()
    # rows 1 and 2 now both prefer feature 4; row 0 prefers it most
    with torch.no_grad():
        selector.logits[1, 4] = 2.5
        selector.logits[2, 4] = 2.9
    assert selector.logits.argmax(1).tolist() == [4, 4, 4]  # the duplicate-feature trap
    picked = selector.selected_features().tolist()
    assert picked[0] == 4 and len(set(picked)) == 3
    assert picked == [4, 7, 1]  # the next best free feature of rows 1 and 2
    x = torch.rand(5, 10)
    torch.testing.assert_close(selector.eval()(x), x[:, picked])


def test_distinct_assignment_is_greedy_by_probability():
    generator = torch.Generator().manual_seed(0)
    probabilities = torch.rand(6, 9, generator=generator).softmax(1)
    columns = distinct_assignment(probabilities)
    assert len(set(columns.tolist())) == 6
    remaining = probabilities.clone()
    expected = {}
    for _ in range(6):
        row, column = divmod(int(remaining.argmax()), 9)
        expected[row] = column
        remaining[row] = -1
        remaining[:, column] = -1
    assert columns.tolist() == [expected[r] for r in range(6)]


def test_training_samples_soft_selections(rows):
    selector = ConcreteSelector(64, 5, total_steps=10).train()
    out = selector(rows[:4])
    assert out.shape == (4, 5)
    assert not torch.equal(out, rows[:4, selector.selected_features()])
    assert 0 < selector.mean_max_probability() < 1


def test_concrete_autoencoder_learns_and_serves_as_reconstruction(rows, mnist):
    torch.manual_seed(0)
    model = ConcreteAutoencoder((64,), k=8, hidden=(64, 64), epochs=6)
    history = fit(model, rows, progress=False)
    assert history.losses[-1] < 0.8 * history.losses[0]
    out = model(rows[:10])
    assert out.shape == (10, 64) and out.min() >= 0 and out.max() <= 1
    assert len(set(model.selected_features().tolist())) == 8

    x, _ = mnist
    image_model = ConcreteAutoencoder((1, 28, 28), k=50).eval()
    criterion = Reconstruction(image_model)
    reference = criterion.prepare(x[:4], None, torch.arange(4))
    assert torch.equal(criterion(x[:4], reference), torch.zeros(4))
    assert image_model.first_layer is None
    assert [m.out_features for m in image_model.decoder if isinstance(m, torch.nn.Linear)] == [
        320,
        320,
        784,
    ]


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: ConcreteSelector(10, 11), ValueError, "at most"),
        (lambda: ConcreteSelector(10, 0), ValueError, "positive"),
        (lambda: ConcreteSelector(10, 2, start_temp=0.0), ValueError, "start_temp"),
        (lambda: ConcreteAutoencoder((64,), dropout=1.0), ValueError, "dropout"),
        (lambda: ConcreteAutoencoder((64,), epochs=0), ValueError, "epochs"),
        (lambda: ConcreteSelector(10, 2).train()(torch.rand(2, 10)), RuntimeError, "schedule"),
        (lambda: ConcreteSelector(10, 2)(torch.rand(2, 9)), ValueError, r"\(N, 10\)"),
    ],
)
def test_bad_arguments(call, error, match):
    with pytest.raises(error, match=match):
        call()
