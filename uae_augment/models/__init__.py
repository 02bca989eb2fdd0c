"""Reference models of the release (docs/method.md section 5), their training protocol, and ``Normalized``."""

import importlib
import warnings
from typing import Any

from .._model_state import model_device
from .autoencoders import (
    AdversarialAutoencoder,
    ConvAutoencoder,
    DenseAutoencoder,
    SparseAutoencoder,
)
from .base import FitSettings, ReferenceModel, Trainable
from .classifiers import (
    CW_CIFAR_WIDTHS,
    CW_MNIST_WIDTHS,
    CWClassifier,
    LeNet,
    MLPClassifier,
    cw_cifar,
    cw_mnist,
)
from .concrete import ConcreteAutoencoder, ConcreteSelector
from .normalized import Normalize, Normalized
from .registry import MODELS, available_models, build_model

__all__ = [
    "AdversarialAutoencoder",
    "CIFARResNet18",
    "CWClassifier",
    "CW_CIFAR_WIDTHS",
    "CW_MNIST_WIDTHS",
    "ConcreteAutoencoder",
    "ConcreteSelector",
    "ConvAutoencoder",
    "DenseAutoencoder",
    "FitSettings",
    "LeNet",
    "MLPClassifier",
    "MODELS",
    "Normalize",
    "Normalized",
    "ReferenceModel",
    "SimCLR",
    "SparseAutoencoder",
    "Trainable",
    "available_models",
    "build_model",
    "cw_cifar",
    "cw_mnist",
    "model_device",
    "simclr_resnet18",
]

_SIMCLR = (
    "CIFARResNet18",
    "SimCLR",
    "simclr_resnet18",
)  # torchvision and lightly load on first use
_MOVED_TO_TRAINING = ("ConcreteFit", "fit_concrete")  # deprecated here for one release


def __getattr__(name: str) -> Any:
    if name in _SIMCLR:
        from . import simclr

        return getattr(simclr, name)
    if name in _MOVED_TO_TRAINING:
        warnings.warn(
            f"uae_augment.models.{name} is deprecated; import it from uae_augment.training",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(importlib.import_module("uae_augment.training"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
