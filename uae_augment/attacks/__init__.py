"""Attacks: MINE MinMax (supervised and unsupervised), baselines and gradient attacks."""

from .base import Attack
from .minmax import MINEUAE, PRESETS, MinMaxAttack
from .noise import GaussianNoise
from .result import AttackResult

__all__ = ["Attack", "AttackResult", "GaussianNoise", "MINEUAE", "MinMaxAttack", "PRESETS"]
