"""The one check of a training step's returned values, shared by the training loops."""

from __future__ import annotations

import math


def check_step_values(values: object, owner: str, where: str) -> dict[str, float]:
    """Returns a step's values as floats after checking their ``"loss"`` is finite.

    Args:
        values: what the training step returned (a dict with a ``"loss"`` entry).
        owner: who returned it, for messages (e.g. ``"ConvAutoencoder.training_step"``).
        where: the step's place in the loop, for messages (e.g. ``"at step 3"``).

    Raises:
        TypeError: if ``values`` is not a dict with a ``"loss"`` entry.
        FloatingPointError: if the loss is NaN or infinite.
    """
    if not isinstance(values, dict) or "loss" not in values:
        raise TypeError(f"{owner} must return a dict with a 'loss' entry, got {values!r}")
    floats = {key: float(value) for key, value in values.items()}
    if not math.isfinite(floats["loss"]):
        raise FloatingPointError(f"training loss of {owner} became {floats['loss']} {where}")
    return floats
