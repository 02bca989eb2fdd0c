"""Reference models of the release (SPEC.md section 5) and their training protocol."""

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
from .concrete import ConcreteAutoencoder, ConcreteFit, ConcreteSelector, fit_concrete
from .registry import MODELS, available_models, build_model

__all__ = [
    "AdversarialAutoencoder",
    "CWClassifier",
    "CW_CIFAR_WIDTHS",
    "CW_MNIST_WIDTHS",
    "ConcreteAutoencoder",
    "ConcreteFit",
    "ConcreteSelector",
    "ConvAutoencoder",
    "DenseAutoencoder",
    "FitSettings",
    "LeNet",
    "MLPClassifier",
    "MODELS",
    "ReferenceModel",
    "SparseAutoencoder",
    "Trainable",
    "available_models",
    "build_model",
    "cw_cifar",
    "cw_mnist",
    "fit_concrete",
]
