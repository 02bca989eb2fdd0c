"""Reference models of the release (SPEC.md section 5) and their training protocol."""

from .autoencoders import ConvAutoencoder
from .base import FitSettings, ReferenceModel, Trainable

__all__ = [
    "ConvAutoencoder",
    "FitSettings",
    "ReferenceModel",
    "Trainable",
]
