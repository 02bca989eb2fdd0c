"""Summary statistics of a cache's per-row results (private; JSON-serialisable, None for no value)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch


def finite_or_none(value: float) -> float | None:
    """``value``, or None when it is NaN or infinite."""
    return value if math.isfinite(value) else None


def stats(values: torch.Tensor) -> dict[str, float | int | None]:
    """count, mean, std, min, median, max of the finite entries of ``values`` (None when there are none)."""
    finite = values[torch.isfinite(values)].double()
    if not finite.numel():
        return {"count": 0, "mean": None, "std": None, "min": None, "median": None, "max": None}
    return {
        "count": int(finite.numel()),
        "mean": float(finite.mean()),
        "std": float(finite.std(unbiased=False)),
        "min": float(finite.min()),
        "median": float(finite.median()),
        "max": float(finite.max()),
    }


def criterion_summary(criterion: torch.Tensor, bins: int) -> dict[str, Any]:
    """:func:`stats` of the criterion values, the share of zeros (successes) and a histogram of the positive ones."""
    finite = criterion[torch.isfinite(criterion)]
    positive = finite[finite > 0].double().numpy()
    counts, edges = np.histogram(positive, bins=bins) if positive.size else (np.zeros(0), np.zeros(0))
    return {
        **stats(criterion),
        "zero_fraction": finite_or_none(float((finite == 0).double().mean())) if finite.numel() else None,
        "histogram_of_positive": {"edges": edges.tolist(), "counts": counts.astype(int).tolist()},
    }
