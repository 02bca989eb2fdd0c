"""uae_augment.statistics: paired t summaries, the minimum detectable effect and the verdict."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from uae_augment.statistics import (
    HELPS,
    HURTS,
    NO_EFFECT,
    minimum_detectable_effect,
    paired_difference,
    verdict,
)


def test_hand_computed_interval_and_p_value():
    # differences -0.03, -0.02, -0.04: mean -0.03, sd 0.01, t_{0.975, 2} = 4.302653 -> half width 0.0248414
    result = paired_difference([0.10, 0.12, 0.11], [0.13, 0.14, 0.15])
    assert result.n == 3
    assert result.mean == pytest.approx(-0.03, abs=1e-12)
    assert result.sd == pytest.approx(0.01, rel=1e-9)
    assert result.ci_low == pytest.approx(-0.03 - 4.302653 * 0.01 / math.sqrt(3), abs=1e-7)
    assert result.ci_high == pytest.approx(-0.03 + 4.302653 * 0.01 / math.sqrt(3), abs=1e-7)
    # t = -0.03 / (0.01 / sqrt 3) = -5.196; two-sided p = 2 * t.sf(5.196, 2) = 0.0351
    assert result.p_value == pytest.approx(2 * stats.t.sf(3 * math.sqrt(3), 2), rel=1e-9)
    assert result.p_value == pytest.approx(0.0351, abs=1e-4)
    assert result.verdict == HELPS and result.better == "lower"


def test_interval_matches_scipy_ttest_rel():
    rng = np.random.default_rng(3)
    arm, control = rng.normal(0.5, 0.1, 7), rng.normal(0.45, 0.1, 7)
    result = paired_difference(arm, control, better="higher")
    reference = stats.ttest_rel(arm, control)
    low, high = reference.confidence_interval(0.95)
    assert (result.ci_low, result.ci_high) == pytest.approx((low, high), rel=1e-10)
    assert result.p_value == pytest.approx(reference.pvalue, rel=1e-10)
    assert result.mean == pytest.approx(float(np.mean(arm - control)), rel=1e-12)


@pytest.mark.parametrize("better,expected", [("lower", HELPS), ("higher", HURTS)])
def test_direction_convention_below_zero(better, expected):
    assert verdict(-0.3, -0.1, better) == expected


@pytest.mark.parametrize("better,expected", [("lower", HURTS), ("higher", HELPS)])
def test_direction_convention_above_zero(better, expected):
    assert verdict(0.1, 0.3, better) == expected


@pytest.mark.parametrize("low,high", [(-0.1, 0.1), (0.0, 0.2), (-0.2, 0.0)])
def test_interval_touching_or_straddling_zero_is_no_detectable_effect(low, high):
    assert verdict(low, high, "lower") == NO_EFFECT
    assert verdict(low, high, "higher") == NO_EFFECT


def test_noisy_differences_straddle_zero():
    result = paired_difference([1.0, 2.0, 3.0, 4.0], [2.0, 1.0, 4.0, 3.0])
    assert result.mean == 0.0 and result.ci_low < 0 < result.ci_high
    assert result.verdict == NO_EFFECT and result.p_value == pytest.approx(1.0)


@pytest.mark.parametrize("n,effect_size", [(5, 1.6820), (10, 0.9960), (100, 0.2829)])
def test_mde_known_values(n, effect_size):
    # exact noncentral-t values: n = 10 gives d_z = 0.996, G*Power's figure for a two-tailed paired t test
    assert minimum_detectable_effect(n, 1.0) == pytest.approx(effect_size, abs=2e-4)
    assert minimum_detectable_effect(n, 0.5) == pytest.approx(0.5 * effect_size, abs=1e-4)


def test_mde_has_the_stated_power():
    n, sd = 6, 2.0
    mde = minimum_detectable_effect(n, sd)
    critical = stats.t.ppf(0.975, n - 1)
    power = stats.nct.sf(critical, n - 1, mde * math.sqrt(n) / sd) + stats.nct.cdf(
        -critical, n - 1, mde * math.sqrt(n) / sd
    )
    assert power == pytest.approx(0.8, abs=1e-8)
    # and by simulation: a paired t test on differences N(mde, sd^2) rejects about 80 % of the time
    rng = np.random.default_rng(0)
    samples = rng.normal(mde, sd, size=(20000, n))
    t = samples.mean(axis=1) / (samples.std(axis=1, ddof=1) / math.sqrt(n))
    assert float(np.mean(np.abs(t) > critical)) == pytest.approx(0.8, abs=0.015)


def test_mde_approaches_the_normal_formula_for_large_n():
    z = stats.norm.ppf(0.975) + stats.norm.ppf(0.8)
    assert minimum_detectable_effect(2000, 1.0) == pytest.approx(z / math.sqrt(2000), rel=2e-3)


def test_mde_for_two_seeds_is_finite_and_large():
    assert 10.0 < minimum_detectable_effect(2, 1.0) < 13.0


def test_comparison_carries_the_mde_of_its_n_and_sd():
    result = paired_difference([0.0, 1.0, 2.0, 4.0, 3.0], [0.5, 0.2, 1.0, 3.9, 2.0])
    assert result.mde == pytest.approx(minimum_detectable_effect(5, result.sd))
    assert set(result.to_dict()) >= {
        "n",
        "mean",
        "sd",
        "ci_low",
        "ci_high",
        "p_value",
        "mde",
        "verdict",
    }
    assert "MDE" in result.format()


@pytest.mark.parametrize("arm,control", [([1.0], [2.0]), ([], [])])
def test_fewer_than_two_seeds_is_an_error(arm, control):
    with pytest.raises(ValueError, match="at least 2 seeds"):
        paired_difference(arm, control)


def test_zero_variance_is_an_error_that_gives_the_difference():
    with pytest.raises(ValueError, match="zero variance .*0.5"):
        paired_difference([1.5, 2.5, 3.5], [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="zero variance"):
        paired_difference([1.0, 2.0], [1.0, 2.0])


def test_bad_inputs_are_errors():
    with pytest.raises(ValueError, match="one value per seed"):
        paired_difference([1.0, 2.0, 3.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="finite"):
        paired_difference([1.0, math.nan], [1.0, 2.0])
    with pytest.raises(ValueError, match="better"):
        paired_difference([1.0, 2.0], [0.0, 2.5], better="smaller")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="confidence"):
        paired_difference([1.0, 2.0], [0.0, 2.5], confidence=95)
    with pytest.raises(ValueError, match="n >= 2"):
        minimum_detectable_effect(1, 1.0)
    with pytest.raises(ValueError, match="positive, finite sd"):
        minimum_detectable_effect(5, 0.0)
    with pytest.raises(ValueError, match="above"):
        verdict(0.2, 0.1)
