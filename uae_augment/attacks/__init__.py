"""Attacks: MINE MinMax (supervised and unsupervised), baselines and gradient attacks."""

from .base import Attack
from .gradient import BIM, FGSM, IFGSM, PGD, ClassifierAttack
from .lbfgs import LBFGS
from .lp_uae import LpUAE
from .minmax import MINEUAE, PRESETS, BySampler, MinMaxAttack, MinMaxSettings
from .noise import GaussianNoise
from .penalty import PenaltyAttack
from .result import AttackResult

__all__ = [
    "Attack",
    "AttackResult",
    "BIM",
    "ClassifierAttack",
    "FGSM",
    "GaussianNoise",
    "IFGSM",
    "LBFGS",
    "LpUAE",
    "MINEUAE",
    "MinMaxAttack",
    "MinMaxSettings",
    "PGD",
    "PRESETS",
    "BySampler",
    "PenaltyAttack",
]
