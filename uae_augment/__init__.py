"""uae-augment: MINE-based (unsupervised) adversarial examples as data augmentation.

The public names are imported lazily (PEP 562), on first access: ``import
uae_augment`` and the ``uae-augment --help`` command do not import torch.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
from typing import TYPE_CHECKING, Any

from ._version import __version__

if TYPE_CHECKING:
    from ._heap import heap_retention, set_heap_retention
    from ._progress import configure_logging
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
    from .contrastive import Contrastive
    from .criteria import ClassifierMargin, Criterion, Reconstruction
    from .data import (
        CacheError,
        MatchedNoise,
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
    from .views import SimCLRViews

_LAZY = {
    **dict.fromkeys(
        (
            "BIM",
            "FGSM",
            "IFGSM",
            "LBFGS",
            "MINEUAE",
            "PGD",
            "PRESETS",
            "Attack",
            "AttackResult",
            "BySampler",
            "GaussianNoise",
            "LpUAE",
            "MinMaxAttack",
            "PenaltyAttack",
        ),
        ".attacks",
    ),
    "Contrastive": ".contrastive",
    "configure_logging": "._progress",
    **dict.fromkeys(("heap_retention", "set_heap_retention"), "._heap"),
    **dict.fromkeys(("ClassifierMargin", "Criterion", "Reconstruction"), ".criteria"),
    **dict.fromkeys(
        (
            "CacheError",
            "MatchedNoise",
            "UAEAugmented",
            "UAECache",
            "UAETransform",
            "available_datasets",
            "load_dataset",
            "precompute",
            "random_subset",
        ),
        ".data",
    ),
    **dict.fromkeys(("estimate_mi", "per_sample_mi"), ".mine"),
    "Normalized": ".models",
    **dict.fromkeys(("FitHistory", "fit"), ".training"),
    "SimCLRViews": ".views",
}


def __getattr__(name: str) -> Any:
    """Imports the public name (or the submodule) ``name`` on first access."""
    module = _LAZY.get(name)
    if module is None:
        if name.startswith("_") or importlib.util.find_spec(f"{__name__}.{name}") is None:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        return importlib.import_module(f".{name}", __name__)
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


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
    "MatchedNoise",
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
    "configure_logging",
    "estimate_mi",
    "fit",
    "heap_retention",
    "load_dataset",
    "per_sample_mi",
    "precompute",
    "random_subset",
    "set_heap_retention",
    "__version__",
]
