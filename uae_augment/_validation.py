"""Input checks shared by attacks, criteria and data utilities.

Every public entry point validates its tensors here so that bad input fails
early with a message naming the problem instead of producing a silent wrong
result deep inside an optimisation loop.
"""

from __future__ import annotations

import torch


def check_images(x: object, *, name: str = "x", min_rank: int = 2) -> torch.Tensor:
    """Checks that ``x`` is a non-empty float tensor of shape (N, ...) with values in [0, 1].

    Raises:
        TypeError: if ``x`` is not a tensor or not floating point.
        ValueError: if it is empty, has rank below ``min_rank``, holds NaN/Inf,
            or has values outside [0, 1].
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(
            f"{name} must be a floating-point tensor with values in [0, 1], got dtype {x.dtype}"
            " (convert uint8 images with x.float() / 255)"
        )
    if x.dim() < min_rank:
        raise ValueError(
            f"{name} must have shape (N, ...) with rank >= {min_rank}, got shape {tuple(x.shape)}"
        )
    if x.shape[0] == 0:
        raise ValueError(f"{name} is empty: got shape {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        bad = int((~torch.isfinite(x)).sum())
        raise ValueError(f"{name} contains {bad} NaN/Inf values")
    low, high = float(x.min()), float(x.max())
    if low < 0.0 or high > 1.0:
        raise ValueError(
            f"{name} must lie in [0, 1] (normalise after the attack), found range [{low:.4g}, {high:.4g}]"
        )
    return x


def check_labels(
    y: object, n: int, *, required: bool, name: str = "y", device: torch.device | None = None
) -> torch.Tensor | None:
    """Checks optional integer labels of shape (n,); returns them as int64 on ``device``.

    Raises:
        ValueError: if labels are required but missing, or have the wrong shape.
        TypeError: if they are not an integer tensor.
    """
    if y is None:
        if required:
            raise ValueError(f"labels {name} are required by this attack (pass attack(x, y))")
        return None
    if not isinstance(y, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of integer labels, got {type(y).__name__}")
    if y.is_floating_point() or y.dtype == torch.bool or y.is_complex():
        raise TypeError(f"{name} must hold integer class labels, got dtype {y.dtype}")
    if y.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},) to match x, got {tuple(y.shape)}")
    if (y < 0).any():
        raise ValueError(f"{name} holds negative labels")
    return y.to(device=device, dtype=torch.long) if device is not None else y.long()


def resolve_index(index: object, n: int) -> torch.Tensor:
    """Returns global dataset indices (n,) as a CPU int64 tensor; default ``arange(n)``.

    Raises:
        ValueError: on a wrong shape, negative or repeated indices.
        TypeError: if ``index`` is not integer.
    """
    if index is None:
        return torch.arange(n)
    tensor = torch.as_tensor(index)
    if tensor.is_floating_point() or tensor.dtype == torch.bool:
        raise TypeError(f"index must hold integers, got dtype {tensor.dtype}")
    tensor = tensor.to(device="cpu", dtype=torch.long).reshape(-1)
    if tensor.numel() != n:
        raise ValueError(f"index must have {n} entries to match x, got {tensor.numel()}")
    if (tensor < 0).any():
        raise ValueError("index holds negative values")
    if tensor.unique().numel() != n:
        raise ValueError("index holds repeated values; each sample needs its own global index")
    return tensor


def check_positive(value: float, name: str, *, allow_zero: bool = False) -> float:
    """Raises ValueError unless ``value`` is positive (or zero when allowed)."""
    if value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be {bound}, got {value}")
    return value
