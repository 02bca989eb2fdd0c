"""Per-sample random generators derived from (seed, global index, stream).

Every random draw that concerns one sample (its initial perturbation, its MINE
parameters, its permutations, its noise, its augmentation views) comes from a
generator seeded by ``derive_seed(seed, index, stream)``. A sample's result is
therefore a function of the sample, the model, the configuration, the seed and
the sample's global index only: never of which other samples share its batch.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from enum import IntEnum

import torch

_MASK64 = (1 << 64) - 1


class Stream(IntEnum):
    """Independent random streams of one sample, so one draw never shifts another."""

    DELTA_INIT = 1
    MINE_INIT = 2
    PERMUTATION = 3
    PROJECTION = 4
    NOISE = 5
    VIEWS = 6
    REPLACE = 7
    EVALUATOR = 8
    TARGET = 9


def _splitmix64(state: int) -> int:
    state = (state + 0x9E3779B97F4A7C15) & _MASK64
    z = state
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def derive_seed(*keys: int) -> int:
    """Mixes integer keys into one 63-bit seed (order-sensitive, collision-resistant).

    Example:
        >>> derive_seed(0, 5, 1) == derive_seed(0, 5, 1) != derive_seed(0, 6, 1)
        True
    """
    state = 0x2545F4914F6CDD1D
    for key in keys:
        state = _splitmix64(state ^ (int(key) & _MASK64))
    return state >> 1


def sample_generator(seed: int, index: int, stream: Stream, *extra: int) -> torch.Generator:
    """A CPU generator for one sample and one stream."""
    generator = torch.Generator(device="cpu")
    generator.manual_seed(derive_seed(seed, index, int(stream), *extra))
    return generator


def sample_generators(
    seed: int, indices: torch.Tensor | Sequence[int], stream: Stream, *extra: int
) -> list[torch.Generator]:
    """One CPU generator per global index (see :func:`sample_generator`)."""
    return [sample_generator(seed, int(i), stream, *extra) for i in _as_ints(indices)]


def _as_ints(indices: torch.Tensor | Iterable[int]) -> list[int]:
    if isinstance(indices, torch.Tensor):
        return [int(i) for i in indices.detach().cpu().tolist()]
    return [int(i) for i in indices]


def stacked_uniform(
    generators: Sequence[torch.Generator],
    shape: Sequence[int],
    low: float,
    high: float,
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Draws U(low, high) of ``shape`` from each generator; returns (len(generators), *shape)."""
    out = torch.empty((len(generators), *shape), dtype=dtype)
    for row, generator in zip(out, generators):
        row.uniform_(low, high, generator=generator)
    return out.to(device)


def stacked_normal(
    generators: Sequence[torch.Generator],
    shape: Sequence[int],
    std: float = 1.0,
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Draws N(0, std^2) of ``shape`` from each generator; returns (len(generators), *shape)."""
    out = torch.empty((len(generators), *shape), dtype=dtype)
    for row, generator in zip(out, generators):
        row.normal_(0.0, std, generator=generator)
    return out.to(device)


def stacked_permutations(
    generators: Sequence[torch.Generator],
    count: int,
    size: int,
    *,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Draws ``count`` random permutations of ``range(size)`` per generator: (B, count, size)."""
    keys = stacked_uniform(generators, (count, size), 0.0, 1.0)
    return keys.argsort(dim=-1).to(device)
