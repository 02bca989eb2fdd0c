"""uae-augment: MINE-based (unsupervised) adversarial examples as data augmentation."""

from __future__ import annotations

import logging

from .attacks import (
    BIM,
    FGSM,
    IFGSM,
    LBFGS,
    MINEUAE,
    PGD,
    PRESETS,
    Attack,
    AttackResult,
    BySampler,
    GaussianNoise,
    LpUAE,
    MinMaxAttack,
    PenaltyAttack,
)
from .contrastive import Contrastive, SimCLRViews
from .criteria import ClassifierMargin, Criterion, Reconstruction
from .data import (
    CacheError,
    UAEAugmented,
    UAECache,
    UAETransform,
    available_datasets,
    load_dataset,
    precompute,
    random_subset,
)
from .mine import estimate_mi, per_sample_mi
from .models import Normalized
from .training import FitHistory, fit

__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = [
    "Attack",
    "AttackResult",
    "BIM",
    "CacheError",
    "ClassifierMargin",
    "Contrastive",
    "Criterion",
    "FGSM",
    "FitHistory",
    "GaussianNoise",
    "IFGSM",
    "LBFGS",
    "LpUAE",
    "MINEUAE",
    "MinMaxAttack",
    "Normalized",
    "PGD",
    "PRESETS",
    "BySampler",
    "PenaltyAttack",
    "Reconstruction",
    "SimCLRViews",
    "UAEAugmented",
    "UAECache",
    "UAETransform",
    "available_datasets",
    "estimate_mi",
    "fit",
    "load_dataset",
    "per_sample_mi",
    "precompute",
    "random_subset",
    "__version__",
]
