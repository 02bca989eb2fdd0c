"""Paired comparisons over seeds: does an augmentation arm beat its control?

Every seed trains the arm and the control from the same initialisation, data
order and attack seed, so the per-seed differences ``arm - control`` are
paired. :func:`paired_difference` summarises them with the paired t
statistics (mean, sample standard deviation, confidence interval, two-sided
p-value; ``scipy.stats``), the minimum detectable effect of that design, and a
verdict:

* ``"helps"``: the confidence interval lies entirely on the better side of 0;
* ``"hurts"``: it lies entirely on the worse side;
* ``"no detectable effect"``: it contains 0.

Direction: ``better="lower"`` (the default) is for errors and losses, where a
negative difference (arm below control) is better, e.g. the test
reconstruction error; ``better="higher"`` is for accuracies.

The minimum detectable effect (MDE) is the smallest true mean difference that
a two-sided paired t test at level ``alpha`` detects with probability
``power``, for this ``n`` and the observed standard deviation (exact, from the
noncentral t distribution). A "no detectable effect" verdict with a large MDE
says little; with a small MDE it bounds the effect.

Example:
    >>> comparison = paired_difference([0.10, 0.12, 0.11], [0.13, 0.14, 0.15])
    >>> comparison.verdict, round(comparison.mean, 4)
    ('helps', -0.03)
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
from scipy import optimize, stats

Better = Literal["lower", "higher"]
HELPS = "helps"
HURTS = "hurts"
NO_EFFECT = "no detectable effect"
VERDICTS = (HELPS, NO_EFFECT, HURTS)

__all__ = [
    "HELPS",
    "HURTS",
    "NO_EFFECT",
    "VERDICTS",
    "PairedComparison",
    "minimum_detectable_effect",
    "paired_difference",
    "verdict",
]


@dataclasses.dataclass(frozen=True)
class PairedComparison:
    """Paired t summary of ``arm - control`` over seeds.

    Attributes:
        n: number of pairs (seeds).
        mean: mean difference (arm - control), in the metric's units.
        sd: sample standard deviation of the differences (ddof = 1).
        ci_low, ci_high: the two-sided ``confidence`` interval of the mean difference.
        p_value: two-sided p-value of the paired t test (mean difference = 0).
        mde: minimum detectable effect (same units, positive) at ``alpha = 1 - confidence``
            and ``power``.
        verdict: ``"helps"``, ``"no detectable effect"`` or ``"hurts"``.
        better: ``"lower"`` or ``"higher"``: which side of 0 is better.
        confidence: the interval's level (0.95).
        power: the power of the MDE (0.8).
    """

    n: int
    mean: float
    sd: float
    ci_low: float
    ci_high: float
    p_value: float
    mde: float
    verdict: str
    better: Better
    confidence: float
    power: float

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-serialisable dict."""
        return dataclasses.asdict(self)

    def format(self, digits: int = 5, scale: float = 1.0) -> str:
        """``'-0.00012 [-0.00020, -0.00004], MDE 0.00009'`` (values times ``scale``)."""
        low, high, mean, mde = (scale * v for v in (self.ci_low, self.ci_high, self.mean, self.mde))
        return f"{mean:+.{digits}f} [{low:+.{digits}f}, {high:+.{digits}f}], MDE {mde:.{digits}f}"


def _check_level(name: str, value: float) -> float:
    value = float(value)
    if not 0.0 < value < 1.0:
        raise ValueError(f"{name} must be in (0, 1), got {value}")
    return value


def _check_better(better: str) -> Better:
    if better not in ("lower", "higher"):
        raise ValueError(f"better must be 'lower' or 'higher', got {better!r}")
    return better  # type: ignore[return-value]


def minimum_detectable_effect(n: int, sd: float, *, alpha: float = 0.05, power: float = 0.8) -> float:
    """Smallest true mean difference a two-sided paired t test detects with probability ``power``.

    Solves ``P(|T| > t_{1-alpha/2, n-1}) = power`` for the effect ``delta``, with
    ``T`` noncentral t with ``n - 1`` degrees of freedom and noncentrality
    ``delta * sqrt(n) / sd``. For large ``n`` it approaches
    ``(z_{1-alpha/2} + z_{power}) * sd / sqrt(n)`` (2.80 sd / sqrt(n) at the defaults).

    Args:
        n: number of pairs (>= 2).
        sd: standard deviation of the differences (> 0, finite).
        alpha: two-sided test level.
        power: wanted probability of detection.

    Raises:
        ValueError: ``n < 2``, ``sd`` not positive and finite, or a level outside (0, 1).
    """
    alpha, power = _check_level("alpha", alpha), _check_level("power", power)
    if n < 2:
        raise ValueError(f"the minimum detectable effect needs n >= 2 pairs, got {n}")
    if not (math.isfinite(sd) and sd > 0):
        raise ValueError(f"the minimum detectable effect needs a positive, finite sd, got {sd}")
    df = n - 1
    critical = stats.t.ppf(1.0 - alpha / 2.0, df)

    def shortfall(noncentrality: float) -> float:
        wrong_side = float(stats.nct.cdf(-critical, df, noncentrality))  # NaN where it underflows (large nc)
        detected = float(stats.nct.sf(critical, df, noncentrality)) + (0.0 if math.isnan(wrong_side) else wrong_side)
        return detected - power

    upper = critical + stats.norm.ppf(power) + 1.0
    while shortfall(upper) < 0:  # the power grows with the noncentrality; widen until it brackets
        upper *= 2.0
    noncentrality = optimize.brentq(shortfall, 0.0, upper, xtol=1e-10)
    return float(noncentrality * sd / math.sqrt(n))


def verdict(ci_low: float, ci_high: float, better: Better = "lower") -> str:
    """``"helps"`` / ``"no detectable effect"`` / ``"hurts"`` for an interval of ``arm - control``.

    Raises:
        ValueError: an unknown ``better`` or ``ci_low > ci_high``.
    """
    better = _check_better(better)
    if ci_low > ci_high:
        raise ValueError(f"ci_low {ci_low} is above ci_high {ci_high}")
    below, above = ci_high < 0.0, ci_low > 0.0
    if not (below or above):
        return NO_EFFECT
    return HELPS if below == (better == "lower") else HURTS


def paired_difference(
    arm: Sequence[float],
    control: Sequence[float],
    *,
    better: Better = "lower",
    confidence: float = 0.95,
    power: float = 0.8,
) -> PairedComparison:
    """Paired t summary, MDE and verdict of ``arm[i] - control[i]`` over seeds ``i``.

    Args:
        arm: the arm's metric per seed.
        control: the control's metric for the same seeds, in the same order.
        better: ``"lower"`` when a lower metric is better (errors, losses; the
            default), ``"higher"`` for accuracies.
        confidence: level of the two-sided interval; the MDE uses ``alpha = 1 - confidence``.
        power: power of the minimum detectable effect.

    Returns:
        A :class:`PairedComparison`.

    Raises:
        ValueError: different lengths, fewer than 2 pairs, a non-finite value,
            differences of zero variance (a t interval is undefined: the message
            gives the constant difference), an unknown ``better`` or a level
            outside (0, 1).
    """
    better = _check_better(better)
    confidence, power = _check_level("confidence", confidence), _check_level("power", power)
    a = np.asarray(arm, dtype=np.float64).ravel()
    c = np.asarray(control, dtype=np.float64).ravel()
    if a.shape != c.shape:
        raise ValueError(f"arm and control need one value per seed each; got {a.size} and {c.size} values")
    if a.size < 2:
        raise ValueError(f"a paired comparison needs at least 2 seeds, got {a.size}")
    if not (np.isfinite(a).all() and np.isfinite(c).all()):
        raise ValueError("arm and control must be finite (a NaN or infinite value was given)")
    differences = a - c
    n = int(differences.size)
    mean = float(differences.mean())
    sd = float(differences.std(ddof=1))
    if sd == 0.0 or sd <= 1e-12 * max(1.0, abs(mean)):
        raise ValueError(
            f"the {n} paired differences have zero variance (all {mean!r}): the t interval is undefined"
            " (identical arms, or too few distinct values)"
        )
    half_width = float(stats.t.ppf(0.5 + confidence / 2.0, n - 1)) * sd / math.sqrt(n)
    low, high = mean - half_width, mean + half_width
    p_value = float(stats.ttest_rel(a, c).pvalue)
    mde = minimum_detectable_effect(n, sd, alpha=1.0 - confidence, power=power)
    return PairedComparison(
        n=n,
        mean=mean,
        sd=sd,
        ci_low=low,
        ci_high=high,
        p_value=p_value,
        mde=mde,
        verdict=verdict(low, high, better),
        better=better,
        confidence=confidence,
        power=power,
    )
