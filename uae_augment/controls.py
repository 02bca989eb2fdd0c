"""Matched-noise controls: random perturbations that share one quantity with a reference UAE.

A UAE x' of x is judged against noise that matches it on the quantity a rival
explanation names:

* :func:`l2_matched_noise`: Gaussian noise with the same L2 distance ||x'' - x||
  after clipping to the [0, 1] box (does the UAE do more than its size?);
* :func:`cosine_matched_noise`: a random point with the same retained component of
  x, a = <x', x> / ||x||^2, and the same orthogonal energy ||x' - a x||, inside the
  box; it therefore has the same cos(x, .), the same norm and the same L2 distance
  to x as x' (the per-sample MI of random projections is a function of cos alone,
  see ``uae_augment.mine.projection_mi``).

Both are pure functions of tensors. Row i's output depends only on x[i],
reference[i], ``seed`` and its global index (default ``arange(N)``), never on the
other rows of the batch: every per-row search runs a fixed number of bisection
steps in float64.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch

from ._seeding import Stream, sample_generators, stacked_normal
from ._validation import check_images, resolve_index

__all__ = ["COSINE_TOLERANCE", "cosine_matched_noise", "l2_matched_noise", "with_cosine"]

# Keys of the NOISE stream, so the two controls of one row draw independent directions.
_L2_KEY = 0xC1
_COSINE_KEY = 0xC2
# Fixed bisection lengths (float64): a row's result never depends on when other rows converge.
_GROW_STEPS = 64
_SCALE_STEPS = 60
_PLANE_STEPS = 64
COSINE_TOLERANCE = 1e-5
"""Largest |cos(x, x'') - cos(x, x')| :func:`cosine_matched_noise` returns without raising."""


def _flat_pair(x: torch.Tensor, reference: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Validates x and reference (same shape (N, ...), values in [0, 1]); returns both as (N, d) float64."""
    check_images(x, name="x")
    check_images(reference, name="reference")
    if x.shape != reference.shape:
        raise ValueError(f"reference must have the shape of x {tuple(x.shape)}, got {tuple(reference.shape)}")
    return x.flatten(1).double(), reference.flatten(1).double()


def _directions(x: torch.Tensor, seed: int, index: object, key: int) -> torch.Tensor:
    """One N(0, I) direction per row of the (N, d) float64 ``x``, drawn from (seed, index, key)."""
    generators = sample_generators(seed, resolve_index(index, x.shape[0]), Stream.NOISE, key)
    return stacked_normal(generators, x.shape[1:], dtype=torch.float64).to(x.device)


def bisect_scale(
    measure: Callable[[torch.Tensor], torch.Tensor],
    target: torch.Tensor,
    what: str,
    *,
    unreachable: Literal["raise", "cap"] = "raise",
) -> torch.Tensor:
    """Per-row scale s >= 0 with measure(s) = target, for a measure nondecreasing in s.

    Doubles the bracket per row, then bisects each row a fixed number of times
    (so a row's scale never depends on when other rows converge).

    Args:
        measure: (N,) scales -> (N,) measured values.
        target: (N,) values to reach.
        what: the measured quantity, for the error message.
        unreachable: a target beyond what the largest scale reaches raises
            (``"raise"``) or gets that largest scale (``"cap"``).

    Raises:
        ValueError: with ``unreachable="raise"``, if a row's target cannot be reached.
    """
    low = torch.zeros_like(target)
    high = torch.ones_like(target)
    for _ in range(_GROW_STEPS):
        short = measure(high) < target
        if not short.any():
            break
        high = torch.where(short, high * 2, high)
    short = measure(high) < target
    if unreachable == "raise" and short.any():
        rows = torch.nonzero(short).flatten().tolist()
        raise ValueError(f"the {what} of reference rows {rows[:10]} cannot be reached inside the [0, 1] box")
    for _ in range(_SCALE_STEPS):
        middle = (low + high) / 2
        below = measure(middle) < target
        low, high = torch.where(below, middle, low), torch.where(below, high, middle)
    return high  # a capped row's bisection only raised its low end


def l2_matched_noise(x: torch.Tensor, reference: torch.Tensor, *, seed: int, index: object = None) -> torch.Tensor:
    """Gaussian noise with the L2 distance of ``reference``: clip(x + s_i z_i, 0, 1) per row.

    z_i ~ N(0, I) comes from (seed, index[i]); s_i is bisected so that
    ||x''_i - x_i||_2 equals ||reference_i - x_i||_2 (relative error below 1e-9
    in float64; the float32 output rounds it to about 1e-7).

    Args:
        x: clean inputs (N, ...), values in [0, 1].
        reference: the perturbed inputs to match (e.g. UAEs), shape of x, in [0, 1].
        seed: seed of the noise.
        index: global indices of the rows (default ``arange(N)``).

    Returns:
        x'' of x's shape and dtype, in [0, 1].

    Raises:
        ValueError: on mismatched shapes, values outside [0, 1], bad indices, or a
            distance the clipped noise cannot reach.

    Example:
        >>> x = torch.full((2, 4), 0.5); ref = x + torch.tensor([[0.1], [0.2]])
        >>> out = l2_matched_noise(x, ref, seed=0)
        >>> torch.allclose((out - x).norm(dim=1), (ref - x).norm(dim=1))
        True
    """
    clean, target = _flat_pair(x, reference)
    distance = (target - clean).norm(dim=1)
    noise = _directions(clean, seed, index, _L2_KEY)

    def measure(scale: torch.Tensor) -> torch.Tensor:
        return (torch.clamp(clean + scale[:, None] * noise, 0.0, 1.0) - clean).norm(dim=1)

    scale = bisect_scale(measure, distance, "L2 distance")
    return torch.clamp(clean + scale[:, None] * noise, 0.0, 1.0).to(x.dtype).view_as(x)


def _onto_plane_in_box(y: torch.Tensor, x: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
    """Euclidean projection of each row of y onto {v in [0, 1]^d : <v, x> = level} (x >= 0).

    The projection is clip(y - lam x, 0, 1); <clip(y - lam x), x> falls with lam,
    so lam is bisected per row between bounds where every pixel with x > 0 sits at 1
    (resp. 0).
    """
    positive = x > 0
    ratio_high = torch.where(positive, y / x.clamp_min(1e-300), torch.full_like(y, -torch.inf))
    ratio_low = torch.where(positive, (y - 1) / x.clamp_min(1e-300), torch.full_like(y, torch.inf))
    low, high = ratio_low.amin(dim=1), ratio_high.amax(dim=1)
    for _ in range(_PLANE_STEPS):
        middle = (low + high) / 2
        above = (torch.clamp(y - middle[:, None] * x, 0.0, 1.0) * x).sum(dim=1) > level
        low, high = torch.where(above, middle, low), torch.where(above, high, middle)
    return torch.clamp(y - ((low + high) / 2)[:, None] * x, 0.0, 1.0)


def cosine_matched_noise(x: torch.Tensor, reference: torch.Tensor, *, seed: int, index: object = None) -> torch.Tensor:
    """Random x'' with the retained component and orthogonal energy of ``reference``, inside the box.

    With a = <x', x> / ||x||^2 and R = ||x' - a x|| for x' = ``reference``, the
    unconstrained control is a x + R u for a random unit u orthogonal to x. To stay
    in [0, 1] it is drawn inside the box-feasible set instead: for a Gaussian
    direction z (orthogonal to x, from (seed, index[i])), v(t) is the Euclidean
    projection of a x + t z onto {v in [0, 1]^d : <v, x> = a ||x||^2}, and t is
    bisected so that ||v(t) - a x|| = R. Every v(t) keeps the retained component a
    exactly, so x'' = v(t) has cos(x, x''), ||x''|| and ||x'' - x|| of x' up to the
    bisections' precision; where a x + t z already lies in the box, v(t) is a x + t z
    itself. |cos(x, x'') - cos(x, x')| is checked against :data:`COSINE_TOLERANCE`
    (measured well below it, see ``tests/test_controls.py``).

    Args:
        x: clean inputs (N, ...), values in [0, 1], no all-zero row.
        reference: the perturbed inputs to match, shape of x, in [0, 1].
        seed: seed of the direction.
        index: global indices of the rows (default ``arange(N)``).

    Returns:
        x'' of x's shape and dtype, in [0, 1].

    Raises:
        ValueError: on mismatched shapes, values outside [0, 1], an all-zero row of
            x, bad indices, an orthogonal energy the path cannot reach, or a result
            whose cosine misses the reference's by more than the tolerance.
    """
    clean, target = _flat_pair(x, reference)
    squared = clean.pow(2).sum(dim=1)
    if (squared == 0).any():
        rows = torch.nonzero(squared == 0).flatten().tolist()
        raise ValueError(f"x rows {rows[:10]} are all zero: their cosine with any x' is undefined")
    retained = (target * clean).sum(dim=1) / squared
    centre = retained[:, None] * clean
    energy = (target - centre).norm(dim=1)
    level = retained * squared
    direction = _directions(clean, seed, index, _COSINE_KEY)
    direction = direction - ((direction * clean).sum(dim=1) / squared)[:, None] * clean

    def point(scale: torch.Tensor) -> torch.Tensor:
        return _onto_plane_in_box(centre + scale[:, None] * direction, clean, level)

    scale = bisect_scale(lambda s: (point(s) - centre).norm(dim=1), energy, "orthogonal energy")
    out = point(scale)
    error = (_cosine(clean, out) - _cosine(clean, target)).abs()
    if (error > COSINE_TOLERANCE).any():
        raise ValueError(
            f"cosine-matched noise misses the reference's cosine by up to {float(error.max()):.3g}"
            f" (tolerance {COSINE_TOLERANCE:g})"
        )
    return out.to(x.dtype).view_as(x)


def _cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise cosine of two (N, d) tensors; 0 where a row of b is zero."""
    return (a * b).sum(dim=1) / (a.norm(dim=1) * b.norm(dim=1)).clamp_min(1e-300)


def with_cosine(x: torch.Tensor, cos: torch.Tensor, seed: int = 1) -> torch.Tensor:
    """x' with ||x'|| = ||x|| and cos(x, x') = cos per row (x: (N, d), cos: (N,); no box).

    The orthogonal direction is one Gaussian draw for the whole batch from ``seed``
    (a test and benchmark fixture for prescribed cosines, not a per-sample control).
    """
    other = torch.randn(x.shape, generator=torch.Generator().manual_seed(seed), dtype=x.dtype)
    unit = x / x.norm(dim=1, keepdim=True)
    other = other - (other * unit).sum(dim=1, keepdim=True) * unit
    other = other / other.norm(dim=1, keepdim=True)
    c = cos.to(x.dtype).view(-1, 1)
    return (c * unit + (1 - c**2).sqrt() * other) * x.norm(dim=1, keepdim=True)
