"""MatchedNoise: controls matched to a real HDF5 cache of MINE-UAEs, through precompute and UAEAugmented."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.utils.data import Subset

from tests.helpers import digits_conv_autoencoder
from uae_augment import (
    MINEUAE,
    GaussianNoise,
    MatchedNoise,
    Reconstruction,
    UAEAugmented,
    UAECache,
    load_dataset,
    precompute,
)
from uae_augment.controls import cosine_matched_noise, l2_matched_noise
from uae_augment.data.cache import ProvenanceMismatchError

N = 40


@pytest.fixture(scope="module")
def base() -> Subset:
    return Subset(load_dataset("digits"), range(N))


@pytest.fixture(scope="module")
def x(base: Subset) -> torch.Tensor:
    return torch.stack([base[i][0] for i in range(N)])


@pytest.fixture(scope="module")
def criterion() -> Reconstruction:
    return Reconstruction(digits_conv_autoencoder())


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, base: Subset, criterion: Reconstruction) -> Path:
    """A real cache of fast-preset MINE-UAEs of the N digits."""
    path = tmp_path_factory.mktemp("matched") / "mine.h5"
    return precompute(base, MINEUAE(criterion, preset="fast", steps=3, seed=1), path, progress=False)


def _cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    a, b = a.flatten(1).double(), b.flatten(1).double()
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1))


@pytest.mark.parametrize("match,control", [("l2", l2_matched_noise), ("cosine", cosine_matched_noise)])
def test_cached_rows_are_the_control_of_each_reference_row(tmp_path, base, x, criterion, reference, match, control):
    attack = MatchedNoise(criterion, reference, match=match, seed=5, batch_size=16)
    cache = UAECache(precompute(base, attack, tmp_path / f"{match}.h5", batch_size=16, progress=False))
    uae, _ = UAECache(reference).rows(range(N))
    rows, _ = cache.rows(range(N))
    assert torch.equal(rows, control(x, uae, seed=5, index=torch.arange(N)))
    assert rows.min() >= 0 and rows.max() <= 1
    l2 = (rows - x).flatten(1).norm(dim=1)
    assert torch.allclose(l2, (uae - x).flatten(1).norm(dim=1), rtol=1e-4)
    if match == "cosine":
        assert (_cosine(x, rows) - _cosine(x, uae)).abs().max() < 1e-5
    assert not torch.equal(rows, uae)
    with torch.no_grad():
        f = criterion(rows, criterion.prepare(x, None, torch.arange(N)))
    assert torch.equal(cache.success, (f <= 0).cpu())
    assert torch.isnan(cache.mi).all()


def test_rows_do_not_depend_on_the_batch(x, criterion, reference):
    attack = MatchedNoise(criterion, reference, match="cosine", seed=2)
    full = attack(x, index=torch.arange(N)).adversarial
    for rows in ([0], [7, 8, 9], list(range(13, 30))):
        index = torch.tensor(rows)
        assert torch.equal(attack(x[index], index=index).adversarial, full[index])


def test_augmented_set_serves_clean_then_matched_rows(tmp_path, base, x, criterion, reference):
    attack = MatchedNoise(criterion, reference, match="l2", seed=0)
    path = precompute(base, attack, tmp_path / "l2.h5", progress=False)
    augmented = UAEAugmented(base, attack, mode="concat", cache=path)
    assert len(augmented) == 2 * N
    assert torch.equal(augmented[3][0], x[3])
    assert torch.equal(augmented[N + 3][0], UAECache(path).rows([3])[0][0])


def test_another_reference_rebuilds_the_cache(tmp_path, base, criterion, reference):
    other = precompute(base, GaussianNoise(criterion, sigma=0.05, seed=1), tmp_path / "noise.h5", progress=False)
    first = MatchedNoise(criterion, reference, seed=0)
    second = MatchedNoise(criterion, other, seed=0)
    assert first.config()["reference"] != second.config()["reference"]
    path = precompute(base, first, tmp_path / "c.h5", progress=False)
    with pytest.raises(ProvenanceMismatchError, match="reference"):
        precompute(base, second, path, progress=False)


def test_errors(x, criterion, reference):
    with pytest.raises(ValueError, match="match must be one of"):
        MatchedNoise(criterion, reference, match="linf")
    attack = MatchedNoise(criterion, reference)
    with pytest.raises(IndexError):
        attack(x[:2], index=torch.tensor([N, N + 1]))
    with pytest.raises(FileNotFoundError):
        MatchedNoise(criterion, "/nonexistent/reference.h5")
