"""Input checks shared by attacks, criteria, models and data utilities.

Every public entry point validates its arguments here so that bad input fails
early with a message naming the problem instead of producing a silent wrong
result deep inside an optimisation loop.

This module sits at the bottom of the package and imports nothing from it
(the attack type check, which needs the :class:`~uae_augment.attacks.Attack`
class, lives beside it in ``attacks/base.py``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.utils.data import get_worker_info

_CONV_SAMPLE_AXES = {
    nn.Conv1d: "(C, L)",
    nn.Conv2d: "(C, H, W)",
    nn.Conv3d: "(C, D, H, W)",
    nn.ConvTranspose1d: "(C, L)",
    nn.ConvTranspose2d: "(C, H, W)",
    nn.ConvTranspose3d: "(C, D, H, W)",
}
_DENSE_INPUT_LAYERS = (nn.Linear, nn.Flatten, nn.Bilinear, nn.Embedding)


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
        raise ValueError(f"{name} must have shape (N, ...) with rank >= {min_rank}, got shape {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise ValueError(f"{name} is empty: got shape {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        bad = int((~torch.isfinite(x)).sum())
        raise ValueError(f"{name} contains {bad} NaN/Inf values")
    low, high = float(x.min()), float(x.max())
    if low < 0.0 or high > 1.0:
        raise ValueError(f"{name} must lie in [0, 1] (normalise after the attack), found range [{low:.4g}, {high:.4g}]")
    return x


_LOW_PRECISION = (torch.float16, torch.bfloat16)


def check_precision(x: torch.Tensor, models: Sequence[nn.Module]) -> None:
    """Raises ValueError on float16 / bfloat16 inputs or model parameters.

    Attacks keep their state (perturbations, MINE networks, constraints) in
    float32: half-precision compute goes through ``torch.autocast`` instead,
    which leaves the inputs and the model's parameters in float32.
    """
    found = [f"x is {x.dtype}"] if x.dtype in _LOW_PRECISION else []
    for model in models:
        dtypes = {p.dtype for p in model.parameters() if p.dtype in _LOW_PRECISION}
        found += [f"{type(model).__name__} has {dtype} parameters" for dtype in sorted(dtypes, key=str)]
    if found:
        raise ValueError(
            f"attacks run in float32 but {', '.join(found)}; keep inputs and models in float32 and wrap the"
            " call in torch.autocast(device_type, dtype=torch.bfloat16) for low-precision model compute"
        )


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


def positive_int(value: object, name: str) -> int:
    """Returns ``value`` if it is a positive int (bools excluded).

    Raises:
        ValueError: otherwise, naming ``name`` and the value found.
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def normalise_shape(input_shape: object, *, name: str = "input_shape") -> tuple[int, ...]:
    """Returns ``input_shape`` (an int or a sequence of positive ints) as a tuple.

    Raises:
        TypeError: if it is not an int or a sequence of ints.
        ValueError: if it is empty or holds a non-positive entry.
    """
    if isinstance(input_shape, int) and not isinstance(input_shape, bool):
        input_shape = (input_shape,)
    if not isinstance(input_shape, Sequence) or isinstance(input_shape, str):
        raise TypeError(f"{name} must be a tuple of ints such as (1, 28, 28) or (617,), got {input_shape!r}")
    shape = tuple(input_shape)
    if not shape or any(isinstance(s, bool) or not isinstance(s, int) for s in shape):
        raise TypeError(f"{name} must be a non-empty tuple of ints, got {input_shape!r}")
    if any(s < 1 for s in shape):
        raise ValueError(f"{name} must hold positive sizes, got {shape}")
    return shape


def check_probability(p: float, name: str = "p") -> float:
    """Returns ``p`` as a float after checking that it is a number in [0, 1].

    Raises:
        TypeError: if ``p`` is not a real number.
        ValueError: if ``p`` is NaN or outside [0, 1].
    """
    if isinstance(p, bool) or not isinstance(p, (int, float)):
        raise TypeError(f"{name} must be a probability (a float in [0, 1]), got {type(p).__name__}")
    if not 0.0 <= float(p) <= 1.0:
        raise ValueError(f"{name} must lie in [0, 1], got {p}")
    return float(p)


def ensure_main_process(what: str, alternative: str) -> None:
    """Raises RuntimeError when called inside a DataLoader worker process.

    Args:
        what: what was attempted, e.g. ``"UAETransform"``.
        alternative: what to do instead (appended to the message).

    Raises:
        RuntimeError: inside a ``torch.utils.data`` worker.
    """
    worker = get_worker_info()
    if worker is not None:
        raise RuntimeError(
            f"{what} cannot run inside DataLoader worker {worker.id} (of {worker.num_workers}):"
            " attacks need the model and gradients and must run in the main process."
            f" {alternative}"
        )


def expected_sample_shape(model: nn.Module) -> tuple[str, int] | None:
    """What one sample for ``model`` looks like: (description, rank), or None when it cannot tell.

    ``model.input_shape`` when the model declares it (the reference models do),
    else the model's input layer: ``model.first_layer`` when declared (None
    declares a dense model), otherwise the first convolution, linear, flatten
    or embedding layer in module order. A convolution fixes the sample rank
    (Conv2d: (C, H, W)); a dense input layer does not (None).
    """
    declared_shape = getattr(model, "input_shape", None)
    if isinstance(declared_shape, tuple) and all(isinstance(size, int) for size in declared_shape):
        return str(declared_shape), len(declared_shape)
    declared_layer = getattr(model, "first_layer", model)
    if not isinstance(declared_layer, nn.Module):
        return None
    for layer in declared_layer.modules():
        if type(layer) in _CONV_SAMPLE_AXES:
            axes = _CONV_SAMPLE_AXES[type(layer)]
            return f"{axes} (its first layer is a {type(layer).__name__})", axes.count(",") + 1
        if isinstance(layer, _DENSE_INPUT_LAYERS):
            return None
    return None


def check_batch_rank(x: torch.Tensor, model: nn.Module | None, *, name: str = "x") -> None:
    """Checks that ``x`` is a batch (N, *sample) of the samples ``model`` expects, before it runs.

    Catches a single sample passed without its batch axis (x of shape (1, 28, 28)
    for a Conv2d model) instead of leaving it to torch's convolution errors.

    Raises:
        ValueError: if ``x``'s rank is not 1 + the sample rank the model expects
            (see :func:`expected_sample_shape`); nothing is checked when the model
            does not tell, or when there is no model (``None``: an attack without one).
    """
    if model is None:
        return
    expected = expected_sample_shape(model)
    if expected is None or x.dim() == expected[1] + 1:
        return
    description, sample_rank = expected
    shape = tuple(x.shape)
    if x.dim() == sample_rank:
        raise ValueError(
            f"{name} is missing its batch axis: got shape {shape}, but {type(model).__name__} takes"
            f" batches (N, ...) of samples {description}; pass {name}[None] / {name}.unsqueeze(0) for one sample"
        )
    raise ValueError(
        f"{name} must be a batch (N, ...) of rank {sample_rank + 1} for {type(model).__name__}, whose"
        f" samples are {description}; got shape {shape}"
    )
