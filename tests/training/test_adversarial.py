"""Adversarial-training steps against hand-written updates, on a classifier trained on real digits."""

from __future__ import annotations

import copy
import functools
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from uae_augment import FGSM, PGD
from uae_augment.training import (
    InputNormalization,
    clean_step,
    fgsm_augment_epoch,
    goodfellow_step,
    kurakin_step,
    madry_step,
    train_epoch,
)

from ..helpers import digits, digits_classifier

EPSILON = 0.15
STEPS = 15


def trained_copy() -> nn.Module:
    return copy.deepcopy(digits_classifier()).train()


def batch(rows: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = digits()
    return x[:rows], y[:rows]


def sgd(model: nn.Module, lr: float = 0.05) -> torch.optim.SGD:
    return torch.optim.SGD(model.parameters(), lr=lr)


def manual_update(model: nn.Module, loss_fn, lr: float = 0.05) -> nn.Module:
    """A copy of ``model`` after one plain SGD step on ``loss_fn(copy)``."""
    reference = copy.deepcopy(model)
    loss = loss_fn(reference)
    grads = torch.autograd.grad(loss, list(reference.parameters()))
    with torch.no_grad():
        for parameter, grad in zip(reference.parameters(), grads):
            parameter -= lr * grad
    return reference


def assert_same_parameters(a: nn.Module, b: nn.Module) -> None:
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        assert torch.allclose(p, q, atol=1e-6), name


def adversarial_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """CE on fresh FGSM examples crafted against the model as it is now."""
    x_adv = FGSM(model, epsilon=EPSILON)(x, y).adversarial
    with torch.no_grad():
        return float(F.cross_entropy(model.eval()(x_adv), y))


def test_goodfellow_step_is_the_mixed_objective():
    model, (x, y) = trained_copy(), batch()
    alpha = 0.3

    def objective(reference: nn.Module) -> torch.Tensor:
        x_adv = FGSM(reference, epsilon=EPSILON)(x, y).adversarial
        return alpha * F.cross_entropy(reference(x), y) + (1 - alpha) * F.cross_entropy(reference(x_adv), y)

    expected = manual_update(model, objective)
    values = goodfellow_step(model, sgd(model), x, y, FGSM(model, epsilon=EPSILON), alpha=alpha)
    assert_same_parameters(model, expected)
    assert values["loss"] == pytest.approx(alpha * values["clean_loss"] + (1 - alpha) * values["adversarial_loss"])
    assert values["adversarial_loss"] > values["clean_loss"]
    assert model.training


def test_kurakin_step_replaces_k_rows_and_weights_them_by_lambda():
    model, (x, y) = trained_copy(), batch(32)
    k, lam = 12, 0.3
    chosen = torch.randperm(32, generator=torch.Generator().manual_seed(7))[:k]

    def objective(reference: nn.Module) -> torch.Tensor:
        mixed = x.clone()
        mixed[chosen] = FGSM(reference, epsilon=EPSILON)(x[chosen], y[chosen]).adversarial
        losses = F.cross_entropy(reference(mixed), y, reduction="none")
        weights = torch.ones(32)
        weights[chosen] = lam
        return (weights * losses).sum() / ((32 - k) + lam * k)

    expected = manual_update(model, objective)
    values = kurakin_step(
        model,
        sgd(model),
        x,
        y,
        FGSM(model, epsilon=EPSILON),
        k=k,
        lam=lam,
        generator=torch.Generator().manual_seed(7),
    )
    assert_same_parameters(model, expected)
    assert values["adversarial_rows"] == k
    part = ((32 - k) * values["clean_loss"] + lam * k * values["adversarial_loss"]) / ((32 - k) + lam * k)
    assert values["loss"] == pytest.approx(part, rel=1e-5)


def test_kurakin_step_edge_cases_and_errors():
    model, (x, y) = trained_copy(), batch(10)
    attack = FGSM(model, epsilon=EPSILON)
    clean = kurakin_step(model, sgd(model), x, y, attack, k=0)
    assert math.isnan(clean["adversarial_loss"]) and clean["loss"] == pytest.approx(clean["clean_loss"])
    everything = kurakin_step(model, sgd(model), x, y, attack, k=10, lam=0.5)
    assert math.isnan(everything["clean_loss"])
    with pytest.raises(ValueError, match="k must lie"):
        kurakin_step(model, sgd(model), x, y, attack, k=11)
    with pytest.raises(ValueError, match="all zero"):
        kurakin_step(model, sgd(model), x, y, attack, k=10, lam=0.0)


def test_madry_step_trains_on_the_pgd_examples_only():
    model, (x, y) = trained_copy(), batch()
    index = torch.arange(100, 164)

    def objective(reference: nn.Module) -> torch.Tensor:
        pgd = PGD(reference, epsilon=EPSILON, steps=5, step_size=0.05, seed=2)
        return F.cross_entropy(reference(pgd(x, y, index=index).adversarial), y)

    expected = manual_update(model, objective)
    values = madry_step(
        model,
        sgd(model),
        x,
        y,
        PGD(model, epsilon=EPSILON, steps=5, step_size=0.05, seed=2),
        index=index,
    )
    assert_same_parameters(model, expected)
    assert values["loss"] == values["adversarial_loss"] and 0.0 <= values["attack_success"] <= 1.0


@pytest.mark.parametrize("method", ["goodfellow", "kurakin", "madry", "fgsm_augment"])
def test_adversarial_training_reduces_the_adversarial_loss_on_a_fixed_batch(method):
    model, (x, y) = trained_copy(), batch()
    before = adversarial_loss(model, x, y)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    fgsm = FGSM(model, epsilon=EPSILON)
    for epoch in range(STEPS):
        if method == "goodfellow":
            goodfellow_step(model, optimizer, x, y, fgsm)
        elif method == "kurakin":
            kurakin_step(model, optimizer, x, y, fgsm, generator=torch.Generator().manual_seed(epoch))
        elif method == "madry":
            madry_step(
                model,
                optimizer,
                x,
                y,
                PGD(model, epsilon=EPSILON, steps=3, step_size=0.07),
                index=torch.arange(64) + 64 * epoch,
            )
        else:
            fgsm_augment_epoch(model, optimizer, x, y, fgsm, batch_size=64, epoch=epoch)
    after = adversarial_loss(model, x, y)
    assert after < 0.65 * before, (before, after)  # measured: 0.36-0.55 x before


def test_clean_training_does_not_make_the_model_robust():
    """The control: the same budget of clean steps leaves the adversarial loss high."""
    model, (x, y) = trained_copy(), batch()
    before = adversarial_loss(model, x, y)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(STEPS):
        clean_step(model, optimizer, x, y)
    assert adversarial_loss(model, x, y) > 0.8 * before  # measured: 0.90 x before


def test_train_epoch_visits_every_row_once_in_a_seeded_order_with_epoch_indices():
    x, y = batch(23)
    seen: list[torch.Tensor] = []

    def recording_step(model, optimizer, xb, yb, *, index=None, scale=1.0):
        seen.append(index.clone())
        return {"loss": scale * float(len(xb)), "rows": float(len(xb))}

    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    metrics = train_epoch(model, sgd(model), x, y, recording_step, batch_size=5, seed=1, epoch=2, scale=2.0)
    visited = torch.cat(seen)
    assert sorted(visited.tolist()) == list(range(46, 69))  # epoch * N + row
    assert metrics["steps"] == 5 and metrics["rows"] == pytest.approx(23 / 5)
    assert metrics["loss"] == pytest.approx(2 * 23 / 5)
    first_order = visited.clone()
    seen.clear()
    train_epoch(model, sgd(model), x, y, recording_step, batch_size=5, seed=1, epoch=2)
    assert torch.equal(torch.cat(seen), first_order)
    seen.clear()
    train_epoch(model, sgd(model), x, y, recording_step, batch_size=5, seed=1, epoch=3)
    assert not torch.equal(torch.cat(seen) - 23, first_order)

    def diverging(model, optimizer, xb, yb, *, index=None):
        return {"loss": float("nan")}

    with pytest.raises(FloatingPointError, match="epoch 0"):
        train_epoch(model, sgd(model), x, y, diverging)


def test_fgsm_augment_epoch_trains_on_clean_and_fresh_adversarial_copies():
    model, (x, y) = trained_copy(), batch(50)
    fooled = FGSM(model, epsilon=EPSILON)(x, y).success.float().mean()
    metrics = fgsm_augment_epoch(
        model, sgd(model), x, y, FGSM(model, epsilon=EPSILON), batch_size=20, attack_batch_size=16
    )
    assert metrics["steps"] == 5  # 100 rows (50 clean + 50 adversarial) in batches of 20
    assert metrics["adversarial_success"] == pytest.approx(float(fooled))


def test_steps_refuse_an_attack_built_on_another_model():
    model, other, (x, y) = trained_copy(), trained_copy(), batch(8)
    stale = FGSM(other, epsilon=EPSILON)
    for step in (goodfellow_step, kurakin_step, madry_step):
        with pytest.raises(ValueError, match="built on another model"):
            step(model, sgd(model), x, y, stale)
    with pytest.raises(ValueError, match="built on another model"):
        fgsm_augment_epoch(model, sgd(model), x, y, stale)
    with pytest.raises(ValueError, match="alpha"):
        goodfellow_step(model, sgd(model), x, y, FGSM(model), alpha=1.5)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        clean_step(model, sgd(model), x * 2, y)


@functools.lru_cache(maxsize=1)
def _mean_image() -> torch.Tensor:
    return digits()[0].mean(dim=0)


def test_input_normalization_wraps_the_model_so_attacks_stay_in_pixel_space():
    inner = trained_copy()
    wrapped = InputNormalization(inner, _mean_image())
    x, y = batch(16)
    with torch.no_grad():
        assert torch.allclose(wrapped(x), inner(x - _mean_image()))
    result = FGSM(wrapped, epsilon=EPSILON)(x, y)  # the attack sees [0, 1] inputs
    assert float((result.adversarial - x).abs().max()) <= EPSILON + 1e-6
    assert float(result.adversarial.min()) >= 0.0 and float(result.adversarial.max()) <= 1.0
    # training through the wrapper with an attack on the wrapper
    values = goodfellow_step(wrapped, sgd(wrapped), x, y, FGSM(wrapped, epsilon=EPSILON))
    assert math.isfinite(values["loss"])
    assert "mean" in wrapped.state_dict() and wrapped.first_layer is None
    scaled = InputNormalization(inner, _mean_image(), std=0.5)
    assert scaled.lipschitz_constant() == pytest.approx(2.0)
    with pytest.raises(ValueError, match="std"):
        InputNormalization(inner, _mean_image(), std=0.0)
