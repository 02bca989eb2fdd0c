"""Matched-noise controls: matched quantities, box, batch independence, seeds, errors."""

from __future__ import annotations

import pytest
import torch

from uae_augment.controls import (
    COSINE_TOLERANCE,
    bisect_scale,
    cosine_matched_noise,
    l2_matched_noise,
    with_cosine,
)

CONTROLS = [l2_matched_noise, cosine_matched_noise]


def _cos(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    a, b = a.flatten(1).double(), b.flatten(1).double()
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1))


def _l2(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a.flatten(1).double() - b.flatten(1).double()).norm(dim=1)


def _pair(n: int = 13, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Digit-like x (mostly 0, some pixels at 1) and a UAE-like reference (bright background, dimmed strokes)."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 12, 12, generator=generator)
    x = torch.where(x > 0.6, x.clamp(max=0.9) / 0.9, torch.zeros_like(x))
    delta = 0.3 * torch.rand(x.shape, generator=generator) - 0.1 * torch.arange(n).view(-1, 1, 1, 1) / n
    return x, (x + delta).clamp(0, 1)


def test_l2_matched_noise_matches_the_clipped_l2_distance():
    x, reference = _pair()
    out = l2_matched_noise(x, reference, seed=4)
    torch.testing.assert_close(_l2(out, x), _l2(reference, x), rtol=1e-4, atol=0)
    assert out.dtype == x.dtype and out.shape == x.shape
    assert out.min() >= 0 and out.max() <= 1
    assert ((out == 0) | (out == 1)).float().mean() > 0.1  # the box clipped it: the match holds after clipping


def test_cosine_matched_noise_matches_cos_retained_component_and_energy():
    x, reference = _pair()
    out = cosine_matched_noise(x, reference, seed=4)
    assert out.min() >= 0 and out.max() <= 1
    error = (_cos(x, out) - _cos(x, reference)).abs().max()
    assert error <= COSINE_TOLERANCE, error
    # same retained component and orthogonal energy, hence the same L2 distance and norm
    torch.testing.assert_close(_l2(out, x), _l2(reference, x), rtol=1e-4, atol=0)
    torch.testing.assert_close(out.flatten(1).norm(dim=1), reference.flatten(1).norm(dim=1), rtol=1e-4, atol=0)
    # it is another point: not the reference, and not on the line through x
    assert (_l2(out, reference) > 0.1 * _l2(reference, x)).all()


def test_cosine_matched_noise_is_the_plain_construction_where_it_fits_in_the_box():
    # x inside (0.2, 0.8) and a small orthogonal energy: a x + R u never leaves the box, nothing is projected
    generator = torch.Generator().manual_seed(1)
    x = 0.2 + 0.6 * torch.rand(5, 30, generator=generator, dtype=torch.float64)
    reference = (x + 0.02 * torch.randn(x.shape, generator=generator, dtype=torch.float64)).clamp(0, 1)
    out = cosine_matched_noise(x, reference, seed=2)
    retained = (reference * x).sum(1) / x.pow(2).sum(1)
    residual = out - retained[:, None] * x
    torch.testing.assert_close((residual * x).sum(1), torch.zeros(5, dtype=torch.float64), atol=1e-9, rtol=0)
    torch.testing.assert_close(residual.norm(dim=1), (reference - retained[:, None] * x).norm(dim=1))


@pytest.mark.parametrize("control", CONTROLS)
@pytest.mark.parametrize("rows", [[0], [3, 4, 5], list(range(13))])
def test_row_depends_only_on_its_row_seed_and_index(control, rows):
    x, reference = _pair()
    full = control(x, reference, seed=7, index=torch.arange(100, 113))
    part = control(x[rows], reference[rows], seed=7, index=torch.tensor(rows) + 100)
    assert torch.equal(part, full[rows])


@pytest.mark.parametrize("control", CONTROLS)
def test_seed_and_index_reproduce_and_change_the_draw(control):
    x, reference = _pair(4)
    first = control(x, reference, seed=1)
    assert torch.equal(first, control(x, reference, seed=1))
    assert not torch.equal(first, control(x, reference, seed=2))
    assert not torch.equal(first, control(x, reference, seed=1, index=[10, 11, 12, 13]))
    assert not torch.equal(l2_matched_noise(x, reference, seed=1), cosine_matched_noise(x, reference, seed=1))


@pytest.mark.parametrize("control", CONTROLS)
def test_identical_reference_returns_x(control):
    x, _ = _pair(3)
    torch.testing.assert_close(control(x, x.clone(), seed=0), x, atol=1e-6, rtol=0)


@pytest.mark.parametrize("control", CONTROLS)
def test_errors_name_the_problem(control):
    x, reference = _pair(3)
    with pytest.raises(ValueError, match="reference must have the shape of x"):
        control(x, reference[:2], seed=0)
    with pytest.raises(ValueError, match="reference must lie in"):
        control(x, reference + 2, seed=0)
    with pytest.raises(ValueError, match="index must have 3 entries"):
        control(x, reference, seed=0, index=[0, 1])


def test_unreachable_l2_and_all_zero_cosine_rows_raise():
    # x = 0.1 everywhere: noise reaches at most 0.9 on pixels it pushes up and 0.1 on those it pushes down,
    # so row 1's reference (all pixels at 1, L2 = 0.9 * 4 = 3.6) is out of reach unless all 16 draws are positive
    x = torch.full((2, 16), 0.1)
    reference = torch.stack([torch.full((16,), 0.2), torch.ones(16)])
    with pytest.raises(ValueError, match=r"L2 distance of reference rows \[1\] cannot be reached"):
        l2_matched_noise(x, reference, seed=0)
    with pytest.raises(ValueError, match=r"x rows \[0\] are all zero"):
        cosine_matched_noise(torch.zeros(1, 4), torch.full((1, 4), 0.5), seed=0)


def test_with_cosine_sets_norm_and_cosine():
    x = torch.rand(4, 50, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    cos = torch.tensor([0.1, 0.5, 0.9, 0.99], dtype=torch.float64)
    other = with_cosine(x, cos)
    torch.testing.assert_close(_cos(x, other), cos)
    torch.testing.assert_close(other.norm(dim=1), x.norm(dim=1))


def test_bisect_scale_solves_each_row_and_caps_or_raises_beyond_reach():
    # measure(s) = min(s, 3) per row: targets 0.25 and 2 are reachable, 5 is not
    def measure(scale: torch.Tensor) -> torch.Tensor:
        return scale.clamp(max=3.0)

    target = torch.tensor([0.25, 2.0, 5.0], dtype=torch.float64)
    with pytest.raises(ValueError, match=r"distance of reference rows \[2\]"):
        bisect_scale(measure, target, "distance")
    scale = bisect_scale(measure, target, "distance", unreachable="cap")
    torch.testing.assert_close(scale[:2], target[:2], rtol=1e-12, atol=0)
    assert scale[2] >= 3.0 and measure(scale)[2] == 3.0  # the largest reachable value
    alone = bisect_scale(measure, target[:2], "distance")
    assert torch.equal(alone, scale[:2])  # a row's scale does not depend on the other rows
