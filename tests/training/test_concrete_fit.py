"""fit_concrete: the concrete autoencoder's retry rule, on real digits."""

from __future__ import annotations

import pytest
import torch

from uae_augment.models import ConcreteAutoencoder
from uae_augment.training import ConcreteFit, fit_concrete


@pytest.fixture(scope="module")
def rows(digits) -> torch.Tensor:
    """160 real digits as tabular rows (160, 64) in [0, 1]."""
    x, _ = digits
    return x[:160].reshape(160, 64)


def test_retry_rule_doubles_epochs_up_to_the_limit(rows):
    torch.manual_seed(0)
    model = ConcreteAutoencoder((64,), k=4, hidden=(16,), epochs=1)
    result = fit_concrete(model, rows[:64], tries=3, progress=False)
    assert isinstance(result, ConcreteFit)
    assert result.epochs == [1, 2, 4] and result.tries == 3 and not result.converged
    assert all(p < 0.998 for p in result.mean_max_probabilities)
    assert result.history.steps == 4 * 4  # the last try: 4 epochs of 64 / 16 batches
    assert result.model is not model and int(model.selector.step) == 0  # the input stays untrained


def test_retry_rule_stops_at_the_first_converged_try(rows):
    built = []

    def factory() -> ConcreteAutoencoder:
        built.append(ConcreteAutoencoder((64,), k=4, hidden=(16,), epochs=1))
        return built[-1]

    result = fit_concrete(factory, rows[:64], target=0.01, progress=False)
    assert result.epochs == [1] and result.converged and len(built) == 1
    assert result.mean_max_probabilities == [built[0].mean_max_probability()]


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: fit_concrete("model", torch.rand(4, 64)), TypeError, "factory"),
        (
            lambda: fit_concrete(ConcreteAutoencoder((64,)), torch.rand(4, 64), tries=0),
            ValueError,
            "tries",
        ),
        (
            lambda: fit_concrete(lambda: 3, torch.rand(4, 64), progress=False),
            TypeError,
            "must return",
        ),
    ],
)
def test_bad_arguments(call, error, match):
    with pytest.raises(error, match=match):
        call()
