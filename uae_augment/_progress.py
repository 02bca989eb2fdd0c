"""Progress bars and the one time-estimate rule of every long-running call.

Every call that can run for more than a few seconds (an attack: per chunk, or
per iteration for the MinMax attacks; :func:`~uae_augment.data.cache.precompute`,
:class:`~uae_augment.data.UAEAugmented`'s generation, :func:`~uae_augment.fit`)
shows a tqdm bar that moves once per batch and, through :class:`Progress`, logs
an estimate of its total time after its first batch: at INFO, or at WARNING when
the estimate exceeds :data:`LONG_RUN_SECONDS` (with a hint to use the ``fast``
preset when the ``paper`` preset runs). Attacks default to the automatic mode of
:func:`auto_options`: no second bar under another one, nothing for short calls.
"""

from __future__ import annotations

import contextvars
import logging
import sys
import time
from typing import Any

from tqdm.auto import tqdm

logger = logging.getLogger(__name__)

LONG_RUN_SECONDS = 30 * 60
"""Estimated totals above this are logged as a WARNING."""

SLOW_CALL_SECONDS = 5.0
"""Single calls that take longer than this log their time at INFO (see :func:`log_duration`);
an automatic bar (:func:`auto_options`) logs its estimate only when it exceeds this."""

AUTO_DELAY_SECONDS = 2.0
"""An automatic bar (:func:`auto_options`) is drawn only once its call has run this long."""

_OPEN_BARS: contextvars.ContextVar[int] = contextvars.ContextVar("uae_augment_open_bars", default=0)

PAPER_HINT = (
    "the 'paper' preset runs the release's 20 MINE steps per iteration; preset='fast' costs a"
    " fraction of it (the README compares the two)"
)


def format_seconds(seconds: float) -> str:
    """``seconds`` (>= 0) as a short human-readable duration, e.g. ``"1 h 05 min"``, ``"42 s"``."""
    seconds = max(0.0, float(seconds))
    if seconds < 60:
        return f"{seconds:.1f} s" if seconds < 10 else f"{seconds:.0f} s"
    minutes = int(round(seconds / 60))
    if minutes < 60:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60:02d} min"


def log_duration(log: logging.Logger, seconds: float, message: str, *args: Any) -> None:
    """Logs ``message % args`` plus `` in <seconds>``: at INFO when the call took longer than
    :data:`SLOW_CALL_SECONDS`, else at DEBUG (per-call work with no bar of its own)."""
    level = logging.INFO if seconds > SLOW_CALL_SECONDS else logging.DEBUG
    log.log(level, message + " in %s", *args, format_seconds(seconds))


def inside_progress() -> bool:
    """Whether the caller runs inside a :class:`Progress` context (enabled or not): a
    ``precompute``, ``UAEAugmented`` or ``fit`` call that reports progress itself."""
    return _OPEN_BARS.get() > 0


def auto_options(progress: bool | None) -> dict[str, Any]:
    """:class:`Progress` options for a ``progress=`` argument that may be None (automatic).

    ``True``/``False`` show or hide the bar and the estimate. ``None`` shows them
    unless the call runs inside another :class:`Progress` (:func:`inside_progress`),
    so work nested in ``precompute``/``UAEAugmented`` adds no second bar; the bar is
    drawn only after :data:`AUTO_DELAY_SECONDS` and the estimate logged only when it
    exceeds :data:`SLOW_CALL_SECONDS`, so sub-second calls print nothing.
    """
    if progress is None:
        return {
            "enabled": not inside_progress(),
            "quiet_below": SLOW_CALL_SECONDS,
            "delay": AUTO_DELAY_SECONDS,
        }
    return {"enabled": bool(progress)}


def estimate_total(elapsed: float, done: int, total: int) -> float:
    """The total time in seconds of ``total`` units when ``done`` (> 0) took ``elapsed`` seconds.

    Raises:
        ValueError: when ``done`` is not in [1, total].
    """
    if not 0 < done <= total:
        raise ValueError(f"done must lie in [1, total={total}], got {done}")
    return elapsed * total / done


class Progress:
    """A tqdm bar plus the time estimate logged after the first batch.

    Use as a context manager and call :meth:`update` once per batch with the
    units it completed. After the first update that leaves work to do, logs
    ``"<desc>: about <T> in total (<t> for the first <k> of <n> <unit>s)"`` to
    ``log`` at INFO, or at WARNING when the estimate exceeds
    :data:`LONG_RUN_SECONDS` (plus :data:`PAPER_HINT` when ``preset`` is
    ``"paper"``). Nothing is logged when the first batch finishes the work.

    Args:
        total: units of work (>= 0).
        desc: the bar's label, also the start of the log line.
        unit: the name of one unit (``"sample"``, ``"row"``, ``"step"``).
        enabled: show the bar and log the estimate (the callers' ``progress=``).
        initial: units already done before this run (a resume); not timed.
        preset: the attack preset, when one runs (``"paper"`` adds the hint).
        log: the logger of the estimate (default: this module's).
        quiet_below: estimates of fewer seconds are not logged (default 0: all are).
        **bar_options: passed to ``tqdm`` (e.g. ``leave=False``).
    """

    def __init__(
        self,
        total: int,
        desc: str,
        *,
        unit: str,
        enabled: bool = True,
        initial: int = 0,
        preset: str | None = None,
        log: logging.Logger | None = None,
        quiet_below: float = 0.0,
        **bar_options: Any,
    ) -> None:
        self.total = int(total)
        self.desc = desc
        self.unit = unit
        self.enabled = bool(enabled)
        self.initial = int(initial)
        self.preset = preset
        self.log = log or logger
        self.quiet_below = float(quiet_below)
        self.done = self.initial
        self.estimate: float | None = None
        self.bar = tqdm(
            total=self.total,
            initial=self.initial,
            desc=desc,
            unit=unit,
            disable=not self.enabled,
            **bar_options,
        )
        self._start = time.perf_counter()

    def __enter__(self) -> Progress:
        self._token = _OPEN_BARS.set(_OPEN_BARS.get() + 1)
        return self

    def __exit__(self, *exc_info: object) -> None:
        _OPEN_BARS.reset(self._token)
        self.close()

    def close(self) -> None:
        """Closes the bar."""
        self.bar.close()

    def set_postfix(self, **values: Any) -> None:
        """Shows ``values`` after the bar (see ``tqdm.set_postfix``)."""
        self.bar.set_postfix(**values)

    def update(self, count: int) -> None:
        """Records ``count`` more units done (one call per batch)."""
        if count <= 0:
            return
        self.bar.update(count)
        self.done += count
        if self.estimate is None and self.enabled and self.done < self.total:
            self._log_estimate(time.perf_counter() - self._start)

    def _log_estimate(self, elapsed: float) -> None:
        timed = self.done - self.initial
        self.estimate = estimate_total(elapsed, timed, self.total - self.initial)
        if self.estimate < self.quiet_below:
            return
        level = logging.WARNING if self.estimate > LONG_RUN_SECONDS else logging.INFO
        message = "%s: about %s in total (%s for the first %d of %d %ss)"
        args: list[Any] = [
            self.desc,
            format_seconds(self.estimate),
            format_seconds(elapsed),
            timed,
            self.total - self.initial,
            self.unit,
        ]
        if level == logging.WARNING and self.preset == "paper":
            message += "; %s"
            args.append(PAPER_HINT)
        self.log.log(level, message, *args)


class TqdmLoggingHandler(logging.StreamHandler):
    """A stream handler that writes through ``tqdm.write``: a log line clears the progress
    bars on its stream, is written on a line of its own, and the bars are redrawn below it."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=self.stream)
        except Exception:  # noqa: BLE001 - logging must never raise (logging.Handler convention)
            self.handleError(record)


def configure_logging(level: int, fmt: str) -> None:
    """Sends the root logger's records at ``level`` and above to stderr through
    :class:`TqdmLoggingHandler` (used by the CLI and the recipes)."""
    handler = TqdmLoggingHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(fmt))
    logging.basicConfig(level=level, handlers=[handler])
