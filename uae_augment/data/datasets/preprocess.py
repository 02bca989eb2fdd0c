"""How a data set is scaled: fits on the training rows that map raw rows to float32 samples in [0, 1]."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .spec import COIL20_SIDE, DatasetFormatError, _Preprocess


def _fit_pixels(max_value: float) -> Callable[..., _Preprocess]:
    """Stateless: pixels / max_value; (N, H, W) -> (N, 1, H, W), (N, H, W, 3) -> (N, 3, H, W)."""

    def fit(x_train: np.ndarray, y_train: np.ndarray) -> _Preprocess:
        def preprocess(x: np.ndarray, y: np.ndarray) -> torch.Tensor:
            pixels = torch.from_numpy(np.ascontiguousarray(x))
            images = pixels.unsqueeze(1) if pixels.dim() == 3 else pixels.permute(0, 3, 1, 2)
            return images.to(torch.float32).div_(max_value).clamp_(0.0, 1.0).contiguous()

        return preprocess

    return fit


def _min_max_transform(x_train: np.ndarray) -> Callable[[np.ndarray], torch.Tensor]:
    """Per-feature min-max scaling fitted on ``x_train`` (NaN ignored); constant features -> 0."""
    low = np.nanmin(x_train.astype(np.float64), axis=0)
    span = np.nanmax(x_train.astype(np.float64), axis=0) - low
    span[~(span > 0)] = 1.0

    def transform(x: np.ndarray) -> torch.Tensor:
        scaled = np.clip((x.astype(np.float64) - low) / span, 0.0, 1.0)
        return torch.from_numpy(scaled.astype(np.float32))

    return transform


def _fit_min_max(x_train: np.ndarray, y_train: np.ndarray) -> _Preprocess:
    transform = _min_max_transform(x_train)
    return lambda x, y: transform(x)


def _fit_class_mean_min_max(x_train: np.ndarray, y_train: np.ndarray) -> _Preprocess:
    """Fills NaN with the training mean of the sample's class, then min-max scales.

    A class whose training rows miss a feature entirely falls back to the
    feature's training mean over all classes.
    """
    features = x_train.astype(np.float64)
    overall = _nanmean(features)
    if np.isnan(overall).any():
        raise DatasetFormatError(
            f"feature(s) {np.flatnonzero(np.isnan(overall)).tolist()} are missing in every training row"
        )
    class_means = {}
    for label in np.unique(y_train):
        means = _nanmean(features[y_train == label])
        class_means[int(label)] = np.where(np.isnan(means), overall, means)

    def impute(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        filled = x.astype(np.float64)
        for row in np.flatnonzero(np.isnan(filled).any(axis=1)):
            means = class_means.get(int(y[row]), overall)
            gaps = np.isnan(filled[row])
            filled[row, gaps] = means[gaps]
        return filled

    transform = _min_max_transform(impute(features, y_train))
    return lambda x, y: transform(impute(x, y))


def _nanmean(x: np.ndarray) -> np.ndarray:
    """Column means ignoring NaN; NaN (without a warning) for an all-NaN column."""
    present = ~np.isnan(x)
    counts = present.sum(axis=0)
    sums = np.where(present, x, 0.0).sum(axis=0)
    return np.divide(sums, counts, out=np.full(x.shape[1], np.nan), where=counts > 0)


def _check_coil20_options(*, size: int, as_image: bool, **others: Any) -> None:
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or not 1 <= size <= COIL20_SIDE:
        raise ValueError(f"coil20 option size must be an int in [1, {COIL20_SIDE}], got {size!r}")
    if not isinstance(as_image, bool):
        raise ValueError(f"coil20 option as_image must be a bool, got {as_image!r}")


def _fit_coil20(x_train: np.ndarray, y_train: np.ndarray, *, size: int, as_image: bool) -> _Preprocess:
    """Stateless: column-major rows -> upright images, resized to size x size (antialiased bilinear)."""

    def preprocess(x: np.ndarray, y: np.ndarray) -> torch.Tensor:
        upright = x.reshape(-1, COIL20_SIDE, COIL20_SIDE).transpose(0, 2, 1)
        images = torch.from_numpy(np.ascontiguousarray(upright, dtype=np.float32)).unsqueeze(1)
        if size != COIL20_SIDE:
            images = F.interpolate(images, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        images = images.clamp_(0.0, 1.0).contiguous()
        return images if as_image else images.flatten(1)

    return preprocess
