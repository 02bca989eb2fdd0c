"""Freed memory kept in the process: glibc's heap between training and attack steps.

Every step of a training loop or an attack frees tens of MB of temporaries (activations and
their gradients, the per-sample MINE state) and allocates them again at the next step. glibc
gives freed memory at the top of its heap back to the kernel once more than its trim threshold
is free there, and serves a request above its mmap threshold that the heap top cannot hold with
a fresh ``mmap``; either way the next step faults the same pages in again, zero-filled by the
kernel. On the project's 2-core machine that was 13-24 % of a conv autoencoder's
:func:`~uae_augment.fit` on MNIST in 3 of 6 processes measured (it depends on the heap's
history) and most of a B = 64 attack's kernel time.

Two ``mallopt`` settings stop it: ``M_MMAP_THRESHOLD`` at glibc's largest adaptive value (32 MiB)
puts every smaller request on the heap from the start, and ``M_TOP_PAD`` makes glibc keep that
many free bytes at the heap top when it trims and take that many extra when it grows, so the
next step reuses resident pages (the extra is address space until touched; resident memory can
stay up to the pad above what the process holds after a peak). A larger request still gets its own
``mmap`` unless the heap top holds it, which it does once the heap has grown under the pad (a
B = 64 MINE attack's 2 x 60 MB state did, after its first step). The library sets them the first
time :func:`~uae_augment.fit` or an attack runs in a process, not on import;
:func:`set_heap_retention` changes or undoes that. On a C library other than glibc (macOS,
Windows, musl) nothing is done. Either setting switches off glibc's adaptive thresholds for the
rest of the process.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import sys

logger = logging.getLogger(__name__)

DEFAULT_RETENTION = 256 << 20
"""Bytes of freed memory kept at the heap top (256 MiB): more than a B = 64 MINE attack's largest
per-step temporaries (2 x 60 MB) or a batch-100 conv autoencoder step's."""

MMAP_THRESHOLD = 32 << 20
"""``M_MMAP_THRESHOLD`` set with the retention: glibc's largest adaptive value (64-bit)."""

GLIBC_DEFAULTS = 128 << 10
"""glibc's own ``M_TOP_PAD`` and initial ``M_MMAP_THRESHOLD``, restored by ``set_heap_retention(None)``."""

_M_TOP_PAD = -2  # <malloc.h>
_M_MMAP_THRESHOLD = -3

_applied: int | None = None  # the M_TOP_PAD the library last set, if any
_chosen = False  # set_heap_retention was called: the default is no longer applied


@functools.lru_cache(maxsize=1)
def _glibc() -> ctypes.CDLL | None:
    """The process's C library if it is glibc (it exports ``gnu_get_libc_version``), else None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)
    except OSError:
        return None
    if not hasattr(libc, "gnu_get_libc_version") or not hasattr(libc, "mallopt"):
        return None
    libc.mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    libc.mallopt.restype = ctypes.c_int
    return libc


def _set_top_pad(nbytes: int, mmap_threshold: int = MMAP_THRESHOLD) -> bool:
    global _applied
    libc = _glibc()
    if libc is None or libc.mallopt(_M_MMAP_THRESHOLD, mmap_threshold) != 1:
        return False
    if libc.mallopt(_M_TOP_PAD, nbytes) != 1:
        return False
    _applied = nbytes
    logger.debug("glibc M_TOP_PAD %d bytes, M_MMAP_THRESHOLD %d bytes", nbytes, mmap_threshold)
    return True


def set_heap_retention(nbytes: int | None) -> bool:
    """Sets how much freed memory glibc keeps at the top of the heap, now and for the process.

    Args:
        nbytes: bytes to keep (0 keeps none; the mmap threshold is set to 32 MiB either way);
            ``None`` undoes the library's setting (back to glibc's initial values, 128 KiB,
            where the library had set one; the thresholds stay fixed) and stops
            :func:`~uae_augment.fit` and the attacks from setting :data:`DEFAULT_RETENTION` later.

    Returns:
        Whether glibc's setting was changed (False on other C libraries, or for ``None`` when the
        library had set nothing).

    Raises:
        TypeError: if ``nbytes`` is not an int or None.
        ValueError: if it is negative or does not fit a C int.

    Example:
        >>> from uae_augment import set_heap_retention
        >>> changed = set_heap_retention(512 << 20)  # keep up to 512 MiB (True on glibc)
    """
    global _chosen, _applied
    if nbytes is not None:
        if isinstance(nbytes, bool) or not isinstance(nbytes, int):
            raise TypeError(f"nbytes must be an int or None, got {nbytes!r}")
        if not 0 <= nbytes < 2**31:
            raise ValueError(f"nbytes must be in [0, 2**31), got {nbytes}")
    _chosen = True
    if nbytes is not None:
        return _set_top_pad(nbytes)
    if _applied is None:
        return False
    changed = _set_top_pad(GLIBC_DEFAULTS, GLIBC_DEFAULTS)
    _applied = None
    return changed


def heap_retention() -> int | None:
    """The ``M_TOP_PAD`` the library has set in this process and not undone, or None."""
    return _applied


def retain_freed_memory() -> None:
    """Sets :data:`DEFAULT_RETENTION` once per process (called as a training or an attack starts).

    Does nothing once :func:`set_heap_retention` has been called: the user's choice stands.
    """
    if not _chosen and _applied is None:
        _set_top_pad(DEFAULT_RETENTION)
