"""The recipes' outputs: stage timing, JSON, statistics over seeds, number formats and Markdown tables.

Imported by the recipes as a sibling module (``import _report``), like
:mod:`_config` and :mod:`_protocol`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import platform
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

import uae_augment
from _config import resolved_config
from uae_augment.statistics import paired_difference

logger = logging.getLogger("recipes")

RESULTS_FILE = "results.json"
TABLE_FILE = "results.md"
WALL_TIME_FILE = "wall_time.log"


def environment() -> dict[str, Any]:
    """What the numbers were measured on (versions, CPU count, threads, load)."""
    load = os.getloadavg() if hasattr(os, "getloadavg") else (math.nan,) * 3
    return {
        "uae_augment": uae_augment.__version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "load_average_1_5_15min": [round(v, 2) for v in load],
    }


class StageTimer:
    """Wall time (and this process's CPU time) per named stage, appended to ``wall_time.log``.

    The CPU seconds tell how much of the wall time the recipe really computed:
    on a machine shared with other jobs the wall time is larger.

    Example:
        >>> import tempfile
        >>> timer = StageTimer(Path(tempfile.mkdtemp()) / "wall_time.log")
        >>> with timer.stage("train/conv/seed0"):
        ...     pass
        >>> timer.records[0]["stage"]
        'train/conv/seed0'
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.records: list[dict[str, Any]] = []
        self._start = time.perf_counter()
        self._cpu_start = time.process_time()
        with self.path.open("a") as log:
            log.write(
                f"# run started {time.strftime('%Y-%m-%d %H:%M:%S')}, load {environment()['load_average_1_5_15min']}\n"
            )

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Times the ``with`` block as stage ``name`` (also when it raises)."""
        started, cpu_started = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            seconds = time.perf_counter() - started
            cpu_s = time.process_time() - cpu_started
            self.records.append({"stage": name, "seconds": round(seconds, 3), "cpu_s": round(cpu_s, 3)})
            with self.path.open("a") as log:
                log.write(f"{name}\t{seconds:.2f} s\tcpu {cpu_s:.2f} s\n")
            logger.info("stage %s: %.1f s (cpu %.1f s)", name, seconds, cpu_s)

    @property
    def total_s(self) -> float:
        """Seconds since the timer was created."""
        return time.perf_counter() - self._start

    @property
    def total_cpu_s(self) -> float:
        """CPU seconds of this process since the timer was created."""
        return time.process_time() - self._cpu_start

    def close(self) -> None:
        """Appends the total wall and CPU time and the load average to the log."""
        with self.path.open("a") as log:
            log.write(
                f"total\t{self.total_s:.2f} s\tcpu {self.total_cpu_s:.2f} s\t"
                f"load {environment()['load_average_1_5_15min']}\n"
            )


def write_json(path: Path, data: Any) -> Path:
    """Writes ``data`` as indented JSON; NaN and infinities become null (valid JSON)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_finite(data), indent=2, sort_keys=False) + "\n")
    return path


def write_outputs(
    out: Path,
    recipe: str,
    args: argparse.Namespace,
    timer: StageTimer,
    table: str,
    fields: dict[str, Any],
) -> None:
    """A run's final outputs: ``results.md`` (the table), ``results.json`` and the printed table.

    The JSON holds the recipe's name, the resolved config, the environment, the
    recipe's own ``fields`` and the per-stage wall and CPU time of ``timer``.
    """
    (out / TABLE_FILE).write_text(table)
    write_json(
        out / RESULTS_FILE,
        {
            "recipe": recipe,
            "config": resolved_config(args),
            "environment": environment(),
            **fields,
            "wall_time": {
                "total_s": round(timer.total_s, 2),
                "cpu_s": round(timer.total_cpu_s, 2),
                "stages": timer.records,
            },
        },
    )
    print(table)
    print(f"outputs in {out} (total wall time {timer.total_s:.0f} s)")


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (np.floating, np.integer)):
        return _finite(value.item())
    return value


# --------------------------------------------------------------------------- statistics and tables


def mean_std(values: Sequence[float]) -> dict[str, float | int]:
    """{'mean', 'std', 'n'} of the finite values (sample std, ddof=1; 0 for one value; NaN for none)."""
    finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not finite:
        return {"mean": math.nan, "std": math.nan, "n": 0}
    std = float(np.std(finite, ddof=1)) if len(finite) > 1 else 0.0
    return {"mean": float(np.mean(finite)), "std": std, "n": len(finite)}


def paired_vs_control(
    arm: Sequence[float], control: Sequence[float], *, better: str = "lower"
) -> dict[str, Any] | None:
    """:func:`uae_augment.statistics.paired_difference` of ``arm - control`` per seed, as a dict.

    None with fewer than 2 seeds; ``{"error": message}`` when the statistics are
    undefined (differences of zero variance, a non-finite value).
    """
    if len(arm) < 2:
        return None
    try:
        return paired_difference(arm, control, better=better).to_dict()  # type: ignore[arg-type]
    except ValueError as error:
        return {"error": str(error)}


def format_paired(comparison: Mapping[str, Any] | None, digits: int = 5, scale: float = 1.0) -> str:
    """``'-0.00012 [-0.00020, -0.00004], MDE 0.00009: helps'``; '—' for None, 'undefined' on an error."""
    if comparison is None:
        return "—"
    if "error" in comparison:
        return "undefined (zero variance)" if "zero variance" in comparison["error"] else "undefined"
    low, high, mean, mde = (scale * comparison[k] for k in ("ci_low", "ci_high", "mean", "mde"))
    return f"{mean:+.{digits}f} [{low:+.{digits}f}, {high:+.{digits}f}], MDE {mde:.{digits}f}: {comparison['verdict']}"


def improvement_pct(original: float, new: float) -> float:
    """The paper's "(+x%)": relative reduction of an error, 100 * (original - new) / original."""
    if original is None or new is None or not (math.isfinite(original) and math.isfinite(new)) or original == 0:
        return math.nan
    return 100.0 * (original - new) / original


def format_number(value: float | None, digits: int = 5) -> str:
    """``value`` with ``digits`` decimals; '—' for None/NaN."""
    if value is None or not math.isfinite(value):
        return "—"
    return f"{value:.{digits}f}"


def format_pct(value: float | None, digits: int = 1, *, signed: bool = True) -> str:
    """'+12.3%' (or '12.3%' unsigned); '—' for None/NaN."""
    if value is None or not math.isfinite(value):
        return "—"
    return f"{value:+.{digits}f}%" if signed else f"{value:.{digits}f}%"


def format_stat(stat: Mapping[str, float], digits: int = 5) -> str:
    """'mean ± std' (just the mean for one value); '—' when empty."""
    if not stat or not math.isfinite(stat.get("mean", math.nan)):
        return "—"
    if stat.get("n", 1) > 1:
        return f"{stat['mean']:.{digits}f} ± {stat['std']:.{digits}f}"
    return f"{stat['mean']:.{digits}f}"


def format_stat_change(stat: Mapping[str, float], change: float | None = None, digits: int = 5) -> str:
    """:func:`format_stat` followed by the change in % (:func:`format_pct`) when both are known.

    Example:
        >>> format_stat_change({"mean": 0.5, "std": 0.1, "n": 2}, 12.34, digits=2)
        '0.50 ± 0.10 (+12.3%)'
    """
    text = format_stat(stat, digits)
    if change is not None and math.isfinite(change) and text != "—":
        text += f" ({format_pct(change)})"
    return text


def ours_label(seeds: int, train_size: int) -> str:
    """The "source" cell of our rows in a table beside the paper's: seeds and training rows.

    Example:
        >>> ours_label(3, 60000)
        'ours (3 seeds, 60,000 train rows)'
    """
    return f"ours ({seeds} seed{'s' if seeds > 1 else ''}, {train_size:,} train rows)"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub Markdown table; every row must have as many cells as the header.

    Raises:
        ValueError: on a row of the wrong length.
    """
    for row in rows:
        if len(row) != len(header):
            raise ValueError(f"table row has {len(row)} cells, the header {len(header)}: {row!r}")

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"

    return "\n".join([line(header), line(["---"] * len(header)), *(line(r) for r in rows)])
