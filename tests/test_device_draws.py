"""Counter-based per-sample streams (the device-side draws of per-sample MINE), checked on CPU.

On a GPU, per-sample MINE draws its initial weights and permutations on the
device with :class:`~uae_augment._seeding.CounterStreams`; these tests run
that path on the CPU: exactness of the hash, per-index determinism across
batch sizes, the distributions, and that the CPU default keeps the generator
streams.
"""

from __future__ import annotations

import math

import pytest
import torch

from uae_augment._seeding import (
    CounterStreams,
    Stream,
    _splitmix64,
    counter_streams,
    derive_seed,
    sample_generators,
    splitmix64_tensor,
    stacked_normal,
    stacked_permutations,
    stacked_uniform,
)
from uae_augment.mine import PerSampleMINE
from uae_augment.mine.statistics_network import StatisticsNetwork

_BATCHES = (1, 5, 12)


def test_tensor_hash_equals_python_splitmix64():
    keys = [0, 1, derive_seed(3, 7, 2), (1 << 63) - 1]
    counters = [0, 1, 2, 12345, (1 << 40) + 3]
    values = splitmix64_tensor(torch.tensor(keys).unsqueeze(1), torch.tensor(counters).unsqueeze(0))
    golden = 0x9E3779B97F4A7C15
    for row, key in enumerate(keys):
        for column, counter in enumerate(counters):
            expected = _splitmix64((key + counter * golden) & ((1 << 64) - 1))
            assert int(values[row, column]) & ((1 << 64) - 1) == expected


def _draws(streams: CounterStreams) -> list[torch.Tensor]:
    return [
        stacked_uniform(streams, (3, 4), -2.0, 3.0),
        stacked_normal(streams, (7,), 0.5),
        stacked_permutations(streams, 2, 9),
    ]


def test_rows_depend_on_seed_and_index_only():
    index = torch.arange(100, 112)
    whole = _draws(counter_streams(4, index, Stream.MINE_INIT, 0, device="cpu"))
    for batch in _BATCHES:
        for start in range(0, len(index), batch):
            part = _draws(counter_streams(4, index[start : start + batch], Stream.MINE_INIT, 0, device="cpu"))
            for got, expected in zip(part, whole):
                assert torch.equal(got, expected[start : start + batch])
    single = _draws(counter_streams(4, [105], Stream.MINE_INIT, 0, device="cpu"))
    assert all(torch.equal(got[0], expected[5]) for got, expected in zip(single, whole))


def test_different_indices_streams_and_seeds_differ():
    base = stacked_uniform(counter_streams(0, range(6), Stream.MINE_INIT, device="cpu"), (50,), 0.0, 1.0)
    assert len({tuple(row.tolist()) for row in base}) == 6
    other_stream = stacked_uniform(counter_streams(0, range(6), Stream.PERMUTATION, device="cpu"), (50,), 0.0, 1.0)
    other_seed = stacked_uniform(counter_streams(1, range(6), Stream.MINE_INIT, device="cpu"), (50,), 0.0, 1.0)
    assert not (base == other_stream).any() and not (base == other_seed).any()
    streams = counter_streams(0, range(6), Stream.MINE_INIT, device="cpu")
    first, second = (
        stacked_uniform(streams, (50,), 0.0, 1.0),
        stacked_uniform(streams, (50,), 0.0, 1.0),
    )
    assert torch.equal(first, base) and not (first == second).any()  # draws consume counters


def test_uniform_and_normal_distributions():
    n = 200_000
    streams = counter_streams(9, range(4), Stream.MINE_INIT, device="cpu")
    u = stacked_uniform(streams, (n,), -1.0, 3.0)
    assert u.min() >= -1.0 and u.max() < 3.0
    for row in u:  # mean 1, variance 16/12; standard errors 0.0026 and 0.0036
        assert abs(float(row.mean()) - 1.0) < 0.015
        assert abs(float(row.var()) - 16 / 12) < 0.02
        counts = torch.histc(row, bins=20, min=-1.0, max=3.0)
        chi2 = float(((counts - n / 20) ** 2 / (n / 20)).sum())
        assert chi2 < 50.0  # 19 degrees of freedom: P(chi2 > 50) < 1e-4
    z = stacked_normal(streams, (n,), 2.0)
    for row in z:
        assert abs(float(row.mean())) < 0.03 and abs(float(row.std()) - 2.0) < 0.03
        assert abs(float((row.abs() < 2.0).float().mean()) - math.erf(1 / math.sqrt(2))) < 0.005


def test_permutations_are_permutations_and_uniform():
    perms = stacked_permutations(counter_streams(2, range(3), Stream.PERMUTATION, device="cpu"), 3000, 4)
    assert torch.equal(perms.sort(dim=-1).values, torch.arange(4).expand_as(perms))
    first = torch.bincount(perms[..., 0].flatten(), minlength=4).float()
    assert (first - 2250).abs().max() < 150  # 9000 draws, sd ~41


@pytest.mark.parametrize("hidden", [None, 16])
def test_per_sample_mine_device_draws_are_batch_independent(hidden):
    index = torch.arange(20, 32)

    def mine(rows: torch.Tensor) -> PerSampleMINE:
        return PerSampleMINE((6, 6), seed=3, index=rows, count=5, lr=1e-3, hidden=hidden, device_draws=True)

    whole = mine(index)
    whole_params = [p.detach() for p in whole.network.parameters()]
    whole_perms = whole.permutations(4)
    for batch in _BATCHES:
        start = 12 - batch
        part = mine(index[start:])
        for got, expected in zip(part.network.parameters(), whole_params):
            assert torch.equal(got.detach(), expected[start:])
        assert torch.equal(part.permutations(4), whole_perms[:, start:])


def test_device_draws_follow_glorot_and_differ_from_the_cpu_streams():
    index = torch.arange(8)
    counter = PerSampleMINE((10, 10), seed=0, index=index, count=4, lr=1e-3, hidden=32, device_draws=True)
    default = PerSampleMINE((10, 10), seed=0, index=index, count=4, lr=1e-3, hidden=32)
    reference = StatisticsNetwork((10, 10), sample_generators(0, index, Stream.MINE_INIT, 0), hidden=32)
    weight = counter.network.weight0[:, 0].detach()  # the u branch (B, C, out, H'W'): fan in C * H'W', fan out out
    limit = math.sqrt(6.0 / (weight.shape[1] * weight.shape[3] + weight.shape[2]))
    assert weight.abs().max() <= limit and abs(float(weight.std()) - limit / math.sqrt(3)) < 0.02 * limit
    assert not torch.equal(weight, default.network.weight0[:, 0].detach())
    # the CPU default is unchanged: the generator streams, bitwise
    for got, expected in zip(default.network.parameters(), reference.parameters()):
        assert torch.equal(got.detach(), expected.detach())
    perms = stacked_permutations(sample_generators(0, index, Stream.PERMUTATION, 0), 3, 4)
    assert torch.equal(default.permutations(3), perms.transpose(0, 1))


def test_device_draws_train_a_useful_estimator():
    torch.manual_seed(0)
    u = torch.randn(4, 32, 6)
    dependent, independent = u + 0.1 * torch.randn_like(u), torch.randn_like(u)
    scores = []
    for v in (dependent, independent):
        mine = PerSampleMINE((6,), seed=0, index=torch.arange(4), count=32, lr=1e-2, hidden=None, device_draws=True)
        mine.train(u, v, 200)
        with torch.no_grad():
            scores.append(torch.stack([mine.estimate(u, v, p) for p in mine.permutations(8)]).mean(0))
    assert (scores[0] > scores[1] + 0.3).all()


def test_row_blocks_do_not_change_the_draws(monkeypatch):
    whole = _draws(counter_streams(4, range(7), Stream.MINE_INIT, device="cpu"))
    monkeypatch.setattr("uae_augment._seeding._BLOCK_WORDS", 10)  # one or two rows per block
    blocked = _draws(counter_streams(4, range(7), Stream.MINE_INIT, device="cpu"))
    assert all(torch.equal(a, b) for a, b in zip(whole, blocked))
