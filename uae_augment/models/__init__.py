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

__all__ = [
    "CW_CIFAR_WIDTHS",
    "CW_MNIST_WIDTHS",
    "CWClassifier",
    "LeNet",
    "MLPClassifier",
    "cw_cifar",
    "cw_mnist",
    "AdversarialAutoencoder",
    "ConcreteAutoencoder",
    "ConcreteFit",
    "ConcreteSelector",
    "ConvAutoencoder",
    "DenseAutoencoder",
    "SparseAutoencoder",
    "FitSettings",
    "ReferenceModel",
    "Trainable",
    "fit_concrete",
]
