"""What the MI term measures: closed forms of the random-projection sampler, MINE against them, mi='analytic'."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from uae_augment import MINEUAE, Reconstruction
from uae_augment.attacks._minmax_loop import AnalyticMISimilarity
from uae_augment.attacks.minmax import MinMaxAttack
from uae_augment.controls import with_cosine
from uae_augment.mine import (
    RandomProjectionSampler,
    per_sample_mi,
    projection_mi,
    standardised_projection_mi,
)


def gaussian_mi(covariance: torch.Tensor, split: int) -> float:
    """I(A; B) = (log det S_A + log det S_B - log det S) / 2 for a joint Gaussian."""
    logdet = torch.linalg.slogdet
    return 0.5 * float(
        logdet(covariance[:split, :split])[1] + logdet(covariance[split:, split:])[1] - logdet(covariance)[1]
    )


@pytest.mark.parametrize("cos,dim", [(0.3, 1), (0.6, 8), (-0.9, 8), (0.95, 32)])
def test_projection_mi_equals_gaussian_log_det_formula(cos, dim):
    block = torch.tensor([[1.0, cos], [cos, 1.0]], dtype=torch.float64)
    # coordinates ordered (a_1..a_p, b_1..b_p): kron(block, I_p)
    covariance = torch.kron(block, torch.eye(dim, dtype=torch.float64))
    value = projection_mi(torch.tensor(cos, dtype=torch.float64), dim)
    assert float(value) == pytest.approx(gaussian_mi(covariance, dim), rel=1e-10)


def test_projection_sampler_pairs_have_correlation_cos():
    # the sampler's raw projections (before standardisation) of x, x' are pairs with correlation cos(x, x')
    x = torch.rand(3, 20, generator=torch.Generator().manual_seed(0))  # uncentred, like images
    cos = torch.tensor([0.1, 0.5, 0.9])
    other = with_cosine(x, cos)
    sampler = RandomProjectionSampler(20, projections=400, dim=50, seed=3)
    matrix = sampler.matrix(torch.device("cpu"))  # (d, K * dim): 20,000 iid Gaussian columns
    for i in range(3):
        a, b = x[i] @ matrix, other[i] @ matrix
        correlation = float((a * b).mean() / (a.pow(2).mean() * b.pow(2).mean()).sqrt())
        assert correlation == pytest.approx(float(cos[i]), abs=0.02)


def test_projection_mi_monte_carlo_log_density_ratio():
    # E[log p(a, b) / (p(a) p(b))] over correlated standard normal pairs, p = 4 coordinates
    generator = torch.Generator().manual_seed(0)
    cos, dim, n = 0.7, 4, 200_000
    a = torch.randn(n, dim, generator=generator, dtype=torch.float64)
    b = cos * a + math.sqrt(1 - cos**2) * torch.randn(n, dim, generator=generator, dtype=torch.float64)
    log_ratio = -0.5 * math.log(1 - cos**2) - (a**2 + b**2 - 2 * cos * a * b) / (2 * (1 - cos**2)) + (a**2 + b**2) / 2
    estimate = float(log_ratio.sum(dim=1).mean())
    assert estimate == pytest.approx(float(projection_mi(torch.tensor(cos), dim)), abs=0.02)


def test_projection_mi_is_finite_with_zero_gradient_at_identical_inputs():
    cos = torch.tensor([1.0, 0.5], requires_grad=True)
    value = projection_mi(cos, 8)
    value.sum().backward()
    assert torch.isfinite(value).all() and float(value[0].detach()) == pytest.approx(-4 * math.log(1e-6), rel=1e-3)
    assert torch.isfinite(cos.grad).all()
    with pytest.raises(ValueError, match="dim must be >= 1"):
        projection_mi(cos, 0)


@pytest.mark.parametrize("cos", [0.3, 0.8])
def test_standardised_mi_matches_circular_closed_form_for_dim_3(cos):
    # dim 3: standardisation leaves the angle of a 2-D Gaussian pair; the phase difference D of
    # correlated circular Gaussians has density (1 - r^2) / (2 pi (1 - b^2)) (1 + b arccos(-b) / sqrt(1 - b^2)),
    # b = r cos D, and I = E[log(2 pi f(D))]. The radius grid converges slowest at dim 3 (0.4% at cos 0.8).
    angles = torch.linspace(-math.pi, math.pi, 200_001, dtype=torch.float64)[:-1]
    beta = cos * torch.cos(angles)
    density = (1 - cos**2) / (2 * math.pi * (1 - beta**2)) * (1 + beta * torch.arccos(-beta) / (1 - beta**2).sqrt())
    step = float(angles[1] - angles[0])
    assert float(density.sum() * step) == pytest.approx(1.0, abs=1e-6)
    expected = float((density * torch.log(2 * math.pi * density)).sum() * step)
    assert standardised_projection_mi(cos, 3) == pytest.approx(expected, rel=1e-2)


@pytest.mark.parametrize("cos,dim", [(0.3, 8), (0.9, 8), (0.6, 32)])
def test_standardised_mi_between_gaussian_forms_of_dim_minus_2_and_1(cos, dim):
    exact = standardised_projection_mi(cos, dim)
    loss = -0.5 * math.log(1 - cos**2)  # one coordinate's worth
    assert (dim - 2) * loss <= exact <= (dim - 1) * loss


def test_standardised_mi_rejects_bad_arguments():
    with pytest.raises(ValueError, match="dim must be >= 3"):
        standardised_projection_mi(0.5, 2)
    with pytest.raises(ValueError, match="must be < 1"):
        standardised_projection_mi(1.0, 8)


def test_per_sample_mine_is_monotone_in_cos_and_below_the_exact_mi_and_log_k():
    # K = 128 projections of length 8, 300 Adam steps (about 3 s on one thread)
    cos = torch.tensor([0.6, 0.9, 0.99])
    x = torch.randn(3, 64, generator=torch.Generator().manual_seed(0))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        estimate = per_sample_mi(x, with_cosine(x, cos), steps=300, projections=128, projection_dim=8)
    finally:
        torch.set_num_threads(threads)
    assert (estimate.diff() > 0).all(), estimate
    # a coarse grid (within 1% of the default one here; MINE is 2.5-7x below)
    exact = torch.tensor([standardised_projection_mi(float(c), 8, angle_points=301, radius_points=100) for c in cos])
    assert (estimate < exact).all(), (estimate, exact)
    assert (estimate < math.log(128)).all()


def _autoencoder() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 16), nn.Sigmoid(), nn.Unflatten(1, (1, 4, 4)))


@pytest.mark.parametrize("batch", [1, 3, 4])
def test_analytic_attack_stays_in_box_and_reports_the_closed_form(batch):
    x = torch.rand(batch, 1, 4, 4, generator=torch.Generator().manual_seed(2))
    attack = MINEUAE(
        Reconstruction(_autoencoder()),
        preset="strong",
        steps=15,
        mi="analytic",
        projection_dim=8,
        epsilon=0.2,
        batch_size=4,
    )
    result = attack(x)
    moved = (result.adversarial - x).abs().amax()
    assert moved <= 0.2 + 1e-6
    assert result.adversarial.min() >= 0 and result.adversarial.max() <= 1
    cos = nn.functional.cosine_similarity(x.flatten(1), result.adversarial.flatten(1), dim=1)
    torch.testing.assert_close(result.mi, projection_mi(cos, 8))


def test_analytic_term_drives_delta_down_the_closed_form():
    # with c = 0 only the MI term acts: the analytic MI falls along the iterations
    x = torch.rand(4, 1, 4, 4, generator=torch.Generator().manual_seed(2))
    attack = MINEUAE(
        Reconstruction(_autoencoder()),
        preset="strong",
        steps=30,
        mi="analytic",
        projection_dim=8,
        epsilon=0.3,
        c0=0.0,
        beta=0.0,
        record_history=True,
    )
    trace = attack(x).mi_trace
    assert (trace[:, -1] < trace[:, 0] - 0.5).all(), trace[:, [0, -1]]


def test_analytic_similarity_value_matches_closed_form_of_cosine():
    x = torch.rand(3, 1, 4, 4, generator=torch.Generator().manual_seed(4))
    other = torch.rand(3, 1, 4, 4, generator=torch.Generator().manual_seed(5))
    cos = (x.flatten(1) * other.flatten(1)).sum(1) / (x.flatten(1).norm(dim=1) * other.flatten(1).norm(dim=1))
    expected = -4.0 * torch.log(1 - cos**2)
    torch.testing.assert_close(AnalyticMISimilarity(x, 8).value(other), expected)


def test_analytic_option_validation_and_config():
    criterion = Reconstruction(_autoencoder())
    with pytest.raises(ValueError, match="mi must be 'mine' or 'analytic'"):
        MINEUAE(criterion, mi="exact")
    with pytest.raises(ValueError, match="sampler='feature_maps'"):
        MINEUAE(criterion, mi="analytic", sampler="feature_maps")
    assert MINEUAE(criterion, mi="analytic").config()["mi"] == "analytic"
    assert "mi" not in MinMaxAttack(criterion, mode="unsupervised").config()


@pytest.mark.slow
@pytest.mark.parametrize("dim", [8, 32])
def test_per_sample_mine_below_exact_mi_on_a_grid(dim):
    cos = torch.tensor([0.6, 0.8, 0.9, 0.95, 0.99])
    x = torch.randn(5, 256, generator=torch.Generator().manual_seed(0))
    estimate = per_sample_mi(x, with_cosine(x, cos), steps=800, projections=2000, projection_dim=dim)
    exact = torch.tensor([standardised_projection_mi(float(c), dim) for c in cos])
    # increasing over well-separated cosines; between 0.95 and 0.99 it can dip (p = 32: 4.10 -> 3.90)
    assert (estimate[[0, 2, 4]].diff() > 0).all(), estimate
    assert (estimate < exact).all(), (estimate, exact)
    assert (estimate < math.log(2000)).all(), estimate
