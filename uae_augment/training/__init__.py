"""Training: :func:`fit` (a model's own protocol), adversarial-training steps, the concrete-AE retry rule."""

from ..models.base import FitSettings
from .adversarial import (
    InputNormalization,
    StepFn,
    clean_step,
    fgsm_augment_epoch,
    goodfellow_step,
    kurakin_step,
    madry_step,
    train_epoch,
)
from .concrete import MEAN_MAX_TARGET, ConcreteFit, fit_concrete
from .fit import FitHistory, fit

__all__ = [
    "MEAN_MAX_TARGET",
    "ConcreteFit",
    "FitHistory",
    "FitSettings",
    "InputNormalization",
    "StepFn",
    "clean_step",
    "fgsm_augment_epoch",
    "fit",
    "fit_concrete",
    "goodfellow_step",
    "kurakin_step",
    "madry_step",
    "train_epoch",
]
