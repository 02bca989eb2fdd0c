"""Small helpers over ``torch.distributed`` for the sharded cache writer.

Every collective here doubles as a barrier that carries errors: a rank that
fails does not leave the others waiting forever, every rank raises instead
(the failing rank its own exception, the others a :class:`RankFailedError`
naming the failing rank and its message).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import torch.distributed as dist

T = TypeVar("T")


class RankFailedError(RuntimeError):
    """Another rank of the process group failed during a collective step."""


def world() -> tuple[int, int] | None:
    """(rank, world_size) when a process group with more than one rank is initialised, else None."""
    if not (dist.is_available() and dist.is_initialized()):
        return None
    size = dist.get_world_size()
    return (dist.get_rank(), size) if size > 1 else None


def split(n: int, rank: int, world_size: int, unit: int = 1) -> tuple[int, int]:
    """The contiguous slice [start, stop) of ``range(n)`` that ``rank`` takes.

    The slices are balanced in whole blocks of ``unit`` rows (so every slice but
    the last starts and ends on a multiple of ``unit``).
    """
    blocks = -(-n // unit)
    base, extra = divmod(blocks, world_size)
    first = rank * base + min(rank, extra)
    last = first + base + (1 if rank < extra else 0)
    return min(n, first * unit), min(n, last * unit)


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


def every_rank(step: str, fn: Callable[[], T]) -> T:
    """Runs ``fn`` on every rank, then waits for all of them; raises everywhere if one failed."""
    value: Any = None
    error: BaseException | None = None
    try:
        value = fn()
    except Exception as caught:  # re-raised below, after the other ranks heard of it
        error = caught
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, None if error is None else _describe(error))
    if error is not None:
        raise error
    failed = [(rank, message) for rank, message in enumerate(gathered) if message is not None]
    if failed:
        rank, message = failed[0]
        raise RankFailedError(f"{step} failed on rank {rank}: {message}")
    return value


def on_rank0(step: str, fn: Callable[[], T]) -> T:
    """Runs ``fn`` on rank 0 and hands its (picklable) result to every rank."""
    payload: list[Any] = [None]
    error: BaseException | None = None
    if dist.get_rank() == 0:
        try:
            payload = [("ok", fn())]
        except Exception as caught:  # re-raised below, after the other ranks heard of it
            error = caught
            payload = [("error", _describe(caught))]
    dist.broadcast_object_list(payload, src=0)
    if error is not None:
        raise error
    status, value = payload[0]
    if status == "error":
        raise RankFailedError(f"{step} failed on rank 0: {value}")
    return value


def same_on_every_rank(step: str, value: Any) -> None:
    """Raises on every rank unless all ranks pass an equal (picklable) ``value``."""
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, value)
    different = [rank for rank, other in enumerate(gathered) if other != gathered[0]]
    if different:
        raise RankFailedError(
            f"{step}: ranks {different} disagree with rank 0 ({gathered[different[0]]!r} vs {gathered[0]!r})"
        )
