"""Attacks: MINE MinMax (supervised and unsupervised), baselines and gradient attacks."""

from .base import Attack
from .lp_uae import LpUAE
from .minmax import MINEUAE, PRESETS, MinMaxAttack
from .noise import GaussianNoise
from .penalty import PenaltyAttack
from .result import AttackResult

__all__ = [
    "Attack",
    "AttackResult",
    "GaussianNoise",
    "LpUAE",
    "MINEUAE",
    "MinMaxAttack",
    "PRESETS",
    "PenaltyAttack",
]
