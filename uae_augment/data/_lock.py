"""A writer lock file beside a cache: ``<path>.lock``, created with O_CREAT | O_EXCL.

The lock file holds a JSON record of its owner (pid, host, process start time
and a random token). A lock whose owner process is gone (same host, pid not
alive, or alive but started at another time, i.e. a reused pid) is stale and is
taken over; a lock of a live process, or of another host, stops the writer with
:class:`LockHeldError`.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import socket
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

_TAKEOVER_ATTEMPTS = 5


class LockHeldError(RuntimeError):
    """Another live process holds the lock file (raised as ``CacheLockedError`` by the cache)."""


def lock_path(path: Path) -> Path:
    """The lock file of ``path``: ``<path>.lock``."""
    return path.with_name(path.name + ".lock")


def _process_start_time(pid: int) -> str | None:
    """The start time of ``pid`` in clock ticks since boot (Linux), None where unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    fields = stat[stat.rfind(")") + 2 :].split()
    return fields[19] if len(fields) > 19 else None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError as error:  # pragma: no cover - unusual platforms
        return error.errno != errno.ESRCH
    return True


def _owner_record() -> dict[str, Any]:
    pid = os.getpid()
    return {
        "pid": pid,
        "host": socket.gethostname(),
        "start_time": _process_start_time(pid),
        "token": uuid.uuid4().hex,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "argv": sys.argv[:8],
    }


def _read_record(path: Path) -> dict[str, Any] | None:
    """The owner record of an existing lock file; {} if unreadable; None if it vanished."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError:
        return {}
    try:
        record = json.loads(text)
    except ValueError:
        return {}
    return record if isinstance(record, dict) else {}


def _is_stale(record: dict[str, Any]) -> bool:
    """Whether the owner of ``record`` is certainly gone (same host only)."""
    if record.get("host") != socket.gethostname():
        return False
    pid = record.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    if not _pid_alive(pid):
        return True
    recorded, current = record.get("start_time"), _process_start_time(pid)
    return recorded is not None and current is not None and recorded != current


def _describe(record: dict[str, Any]) -> str:
    if not record:
        return "an unreadable lock record"
    return (
        f"pid {record.get('pid')} on host {record.get('host')!r}"
        f" (since {record.get('created', '?')}, command {' '.join(record.get('argv') or [])!r})"
    )


def _take_over(path: Path, stale: dict[str, Any]) -> None:
    """Removes a stale lock, unless another process replaced it meanwhile."""
    aside = path.with_name(f"{path.name}.stale-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return
    if _read_record(aside) == stale:
        aside.unlink(missing_ok=True)
        logger.warning("took over the stale lock %s of %s", path, _describe(stale))
        return
    # Someone else's fresh lock was moved aside: put it back (link fails if the path is taken).
    with contextlib.suppress(FileExistsError):
        os.link(aside, path)
    aside.unlink(missing_ok=True)


def acquire(path: Path) -> dict[str, Any]:
    """Creates the lock file ``<path>.lock`` for this process; returns the owner record.

    Raises:
        LockHeldError: the lock belongs to a live process (or to another host,
            whose processes cannot be checked).
    """
    target = lock_path(path)
    for _ in range(_TAKEOVER_ATTEMPTS):
        record = _owner_record()
        try:
            fd = os.open(target, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            existing = _read_record(target)
            if existing is None:
                continue
            if _is_stale(existing):
                _take_over(target, existing)
                continue
            raise LockHeldError(
                f"{path} is being written by another process: the lock file {target} belongs to"
                f" {_describe(existing)}. Wait for that writer to finish, write to another path,"
                f" or, if no writer is running any more, delete {target}"
            ) from None
        with os.fdopen(fd, "w") as handle:
            json.dump(record, handle)
            handle.flush()
            os.fsync(handle.fileno())
        logger.debug("acquired lock %s", target)
        return record
    raise LockHeldError(f"could not acquire the lock file {target}: it keeps changing owner")


def release(path: Path, record: dict[str, Any]) -> None:
    """Removes ``<path>.lock`` if it still holds ``record`` (never someone else's lock)."""
    target = lock_path(path)
    existing = _read_record(target)
    if existing is not None and existing.get("token") == record.get("token"):
        target.unlink(missing_ok=True)
        logger.debug("released lock %s", target)


@contextlib.contextmanager
def locked(path: Path) -> Iterator[dict[str, Any]]:
    """Holds ``<path>.lock`` inside the block (see :func:`acquire`)."""
    record = acquire(path)
    try:
        yield record
    finally:
        release(path, record)
