"""Analysis tools for models and their adversarial examples.

* :mod:`~uae_augment.evaluation.metrics`: predictions and scores (:func:`predict`,
  :func:`accuracy`, :func:`confidence_table`, :func:`reconstruction_error`,
  :func:`distortion`).
* :mod:`~uae_augment.evaluation.transfer`: Szegedy et al.'s transfer matrix with
  matched-noise rows (:func:`transfer_matrix`).
* :mod:`~uae_augment.evaluation.lipschitz`: operator norms and per-layer Lipschitz
  bounds (:func:`operator_norm`, :func:`conv_norm_bound`, :func:`lipschitz_bounds`).
* :mod:`~uae_augment.evaluation.linear_probe`: linear evaluation of a frozen
  backbone (:func:`representations`, :func:`linear_evaluation`).

Every function takes inputs in [0, 1] (the library's convention), evaluates models
in eval mode without gradients and restores the models' modes afterwards (the
linear probe leaves its backbone in eval mode).
"""

from .linear_probe import linear_evaluation, representations
from .lipschitz import LayerBound, LipschitzReport, conv_norm_bound, lipschitz_bounds, operator_norm
from .metrics import (
    ConfidenceTable,
    accuracy,
    confidence_table,
    correctly_classified,
    distortion,
    predict,
    reconstruction_error,
)
from .transfer import TransferMatrix, transfer_matrix

__all__ = [
    "ConfidenceTable",
    "LayerBound",
    "LipschitzReport",
    "TransferMatrix",
    "accuracy",
    "confidence_table",
    "conv_norm_bound",
    "correctly_classified",
    "distortion",
    "linear_evaluation",
    "lipschitz_bounds",
    "operator_norm",
    "predict",
    "reconstruction_error",
    "representations",
    "transfer_matrix",
]
