"""Reference models of the release (SPEC.md section 5) and their training protocol."""

from .autoencoders import (
    AdversarialAutoencoder,
    ConvAutoencoder,
    DenseAutoencoder,
    SparseAutoencoder,
)
from .base import FitSettings, ReferenceModel, Trainable

__all__ = [
    "AdversarialAutoencoder",
    "ConvAutoencoder",
    "DenseAutoencoder",
    "SparseAutoencoder",
    "FitSettings",
    "ReferenceModel",
    "Trainable",
]
