"""Where a run computes: device names and the torchrun process group, resolved in one place.

Used by the CLI (``uae-augment precompute``), the recipes and the benchmarks.
Under torchrun (``WORLD_SIZE`` > 1) every rank computes on ``cuda:LOCAL_RANK``:
a device name without an index gets it, and an explicit ``cuda:N`` with another
index is overridden with a warning (one command line for every rank must not put
all the ranks on one GPU). ``cpu`` stays ``cpu`` (the gloo backend).

Example:
    >>> resolve_device("cpu")
    device(type='cpu')
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
from collections.abc import Iterator
from typing import NamedTuple

import torch
import torch.distributed as dist

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT = datetime.timedelta(hours=6)
"""How long ranks wait for each other in a collective before the process group gives up."""


def torchrun_world_size() -> int:
    """``WORLD_SIZE`` set by torchrun (1 outside torchrun).

    Raises:
        ValueError: if ``WORLD_SIZE`` is not a positive integer.
    """
    return _env_int("WORLD_SIZE", 1, minimum=1)


def torchrun_local_rank() -> int | None:
    """``LOCAL_RANK`` under torchrun with more than one process, else None.

    Raises:
        ValueError: if ``LOCAL_RANK`` is missing or negative while ``WORLD_SIZE`` > 1.
    """
    if torchrun_world_size() <= 1:
        return None
    if "LOCAL_RANK" not in os.environ:
        raise ValueError("WORLD_SIZE > 1 but LOCAL_RANK is not set: start the processes with torchrun")
    return _env_int("LOCAL_RANK", 0, minimum=0)


def _env_int(name: str, default: int, *, minimum: int) -> int:
    text = os.environ.get(name)
    if text is None or text == "":
        return default
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"environment variable {name} must be an integer, got {text!r}") from None
    if value < minimum:
        raise ValueError(f"environment variable {name} must be >= {minimum}, got {value}")
    return value


def resolve_device(name: str = "auto") -> torch.device:
    """The device a device name means in this process.

    ``'auto'``: CUDA when available, else the CPU. Outside torchrun a name is
    taken as written (``'cuda'`` is the current CUDA device). Under torchrun
    every CUDA name becomes ``cuda:LOCAL_RANK``; an explicit other index is
    overridden and a warning is logged.

    Args:
        name: ``'auto'``, ``'cpu'``, ``'cuda'``, ``'cuda:1'``, ... (anything ``torch.device`` reads).

    Returns:
        The resolved ``torch.device``.

    Raises:
        ValueError: if the name is not a device, CUDA is asked for but not available,
            or under torchrun ``LOCAL_RANK`` has no CUDA device of its own.
    """
    cuda = torch.cuda.is_available()
    try:
        device = torch.device(("cuda" if cuda else "cpu") if name == "auto" else name)
    except RuntimeError as error:
        raise ValueError(f"--device {name!r} is not a device name ({error})") from None
    if device.type != "cuda":
        return device
    if not cuda:
        raise ValueError(f"--device {name!r}: CUDA is not available on this machine")
    local_rank = torchrun_local_rank()
    if local_rank is None:
        return device
    count = torch.cuda.device_count()
    if local_rank >= count:
        raise ValueError(f"torchrun LOCAL_RANK {local_rank} has no GPU of its own: {count} CUDA device(s) visible")
    if device.index is not None and device.index != local_rank:
        logger.warning(
            "--device %s under torchrun: rank with LOCAL_RANK %d uses cuda:%d instead (one GPU per rank)",
            name,
            local_rank,
            local_rank,
        )
    return torch.device("cuda", local_rank)


class Placement(NamedTuple):
    """Where this process computes: ``world`` is (rank, world_size) in a process group, None alone."""

    world: tuple[int, int] | None
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Whether this process is rank 0 (or alone): the one that writes the outputs."""
        return self.world is None or self.world[0] == 0


@contextlib.contextmanager
def distributed(name: str = "auto", *, timeout: datetime.timedelta = DEFAULT_TIMEOUT) -> Iterator[Placement]:
    """Joins torchrun's process group for the ``with`` block when ``WORLD_SIZE`` > 1.

    The device is :func:`resolve_device` (``cuda:LOCAL_RANK`` under torchrun,
    made the current CUDA device); the backend is nccl on CUDA, gloo on the CPU.
    A group that is already initialised is used as it is and left open; a group
    this function starts is destroyed when the block ends, also when it raises.

    Args:
        name: the device name (see :func:`resolve_device`).
        timeout: how long ranks wait for each other in a collective.

    Yields:
        The :class:`Placement`: world None outside a process group.

    Raises:
        ValueError: as :func:`resolve_device`.
    """
    device = resolve_device(name)
    started = False
    if torchrun_world_size() > 1 and not _initialised():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=timeout)
        started = True
        logger.info(
            "initialised a %s process group: rank %d of %d",
            backend,
            dist.get_rank(),
            dist.get_world_size(),
        )
    try:
        world = (dist.get_rank(), dist.get_world_size()) if _initialised() and dist.get_world_size() > 1 else None
        yield Placement(world, device)
    finally:
        if started and _initialised():
            dist.destroy_process_group()


def _initialised() -> bool:
    return dist.is_available() and dist.is_initialized()
