"""Deprecated alias of :mod:`uae_augment.training.adversarial` (kept for one release)."""

import warnings

from .training.adversarial import (  # noqa: F401  (the old names)
    InputNormalization,
    StepFn,
    __all__,
    clean_step,
    fgsm_augment_epoch,
    goodfellow_step,
    kurakin_step,
    madry_step,
    train_epoch,
)

warnings.warn(
    "uae_augment.adversarial_training is deprecated; import from uae_augment.training"
    " (or uae_augment.training.adversarial)",
    DeprecationWarning,
    stacklevel=2,
)
