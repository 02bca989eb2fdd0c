"""Helpers of the recipe tests: read and check the files a recipe run wrote."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import matplotlib.image

REPO = Path(__file__).resolve().parents[2]
PYTHON = sys.executable


def read_results(out: Path) -> dict[str, Any]:
    """The run's results.json (must be strict JSON: no NaN literals)."""

    def reject(name: str) -> None:
        raise AssertionError(f"results.json holds the non-JSON constant {name}")

    return json.loads((out / "results.json").read_text(), parse_constant=reject)


def table_rows(markdown: str) -> list[list[str]]:
    """The body rows of every Markdown table in ``markdown`` (header and separator lines dropped)."""
    rows, previous = [], ""
    for line in markdown.splitlines():
        if line.startswith("| ") and not line.startswith("| ---"):
            if not previous.startswith("|"):
                previous = line  # a header line
                continue
            rows.append([cell.strip() for cell in line.strip("|").split(" | ")])
        previous = line
    return rows


def assert_png(path: Path, min_side: int = 50) -> None:
    """``path`` is a readable PNG image of a plausible size."""
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    image = matplotlib.image.imread(path)
    assert image.shape[0] >= min_side and image.shape[1] >= min_side


def finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)
