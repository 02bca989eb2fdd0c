"""Figures people would rather look at than read: example grids and training curves.

All functions write a PNG with matplotlib's non-interactive Agg backend and
return the path; they never open a window.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402


def _as_picture(sample: torch.Tensor) -> np.ndarray:
    """(C, H, W), (H, W) or (D,) -> an (H, W) or (H, W, 3) array for imshow."""
    array = sample.detach().float().cpu().numpy()
    if array.ndim == 3 and array.shape[0] == 1:
        return array[0]
    if array.ndim == 3 and array.shape[0] == 3:
        return np.transpose(array, (1, 2, 0))
    if array.ndim == 3:
        return array.mean(axis=0)
    if array.ndim == 1:
        side = math.isqrt(array.size)
        return array.reshape(side, side) if side * side == array.size else array[None, :]
    return array


def perturbation_picture(delta: torch.Tensor, amplify: float | None = None) -> torch.Tensor:
    """Maps perturbations (N, ...) to [0, 1] for display: 0.5 + amplify * delta, clipped.

    With ``amplify=None`` the factor is chosen so the largest |delta| of the
    batch reaches the edge of the range (0.5 / max|delta|).
    """
    if amplify is None:
        peak = float(delta.abs().max())
        amplify = 0.5 / peak if peak > 0 else 1.0
    return (0.5 + amplify * delta).clamp(0.0, 1.0)


def save_image_grid(
    rows: Mapping[str, torch.Tensor],
    path: str | Path,
    *,
    max_columns: int = 12,
    title: str | None = None,
) -> Path:
    """Writes a grid with one row per named batch (e.g. clean | UAE | perturbation).

    Args:
        rows: ordered mapping from a row label to a batch (N, ...) of values in [0, 1];
            every batch shows its first ``max_columns`` samples.
        path: PNG file to write (parent folders are created).
        max_columns: samples shown per row.
        title: optional figure title.

    Returns:
        The path written.

    Raises:
        ValueError: if ``rows`` is empty or a batch is empty.
    """
    if not rows:
        raise ValueError("save_image_grid needs at least one row")
    columns = min(max_columns, min(len(batch) for batch in rows.values()))
    if columns == 0:
        raise ValueError("save_image_grid got an empty batch")
    figure, axes = plt.subplots(
        len(rows), columns, figsize=(1.2 * columns + 1.2, 1.25 * len(rows) + 0.4), squeeze=False
    )
    for row, (label, batch) in enumerate(rows.items()):
        for column in range(columns):
            axis = axes[row][column]
            picture = _as_picture(batch[column])
            axis.imshow(picture, cmap="gray" if picture.ndim == 2 else None, vmin=0.0, vmax=1.0)
            axis.set_xticks([])
            axis.set_yticks([])
        axes[row][0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=9)
    if title:
        figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    return _save(figure, path)


def save_curves(
    curves: Mapping[str, Sequence[float]],
    path: str | Path,
    *,
    xlabel: str = "epoch",
    ylabel: str = "loss",
    title: str | None = None,
    log_y: bool = False,
) -> Path:
    """Writes a line plot with one named curve per entry (e.g. training losses)."""
    if not curves:
        raise ValueError("save_curves needs at least one curve")
    figure, axis = plt.subplots(figsize=(5.5, 3.6))
    for label, values in curves.items():
        axis.plot(np.arange(1, len(values) + 1), list(values), label=label)
    axis.set_xlabel(xlabel)
    axis.set_ylabel(ylabel)
    if log_y:
        axis.set_yscale("log")
    if title:
        axis.set_title(title)
    axis.legend(fontsize=8)
    axis.grid(alpha=0.3)
    figure.tight_layout()
    return _save(figure, path)


def _save(figure: plt.Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
