"""MinMax / MINE-UAE / Penalty / L2-UAE / Gaussian noise: correctness against a plain reference."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from tests.helpers import (
    digits,
    digits_classifier,
    digits_conv_autoencoder,
    digits_dense_autoencoder,
)
from tests.reference import reference_minmax
from uae_augment import (
    MINEUAE,
    BySampler,
    ClassifierMargin,
    GaussianNoise,
    LpUAE,
    MinMaxAttack,
    PenaltyAttack,
    Reconstruction,
)
from uae_augment._model_state import frozen
from uae_augment.attacks.minmax import resolve_preset


def _assert_rows_match_reference(attack, x, result, *, supervised, labels=None, start=0, **settings):
    sampler = attack.sampler_for(tuple(x.shape[1:]))
    with frozen(attack.models()):  # the reference, like the engine, runs on a frozen model
        _compare_rows(attack, x, result, sampler, supervised, labels, start, settings)


def _compare_rows(attack, x, result, sampler, supervised, labels, start, settings):
    for row in range(len(x)):
        expected = reference_minmax(
            x[row],
            attack.criterion,
            sampler,
            supervised=supervised,
            label=None if labels is None else labels[row],
            index=start + row,
            seed=attack.seed,
            **settings,
        )
        torch.testing.assert_close(result.adversarial[row], expected["adversarial"], atol=1e-5, rtol=0)
        assert bool(result.success[row]) == bool(expected["success"])
        torch.testing.assert_close(result.mi[row], expected["mi"], atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(result.criterion[row], expected["criterion"], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("batch", [1, 4])
def test_unsupervised_feature_maps_match_reference(batch):
    x = digits()[0][:batch]
    settings = dict(steps=6, mine_steps=3, hidden=64)
    # The paper's MINE lr: at lr ~1e-3 Adam's sign-like first steps amplify float
    # rounding between the two implementations into visible trajectory differences.
    attack = MINEUAE(
        Reconstruction(digits_conv_autoencoder()),
        preset="paper",
        steps=6,
        mine_steps=3,
        statistics_hidden=64,
        seed=5,
    )
    result = attack(x)
    _assert_rows_match_reference(attack, x, result, supervised=False, **settings)


def test_unsupervised_random_projection_matches_reference():
    x = digits()[0][10:13]
    attack = MINEUAE(
        Reconstruction(digits_dense_autoencoder()),
        preset="fast",
        steps=5,
        mine_steps=2,
        projections=40,
        projection_dim=16,
        seed=2,
    )
    assert attack.sampler_for((1, 8, 8)).mode == "random_projection"
    result = attack(x, index=torch.arange(10, 13))
    _assert_rows_match_reference(
        attack,
        x,
        result,
        supervised=False,
        start=10,
        steps=5,
        mine_steps=2,
        hidden=None,
        mine_lr=5e-4,
    )


def test_supervised_matches_reference():
    x, y = digits()
    attack = MinMaxAttack(ClassifierMargin(digits_classifier()), steps=12, alpha=0.05, statistics_hidden=32)
    result = attack(x[:3], y[:3])
    _assert_rows_match_reference(
        attack,
        x[:3],
        result,
        supervised=True,
        labels=y[:3],
        steps=12,
        mine_steps=1,
        alpha=0.05,
        hidden=32,
    )


def test_batch_composition_chunking_and_determinism():
    x = digits()[0][:6]
    criterion = Reconstruction(digits_conv_autoencoder())
    attack = MINEUAE(criterion, preset="fast", steps=5, seed=1)
    whole = attack(x)
    part = attack(x[3:6], index=torch.arange(3, 6))
    assert torch.equal(part.adversarial, whole.adversarial[3:6]) and torch.equal(part.mi, whole.mi[3:6])
    chunked = MINEUAE(criterion, preset="fast", steps=5, seed=1, batch_size=2)(x)
    assert torch.equal(chunked.adversarial, whole.adversarial) and torch.equal(chunked.mi, whole.mi)
    again = attack(x)
    assert torch.equal(again.adversarial, whole.adversarial)
    other_seed = MINEUAE(criterion, preset="fast", steps=5, seed=2)(x)
    assert not torch.allclose(other_seed.adversarial, whole.adversarial)


def test_output_constraints_and_success_flags():
    x = digits()[0][:16]
    model = digits_conv_autoencoder()
    criterion = Reconstruction(model)
    for epsilon in (0.02, 1.0):
        result = MINEUAE(criterion, preset="strong", steps=8, epsilon=epsilon, delta_init="uniform")(x)
        assert (result.adversarial >= 0).all() and (result.adversarial <= 1).all()
        assert (result.adversarial - x).abs().max() <= epsilon + 1e-6
        with torch.no_grad():
            f = criterion(result.adversarial, criterion.prepare(x, None, torch.arange(16)))
        torch.testing.assert_close(result.criterion, f, atol=1e-5, rtol=1e-4)
        assert torch.equal(result.success, (f <= 0) & (result.mi > 0))


def test_supervised_minmax_reaches_high_asr_on_a_trained_classifier():
    x, y = digits()
    model = digits_classifier()
    with torch.no_grad():
        correct = model(x).argmax(1) == y
    x, y = x[correct][:40], y[correct][:40]
    result = MinMaxAttack(ClassifierMargin(model), preset="fast", steps=300, epsilon=1.0)(x, y)
    assert result.asr >= 0.9, result.asr
    with torch.no_grad():
        predicted = model(result.adversarial).argmax(1)
    assert torch.equal(result.success, predicted != y)
    assert (result.mi[result.success] > float("-inf")).all()


def test_model_is_left_untouched():
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.Conv2d(4, 1, 3, padding=1),
        nn.Sigmoid(),
    )
    model.train()
    model[3].weight.requires_grad_(False)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    flags = [p.requires_grad for p in model.parameters()]
    MINEUAE(Reconstruction(model), preset="fast", steps=3)(digits()[0][:2])
    assert model.training and all(m.training for m in model.modules())
    assert [p.requires_grad for p in model.parameters()] == flags
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key])
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize(
    "bad,error,message",
    [
        (torch.full((2, 1, 8, 8), float("nan")), ValueError, "NaN"),
        (torch.full((2, 1, 8, 8), float("inf")), ValueError, "NaN/Inf"),
        (torch.full((2, 1, 8, 8), 1.5), ValueError, r"\[0, 1\]"),
        (torch.zeros(0, 1, 8, 8), ValueError, "empty"),
        (torch.zeros(4), ValueError, "rank"),
        (torch.zeros(2, 1, 8, 8, dtype=torch.uint8), TypeError, "floating-point"),
        ([[0.0]], TypeError, "torch.Tensor"),
    ],
)
def test_bad_inputs_raise(bad, error, message):
    attack = MINEUAE(Reconstruction(digits_conv_autoencoder()), preset="fast", steps=2)
    with pytest.raises(error, match=message):
        attack(bad)


def test_bad_labels_and_index_raise():
    x, y = digits()
    attack = MinMaxAttack(ClassifierMargin(digits_classifier()), preset="fast", steps=2)
    with pytest.raises(ValueError, match="labels y are required"):
        attack(x[:2])
    with pytest.raises(ValueError, match="shape"):
        attack(x[:2], y[:3])
    with pytest.raises(TypeError, match="integer"):
        attack(x[:2], y[:2].float())
    with pytest.raises(ValueError, match="index must have 2"):
        attack(x[:2], y[:2], index=torch.arange(3))
    with pytest.raises(ValueError, match="repeated"):
        attack(x[:2], y[:2], index=torch.tensor([1, 1]))
    with pytest.raises(ValueError, match="labelled criterion"):
        MinMaxAttack(Reconstruction(digits_conv_autoencoder()), mode="supervised")
    with pytest.raises(ValueError, match="unknown preset"):
        MINEUAE(Reconstruction(digits_conv_autoencoder()), preset="turbo")
    with pytest.raises(ValueError, match="alpha must be > 0"):
        MINEUAE(Reconstruction(digits_conv_autoencoder()), alpha=-1.0)


def test_presets_and_overrides_and_config():
    assert resolve_preset("paper", "unsupervised", {})["steps"] == 40
    assert resolve_preset("paper", "supervised", {})["steps"] == 1000
    assert resolve_preset("paper", "unsupervised", {})["mine_steps"] == 20
    assert resolve_preset("fast", "unsupervised", {"mine_steps": 7})["mine_steps"] == 7
    attack = MINEUAE(Reconstruction(digits_conv_autoencoder()), preset="fast", alpha=0.2, statistics_hidden=64)
    assert attack.settings.alpha == 0.2 and attack.settings.statistics_hidden == 64 and attack.settings.steps == 40
    config = attack.config()
    assert json.loads(json.dumps(config)) == config
    assert config["attack"] == "MINEUAE" and config["preset"] == "fast" and config["criterion"] == "Reconstruction"
    assert "MINEUAE(" in repr(attack)


def test_default_preset_is_fast_unsupervised_and_the_release_supervised():
    conv = Reconstruction(digits_conv_autoencoder())
    for attack in (MINEUAE(conv), MinMaxAttack(conv, mode="unsupervised"), LpUAE(conv)):
        assert attack.preset == "fast" and attack.config()["preset"] == "fast"
        assert attack.settings.steps == 40 and attack.settings.statistics_hidden is None
    assert MINEUAE(conv).settings.mine_steps == 5
    supervised = MinMaxAttack(ClassifierMargin(digits_classifier()))
    assert (
        supervised.preset == "paper"
        and supervised.settings.steps == 1000
        and supervised.settings.statistics_hidden == 512
    )
    paper = MINEUAE(conv, preset="paper")  # still available and the release's values
    assert (
        paper.settings.steps,
        paper.settings.mine_steps,
        paper.settings.statistics_hidden,
        paper.settings.mine_lr,
    ) == (
        40,
        20,
        512,
        1.5e-5,
    )


def test_long_jobs_are_announced_with_an_estimate(caplog):
    from uae_augment.attacks.minmax import RANDOM_PROJECTION_COST, estimate_cpu_seconds
    from uae_augment.cli import warn_if_long

    conv = Reconstruction(digits_conv_autoencoder())
    paper, fast = MINEUAE(conv, preset="paper"), MINEUAE(conv)
    assert estimate_cpu_seconds(paper, 8, (1, 28, 28)) == pytest.approx(8 * 55.0)
    assert estimate_cpu_seconds(fast, 8, (1, 28, 28)) == pytest.approx(8 * 0.22)
    assert estimate_cpu_seconds(MINEUAE(conv, preset="paper", steps=20), 8, (1, 28, 28)) == pytest.approx(4 * 55.0)
    dense = MINEUAE(Reconstruction(digits_dense_autoencoder()))  # random projections cost more
    assert estimate_cpu_seconds(dense, 8, (1, 28, 28)) == pytest.approx(8 * 0.22 * RANDOM_PROJECTION_COST)
    with caplog.at_level("WARNING", logger="uae_augment.cli"):
        assert warn_if_long(fast, 1000, (1, 28, 28)) == pytest.approx(220.0)
        assert not caplog.records
        assert warn_if_long(paper, 60000, (1, 28, 28)) == pytest.approx(60000 * 55.0)
    assert "may take about 916.7 hours" in caplog.text and "'paper'" in caplog.text
    assert "--preset fast (about 250x less by the same estimate)" in caplog.text  # 55.0 / 0.22
    caplog.clear()
    with caplog.at_level("WARNING", logger="uae_augment.cli"):
        warn_if_long(fast, 60000, (1, 28, 28))
    assert "3.7 hours" in caplog.text and "--preset fast" not in caplog.text  # already the fast preset
    assert warn_if_long(LpUAE(conv), 10**6, (1, 28, 28)) is None


def test_fast_preset_learning_rate_follows_the_sampler_mode():
    preset = resolve_preset("fast", "unsupervised", {})["mine_lr"]
    assert preset == BySampler(feature_maps=1.5e-5, random_projection=5e-4)
    dense = MINEUAE(Reconstruction(digits_dense_autoencoder()), preset="fast")
    x = digits()[0][:4]
    assert dense.similarity(x, torch.arange(4)).mine.lr == 5e-4
    conv = MINEUAE(Reconstruction(digits_conv_autoencoder()), preset="fast")
    assert conv.similarity(x, torch.arange(4)).mine.lr == 1.5e-5
    assert (
        MINEUAE(Reconstruction(digits_dense_autoencoder()), preset="fast", mine_lr=1e-3)
        .similarity(x, torch.arange(4))
        .mine.lr
        == 1e-3
    )
    assert conv.config()["mine_lr"] == {"feature_maps": 1.5e-5, "random_projection": 5e-4}
    with pytest.raises(ValueError, match="mine_lr must be > 0"):
        MINEUAE(Reconstruction(digits_dense_autoencoder()), mine_lr=BySampler(1e-5, 0.0))


def test_fast_preset_succeeds_on_a_dense_model():
    """Random-projection MINE: the fast preset's DV estimate must rise above 0 within the attack."""
    x = digits()[0][:16]
    result = MINEUAE(Reconstruction(digits_dense_autoencoder()), preset="fast", record_history=True)(x)
    assert result.mi_trace[:, -1].mean() > result.mi_trace[:, 0].mean() + 0.5
    assert result.success[result.criterion == 0].float().mean() > 0.9


def test_history_and_bookkeeping_fields():
    x = digits()[0][:3]
    result = MINEUAE(Reconstruction(digits_conv_autoencoder()), preset="fast", steps=7, record_history=True)(x)
    assert result.mi_trace.shape == (3, 7) and result.criterion_trace.shape == (3, 7)
    for row in range(3):
        if result.success[row]:
            chosen = result.best_iteration[row]
            ok = (result.criterion_trace[row] <= 0) & (result.mi_trace[row] > 0)
            assert ok[chosen] and result.mi_trace[row, chosen] == result.mi_trace[row][ok].min()
            assert result.first_success[row] == ok.nonzero()[0, 0]
    assert (result.moved_linf >= 0).all() and (result.final_c >= 0).all()


def test_penalty_attack_search_and_result():
    x, y = digits()
    model = digits_classifier()
    attack = PenaltyAttack(
        ClassifierMargin(model),
        search_steps=3,
        steps=40,
        mine_steps=1,
        preset="fast",
        record_history=True,
    )
    result = attack(x[:8], y[:8])
    assert result.mi_trace.shape == (8, 120)
    with torch.no_grad():
        predicted = model(result.adversarial).argmax(1)
    assert torch.equal(result.success, predicted != y[:8])
    part = attack(x[4:8], y[4:8], index=torch.arange(4, 8))
    torch.testing.assert_close(part.adversarial, result.adversarial[4:8], atol=1e-6, rtol=0)
    # c grows x10 per failed round: the final c of a never-successful row is c0 * 10^2
    failed = ~result.success
    if failed.any():
        torch.testing.assert_close(result.final_c[failed], torch.full((int(failed.sum()),), 1e-3 * 100))
    assert "search_steps" in attack.config() and "beta" not in attack.config()


def test_l2_uae_moves_away_and_reports_no_mi():
    x = digits()[0][:10]
    criterion = Reconstruction(digits_dense_autoencoder())
    result = LpUAE(criterion, steps=30)(x)
    assert result.mi.isnan().all()
    assert (result.moved_l2[result.success] >= 0).all()
    with torch.no_grad():
        f = criterion(result.adversarial, criterion.prepare(x, None, torch.arange(10)))
    assert torch.equal(result.success, f <= 0)
    assert "mine_steps" not in LpUAE(criterion).config()


def test_gaussian_noise_baseline():
    x = torch.full((64, 1, 8, 8), 0.5)
    criterion = Reconstruction(digits_conv_autoencoder())
    result = GaussianNoise(criterion, sigma=0.01, seed=3)(x)
    assert (result.adversarial - x).std().item() == pytest.approx(0.01, rel=0.05)
    again = GaussianNoise(criterion, sigma=0.01, seed=3)(x[10:20], index=torch.arange(10, 20))
    assert torch.equal(again.adversarial, result.adversarial[10:20])
    with torch.no_grad():
        f = criterion(result.adversarial, criterion.prepare(x, None, torch.arange(64)))
    assert torch.equal(result.success, f <= 0)
    with pytest.raises(ValueError, match="sigma"):
        GaussianNoise(criterion, sigma=-1)
