"""Per-sample random generators derived from (seed, global index, stream).

Every random draw that concerns one sample (its initial perturbation, its MINE
parameters, its permutations, its noise, its augmentation views) comes from a
generator seeded by ``derive_seed(seed, index, stream)``. A sample's result is
therefore a function of the sample, the model, the configuration, the seed and
the sample's global index only: never of which other samples share its batch.

Two kinds of per-sample stream give that guarantee. CPU ``torch.Generator``
objects (:func:`sample_generators`) are the reference: every CPU result is
drawn from them. For an accelerator, :class:`CounterStreams` draws the same
kind of numbers on the device itself: element ``j`` of a row is a SplitMix64
hash of (the row's derived seed, ``j``), computed in int64 tensor operations,
so drawing needs no Python loop over samples and no host-device copy. The two
kinds give different numbers; :func:`sample_streams` picks one per device.
The ``stacked_*`` draws accept either kind.
"""

from __future__ import annotations

import math
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


def _signed(value: int) -> int:
    """A 64-bit pattern as the int64 value with the same bits."""
    value &= _MASK64
    return value - (1 << 64) if value >= 1 << 63 else value


_GOLDEN = _signed(0x9E3779B97F4A7C15)
_MIX1 = _signed(0xBF58476D1CE4E5B9)
_MIX2 = _signed(0x94D049BB133111EB)
_BLOCK_WORDS = 1 << 22  # int64 words hashed at once by CounterStreams (32 MiB per temporary)


def _shift_right(z: torch.Tensor, bits: int) -> torch.Tensor:
    """Logical right shift of int64 bit patterns (torch's ``>>`` is arithmetic)."""
    return (z >> bits) & ((1 << (64 - bits)) - 1)


def splitmix64_tensor(keys: torch.Tensor, counters: torch.Tensor) -> torch.Tensor:
    """SplitMix64's output number ``counter + 1`` of the generator seeded with ``key``, elementwise.

    ``keys`` and ``counters`` are int64 tensors (broadcast); int64 arithmetic
    wraps, so this equals :func:`_splitmix64` applied to ``key + counter * golden``
    on every device (checked against the Python version in the tests).
    """
    z = keys + (counters + 1) * _GOLDEN
    z = (z ^ _shift_right(z, 30)) * _MIX1
    z = (z ^ _shift_right(z, 27)) * _MIX2
    return z ^ _shift_right(z, 31)


class CounterStreams:
    """One counter-based random stream per sample, drawn with tensor operations on ``device``.

    Row ``i`` is keyed by ``derive_seed(seed, index[i], stream, *extra)``; its
    draws consume consecutive counters (like a generator consuming numbers), so
    row ``i``'s values depend on ``(seed, index[i])`` and the sequence of draw
    shapes only, never on the batch it sits in. Used by the ``stacked_*`` draws
    in place of a list of generators.

    Args:
        keys: (B,) int64 derived seeds, one per row.
        device: where the draws are made.
    """

    def __init__(self, keys: Sequence[int], device: torch.device | str):
        self.device = torch.device(device)
        self.keys = torch.tensor([_signed(k) for k in keys], dtype=torch.int64, device=self.device)
        self.offset = 0

    def __len__(self) -> int:
        return self.keys.shape[0]

    def _claim(self, numel: int) -> torch.Tensor:
        """The next ``numel`` counters (1, numel) int64; advances the stream."""
        counters = torch.arange(self.offset, self.offset + numel, dtype=torch.int64, device=self.device)
        self.offset += numel
        return counters.unsqueeze(0)

    def _blocks(self, numel: int) -> list[slice]:
        """Row blocks whose int64 words stay under ``_BLOCK_WORDS`` elements (bounded temporaries)."""
        rows = max(1, _BLOCK_WORDS // max(numel, 1))
        return [slice(start, start + rows) for start in range(0, len(self), rows)]

    def bits(self, numel: int) -> torch.Tensor:
        """The next ``numel`` 64-bit words of every row: (B, numel) int64; advances the counters."""
        return splitmix64_tensor(self.keys.unsqueeze(1), self._claim(numel))

    def uniform(self, numel: int, dtype: torch.dtype) -> torch.Tensor:
        """The next ``numel`` U[0, 1) values of every row (24 random bits, exact in float32)."""
        counters = self._claim(numel)
        out = torch.empty(len(self), numel, dtype=dtype, device=self.device)
        for rows in self._blocks(numel):
            words = splitmix64_tensor(self.keys[rows].unsqueeze(1), counters)
            out[rows] = _shift_right(words, 40).to(dtype) * 2.0**-24
        return out

    def normal(self, numel: int, dtype: torch.dtype) -> torch.Tensor:
        """The next ``numel`` N(0, 1) values of every row (Box-Muller on two uniforms each)."""
        u = self.uniform(2 * numel, torch.float64).view(len(self), numel, 2)
        radius = torch.sqrt(-2.0 * torch.log1p(-u[..., 0]))  # 1 - u in (0, 1]
        return (radius * torch.cos(2.0 * math.pi * u[..., 1])).to(dtype)


def counter_streams(
    seed: int,
    indices: torch.Tensor | Sequence[int],
    stream: Stream,
    *extra: int,
    device: torch.device | str,
) -> CounterStreams:
    """:class:`CounterStreams` of the given global indices on ``device``."""
    return CounterStreams([derive_seed(seed, i, int(stream), *extra) for i in _as_ints(indices)], device)


Streams = Sequence[torch.Generator] | CounterStreams


def sample_streams(
    seed: int,
    indices: torch.Tensor | Sequence[int],
    stream: Stream,
    *extra: int,
    device: torch.device | str,
    on_device: bool | None = None,
) -> Streams:
    """Per-sample streams for draws that end up on ``device``.

    ``on_device=None`` draws on the device itself (:class:`CounterStreams`)
    when it is not the CPU, and from CPU generators (:func:`sample_generators`,
    the CPU results' streams) otherwise; True or False forces one kind.
    """
    if on_device is None:
        on_device = torch.device(device).type != "cpu"
    if on_device:
        return counter_streams(seed, indices, stream, *extra, device=device)
    return sample_generators(seed, indices, stream, *extra)


def _as_ints(indices: torch.Tensor | Iterable[int]) -> list[int]:
    if isinstance(indices, torch.Tensor):
        return [int(i) for i in indices.detach().cpu().tolist()]
    return [int(i) for i in indices]


def stacked_uniform(
    generators: Streams,
    shape: Sequence[int],
    low: float,
    high: float,
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Draws U(low, high) of ``shape`` from each generator; returns (len(generators), *shape).

    With :class:`CounterStreams` the values are drawn on the streams' device.
    """
    if isinstance(generators, CounterStreams):
        unit = generators.uniform(math.prod(shape), dtype).view(len(generators), *shape)
        return unit * (high - low) + low
    out = torch.empty((len(generators), *shape), dtype=dtype)
    for row, generator in zip(out, generators):
        row.uniform_(low, high, generator=generator)
    return out.to(device)


def stacked_normal(
    generators: Streams,
    shape: Sequence[int],
    std: float = 1.0,
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Draws N(0, std^2) of ``shape`` from each generator; returns (len(generators), *shape).

    With :class:`CounterStreams` the values are drawn on the streams' device.
    """
    if isinstance(generators, CounterStreams):
        return generators.normal(math.prod(shape), dtype).view(len(generators), *shape) * std
    out = torch.empty((len(generators), *shape), dtype=dtype)
    for row, generator in zip(out, generators):
        row.normal_(0.0, std, generator=generator)
    return out.to(device)


def stacked_permutations(
    generators: Streams,
    count: int,
    size: int,
    *,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Draws ``count`` random permutations of ``range(size)`` per generator: (B, count, size).

    With :class:`CounterStreams` a permutation sorts 64-bit random keys on the
    streams' device (a stable sort: ties, at odds of 2^-64, cannot make it vary).
    """
    if isinstance(generators, CounterStreams):
        words = generators.bits(count * size).view(len(generators), count, size)
        return torch.sort(words, dim=-1, stable=True).indices
    keys = stacked_uniform(generators, (count, size), 0.0, 1.0)
    return keys.argsort(dim=-1).to(device)
