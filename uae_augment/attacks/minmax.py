"""The MinMax attack (docs/method.md section 2): supervised MINE attacks and unsupervised UAEs."""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch
from torch import nn

from ..criteria import Criterion
from ..mine import RandomProjectionSampler, Sampler, build_sampler
from ._minmax_loop import (
    SELECTIONS,
    AnalyticMISimilarity,
    LoopSettings,
    MISimilarity,
    initial_delta,
    run_minmax,
)
from .base import Attack
from .result import AttackResult

Mode = Literal["supervised", "unsupervised"]


@dataclass(frozen=True)
class BySampler:
    """A preset value that depends on the MINE sampler mode of the attacked model."""

    feature_maps: float
    random_projection: float

    def resolve(self, sampler_mode: str) -> float:
        """The value for ``sampler_mode`` (``"feature_maps"`` or ``"random_projection"``)."""
        return float(getattr(self, sampler_mode))


_PAPER: dict[str, Any] = {
    "epsilon": 1.0,
    "alpha": 0.01,
    "beta": 0.1,
    "c0": 1e-3,
    "mine_lr": 1.5e-5,
    "gamma_power": 0.25,
    "delta_init": "glorot",
    "delta_update": "gradient",
    "statistics_hidden": 512,
    "steps": {"supervised": 1000, "unsupervised": 40},
    "mine_steps": {"supervised": 1, "unsupervised": 20},
    "batch_size": 16,
}

PRESETS: dict[str, dict[str, Any]] = {
    # The public release's values (IBM/UAE, commit e493de6). Every released script passes
    # epsilon=1.0 (the release's class default is 0.3), so only the [0, 1] box binds.
    "paper": _PAPER,
    # Same function class at a fraction of the cost: the release's branches have no
    # nonlinearity, so Linear(F, 512) -> Linear(512, 10) is one rank-10 map Linear(F, 10);
    # and 5 MINE steps per iteration instead of 20. The single map learns far more slowly
    # per Adam step than the two-layer factorisation, which matters for random-projection
    # samples (dense models): at lr 1.5e-5 its DV estimate stays at its negative start
    # (about -1.1) and no UAE passes the MI > 0 filter. 5e-4 gives a DV rise over the 40
    # iterations like the paper preset's (+1.8 vs +2.2 on a dense AE, mnist-5k).
    "fast": {
        **_PAPER,
        "mine_lr": BySampler(feature_maps=1.5e-5, random_projection=5e-4),
        "statistics_hidden": None,
        "mine_steps": {"supervised": 1, "unsupervised": 5},
        "batch_size": 256,
    },
    # A setting in which the MI term really shapes delta: sign steps on delta and a MINE
    # learning rate at which the statistics network actually learns within the attack.
    # Unsupervised (chosen on tuning images and a tuning evaluator seed,
    # benchmarks/results/mi_shape_tuning.json): sign steps of 0.02 and the kept iterate
    # chosen on one common scale, the lowest cos(x, x') among successful iterates, instead
    # of the warm-started running MINE estimate (which favours the earliest success).
    # Supervised: unchanged (alpha 0.005, running estimate).
    "strong": {
        **_PAPER,
        "statistics_hidden": None,
        "mine_lr": 1e-3,
        "delta_update": "sign",
        "alpha": {"supervised": 0.005, "unsupervised": 0.02},
        "select": {"supervised": "running", "unsupervised": "cosine"},
        "mine_steps": {"supervised": 1, "unsupervised": 5},
        "batch_size": 256,
    },
}

DEFAULT_PRESET: dict[str, str] = {"unsupervised": "fast", "supervised": "paper"}
"""The preset used when none is given. Unsupervised: ``fast``, measured 45x cheaper than
``paper`` with UAEs within 3e-4 of its when it was chosen (README, Presets; ~190x fewer CPU
seconds per image with the engine after #13: 0.230 against 43.8, precompute on MNIST,
``benchmarks/results/precompute_throughput.json``). Supervised: the release's ``paper``."""

_TUNABLE = (
    "epsilon",
    "steps",
    "mine_steps",
    "alpha",
    "beta",
    "c0",
    "mine_lr",
    "gamma_power",
    "delta_init",
    "delta_update",
    "statistics_hidden",
    "batch_size",
)


@dataclass(frozen=True)
class MinMaxSettings:
    """The tunable hyperparameters of one MinMax attack: its preset's values with the overrides applied.

    See :data:`PRESETS` for their meaning and the presets' values.
    """

    epsilon: float
    steps: int
    mine_steps: int
    alpha: float
    beta: float
    c0: float
    mine_lr: float | BySampler
    gamma_power: float
    delta_init: str
    delta_update: str
    statistics_hidden: int | None


def resolve_preset(preset: str, mode: Mode, overrides: dict[str, Any]) -> dict[str, Any]:
    """The preset's values for ``mode`` with explicit (non-None) keyword overrides applied.

    Raises:
        ValueError: on an unknown preset or mode.
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    if mode not in ("supervised", "unsupervised"):
        raise ValueError(f"mode must be 'supervised' or 'unsupervised', got {mode!r}")
    values = {k: (v[mode] if isinstance(v, dict) else v) for k, v in copy.deepcopy(PRESETS[preset]).items()}
    for key, value in overrides.items():
        if value is not None:
            values[key] = value
    return values


class MinMaxAttack(Attack):
    """MINE-based MinMax attack (Hsu et al., AAAI 2022), batched per-sample MINE.

    Supervised: max_delta I(x, x+delta) s.t. f_x <= 0 (adversarial examples that
    stay as similar to x as MINE can tell). Unsupervised (UAE): min_delta
    I(x, x+delta) s.t. f_x <= 0 (samples the model handles no worse than x but
    that are as dissimilar as possible). Both solve the Lagrangian
    L = c f_x -+ I with plain gradient steps on delta (projected onto the
    epsilon-ball and the [0, 1] box), S Adam steps on the per-sample statistics
    network per iteration, and the dual update
    c <- max(0, (1 - beta gamma_t) c + beta f_x), gamma_t = (t+1)^(-gamma_power).

    Presets (explicit keyword arguments override them; the default, ``preset=None``,
    is :data:`DEFAULT_PRESET`: ``"fast"`` unsupervised, ``"paper"`` supervised):

    * ``"paper"``: the release's values: epsilon 1.0, alpha 0.01, beta 0.1,
      c0 1e-3, MINE Adam lr 1.5e-5, T = 1000 / 40 (supervised / unsupervised),
      S = 1 / 20 MINE steps, 512-wide statistics branches, glorot delta_0.
    * ``"fast"``: rank-10 statistics branches (the same function class as the
      release's activation-free 512-wide branches) and S = 5 unsupervised; in
      random-projection mode (dense models) MINE lr 5e-4, because the single
      map learns much more slowly per step than the release's two layers.
    * ``"strong"``: sign steps on delta and MINE lr 1e-3, so the MI term
      measurably shapes delta (with the paper's step sizes delta stays near its
      random initialisation; see ``result.moved_linf``). Unsupervised: steps of
      alpha = 0.02, and the kept iterate is the successful one with the lowest
      cos(x, x') (``select="cosine"``, one scale for every iteration) instead of
      the lowest running MINE estimate, which rises while the network trains and
      so favours the earliest success. Chosen on tuning images and a tuning
      evaluator seed (README, Presets). Supervised: alpha 0.005, running estimate.

    Args:
        criterion: the attack criterion f_x (e.g. ``ClassifierMargin``, ``Reconstruction``).
        mode: ``"supervised"`` or ``"unsupervised"``.
        preset: ``"paper"``, ``"fast"`` or ``"strong"``; None: ``"fast"`` for
            ``mode="unsupervised"``, ``"paper"`` (T = 1000) for ``mode="supervised"``.
        epsilon: L-infinity bound on delta.
        steps: T, attack iterations.
        mine_steps: S, MINE Adam steps per iteration.
        alpha: step size on delta. beta: dual step size. c0: initial c.
        mine_lr: MINE Adam learning rate (a float applies to both sampler modes).
        gamma_power: gamma_t = (t+1)^(-gamma_power) (0.25; the release's SimCLR attack uses 0.5).
        delta_init: ``"glorot"`` (the release's effective init), ``"uniform"`` or ``"zeros"``.
        delta_update: ``"gradient"`` (release), ``"sign"`` or ``"adam"``.
        statistics_hidden: hidden width of the statistics branches (None: rank-10 map).
        sampler: ``"auto"`` (feature maps of the first conv layer when there is one,
            else random projections), ``"feature_maps"`` or ``"random_projection"``.
        feature_layer: overrides the first layer used for feature maps.
        projections, projection_dim: K and the sample length of random-projection mode.
        mi: ``"mine"`` (per-sample MINE, the release) or ``"analytic"``: the exact,
            training-free MI of random-projection pairs, -(p/2) log(1 - cos^2(x, x'))
            with p = ``projection_dim`` (no statistics network; the MINE settings
            are unused; needs ``sampler`` 'auto' or 'random_projection'). None: the
            preset's (``"mine"`` in every preset).
        select: which successful iterate is kept: ``"running"`` (the release: the
            best value of the similarity term at its own iteration) or ``"cosine"``
            (the lowest cos(x, x') unsupervised, the highest supervised; one common
            scale). None: the preset's (``"cosine"`` for unsupervised ``strong``).
        record_history: keep per-iteration MI and f_x traces in the result.
        seed, batch_size, progress: see :class:`~uae_augment.attacks.base.Attack`.

    Attributes:
        settings: the resolved hyperparameters (:class:`MinMaxSettings`: the
            preset's values with the keyword overrides), e.g. ``attack.settings.steps``.

    Example:
        >>> from uae_augment import Reconstruction
        >>> ae = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 1, 3, padding=1), nn.Sigmoid())
        >>> attack = MinMaxAttack(Reconstruction(ae), mode="unsupervised", preset="fast", steps=3)
        >>> attack.settings.steps, attack.settings.mine_steps
        (3, 5)
        >>> result = attack(torch.rand(2, 1, 8, 8))
        >>> result.adversarial.shape, bool((result.adversarial >= 0).all())
        (torch.Size([2, 1, 8, 8]), True)
    """

    _progress_unit = "iteration"

    def __init__(
        self,
        criterion: Criterion,
        mode: Mode = "supervised",
        *,
        preset: str | None = None,
        epsilon: float | None = None,
        steps: int | None = None,
        mine_steps: int | None = None,
        alpha: float | None = None,
        beta: float | None = None,
        c0: float | None = None,
        mine_lr: float | None = None,
        gamma_power: float | None = None,
        delta_init: str | None = None,
        delta_update: str | None = None,
        statistics_hidden: int | None | Literal["preset"] = "preset",
        sampler: str = "auto",
        feature_layer: nn.Module | None = None,
        projections: int = 500,
        projection_dim: int = 128,
        mi: Literal["mine", "analytic"] | None = None,
        select: Literal["running", "cosine"] | None = None,
        record_history: bool = False,
        seed: int = 0,
        batch_size: int | None = None,
        progress: bool | None = None,
    ):
        if not isinstance(criterion, Criterion):
            raise TypeError(f"criterion must be a uae_augment Criterion, got {type(criterion).__name__}")
        overrides = {
            "epsilon": epsilon,
            "steps": steps,
            "mine_steps": mine_steps,
            "alpha": alpha,
            "beta": beta,
            "c0": c0,
            "mine_lr": mine_lr,
            "gamma_power": gamma_power,
            "delta_init": delta_init,
            "delta_update": delta_update,
            "batch_size": batch_size,
        }
        preset = DEFAULT_PRESET.get(mode, "paper") if preset is None else preset
        values = resolve_preset(preset, mode, overrides)
        if statistics_hidden != "preset":
            values["statistics_hidden"] = statistics_hidden
        super().__init__(seed=seed, batch_size=values["batch_size"], progress=progress)
        mi = values.get("mi", "mine") if mi is None else mi
        select = values.get("select", "running") if select is None else select
        _check_settings(values)
        _check_mi(mi, sampler)
        if select not in SELECTIONS:
            raise ValueError(f"select must be one of {SELECTIONS}, got {select!r}")
        if mode == "supervised" and not criterion.requires_labels:
            raise ValueError(f"mode='supervised' needs a labelled criterion, got {type(criterion).__name__}")
        self.criterion = criterion
        self.mode: Mode = mode
        self.preset = preset
        self.settings = MinMaxSettings(**{k: values[k] for k in _TUNABLE if k != "batch_size"})
        self.sampler_kind = sampler
        self.feature_layer = feature_layer
        self.projections = projections
        self.projection_dim = projection_dim
        self.mi = mi
        self.select = select
        self.record_history = record_history
        self.requires_labels = criterion.requires_labels
        self._samplers: dict[tuple[int, ...], Sampler] = {}

    def models(self) -> list[nn.Module]:
        extra = [self.feature_layer] if self.feature_layer is not None else []
        return self.criterion.models() + extra

    def _config(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "preset": self.preset,
            **asdict(self.settings),  # a BySampler learning rate becomes a dict too
            "sampler": self.sampler_kind,
            "projections": self.projections,
            "projection_dim": self.projection_dim,
            **({"mi": self.mi} if self.mi != "mine" else {}),
            **({"select": self.select} if self.select != "running" else {}),
            **self.criterion.config(),
        }

    def sampler_for(self, sample_shape: tuple[int, ...]) -> Sampler:
        """The MINE sampler used for inputs of ``sample_shape`` (built once)."""
        if sample_shape not in self._samplers:
            layer = self.feature_layer if self.feature_layer is not None else self.criterion.feature_layer()
            self._samplers[sample_shape] = build_sampler(
                self.sampler_kind,
                layer,
                sample_shape,
                projections=self.projections,
                projection_dim=self.projection_dim,
                seed=self.seed,
            )
        return self._samplers[sample_shape]

    def loop_settings(self) -> LoopSettings:
        """The loop hyperparameters of this attack."""
        s = self.settings
        return LoopSettings(
            supervised=self.mode == "supervised",
            steps=s.steps,
            epsilon=s.epsilon,
            alpha=s.alpha,
            beta=s.beta,
            gamma_power=s.gamma_power,
            delta_update=s.delta_update,
            record_history=self.record_history,
            select=self.select,
        )

    def similarity(
        self, x: torch.Tensor, index: torch.Tensor, init_round: int = 0
    ) -> MISimilarity | AnalyticMISimilarity:
        """A fresh similarity term for the batch ``x``: per-sample MINE, or the analytic MI."""
        if self.mi == "analytic":
            return AnalyticMISimilarity(x, self.projection_dim)
        sampler = self.sampler_for(tuple(x.shape[1:]))
        lr = self.settings.mine_lr
        return MISimilarity(
            sampler,
            x,
            index,
            seed=self.seed,
            mine_steps=self.settings.mine_steps,
            mine_lr=lr.resolve(sampler.mode) if isinstance(lr, BySampler) else lr,
            hidden=self.settings.statistics_hidden,
            init_round=init_round,
        )

    def _attack_batch(self, x: torch.Tensor, y: torch.Tensor | None, index: torch.Tensor) -> AttackResult:
        with torch.no_grad():
            reference = self.criterion.prepare(x, y, index)
        delta0 = initial_delta(self.settings.delta_init, x, index, self.seed, self.settings.epsilon)
        c0 = torch.full((x.shape[0],), float(self.settings.c0), device=x.device)
        return run_minmax(
            x,
            reference,
            self.criterion,
            self.similarity(x, index),
            delta0,
            c0,
            self.loop_settings(),
            self._advance,
        )

    def _chunk_units(self, rows: int) -> int:
        """The bar counts MinMax iterations: ``steps`` per chunk, one update per iteration."""
        return int(self.settings.steps)


def _check_mi(mi: str, sampler: str) -> None:
    if mi not in ("mine", "analytic"):
        raise ValueError(f"mi must be 'mine' or 'analytic', got {mi!r}")
    if mi == "analytic" and sampler == "feature_maps":
        raise ValueError(
            "mi='analytic' is the closed form of the random-projection sampler; got sampler='feature_maps'"
            " (use sampler='auto' or 'random_projection')"
        )


def _check_settings(values: dict[str, Any]) -> None:
    lr = values["mine_lr"]
    rates = (lr.feature_maps, lr.random_projection) if isinstance(lr, BySampler) else (lr,)
    for key, value in (
        ("epsilon", values["epsilon"]),
        ("alpha", values["alpha"]),
        *(("mine_lr", r) for r in rates),
    ):
        if not value > 0:
            raise ValueError(f"{key} must be > 0, got {value}")
    for key in ("beta", "c0", "gamma_power"):
        if values[key] < 0 or not math.isfinite(values[key]):
            raise ValueError(f"{key} must be a finite value >= 0, got {values[key]}")
    if int(values["steps"]) < 1:
        raise ValueError(f"steps must be >= 1, got {values['steps']}")
    if int(values["mine_steps"]) < 0:
        raise ValueError(f"mine_steps must be >= 0, got {values['mine_steps']}")
    if values["delta_update"] not in ("gradient", "sign", "adam"):
        raise ValueError(f"delta_update must be 'gradient', 'sign' or 'adam', got {values['delta_update']!r}")
    if values["delta_init"] not in ("glorot", "uniform", "zeros"):
        raise ValueError(f"delta_init must be 'glorot', 'uniform' or 'zeros', got {values['delta_init']!r}")
    hidden = values["statistics_hidden"]
    if hidden is not None and int(hidden) < 1:
        raise ValueError(f"statistics_hidden must be >= 1 or None, got {hidden}")


CPU_SECONDS_PER_IMAGE: dict[str, float] = {"paper": 55.0, "fast": 0.22, "strong": 0.21}
"""One-core seconds per 28x28 image of each unsupervised preset (T = 40) against the release's
conv autoencoder, batch 64. Fast and strong: ``benchmarks/results/attack_speed_presets.json``
(0.219 and 0.205, the engine after #13); paper: ``benchmarks/results/attack_speed.json`` (55.1, an
earlier engine; ``precompute_throughput.json`` has 39.2 at batch 8 after #13, so 55 errs long).
These are feature-map (conv victim) figures; see :data:`RANDOM_PROJECTION_COST`."""

RANDOM_PROJECTION_COST = 2.7
"""Cost of a random-projection attack (dense victims) relative to a feature-map one: 8 MNIST digits,
fast preset, 10 iterations, one thread: 1.29 CPU s against the dense AE, 0.47 against the conv AE
(measured after #13; the feature-map engine had become 5x faster, the projection one had not)."""


def estimate_cpu_seconds(attack: MinMaxAttack, rows: int, sample_shape: tuple[int, ...]) -> float:
    """A rough one-core wall-time estimate of attacking ``rows`` samples of ``sample_shape``.

    Scales :data:`CPU_SECONDS_PER_IMAGE` of the attack's preset by its attack and
    MINE steps (cost ~ T * (S + 1)), by the sample size relative to 28x28 and, for
    random-projection samplers, by :data:`RANDOM_PROJECTION_COST`. It is an order
    of magnitude, meant for "this will take hours" warnings, not a benchmark.

    Raises:
        ValueError: if ``rows`` < 0.
    """
    if rows < 0:
        raise ValueError(f"rows must be >= 0, got {rows}")
    reference = resolve_preset(attack.preset, "unsupervised", {})
    per_unit = CPU_SECONDS_PER_IMAGE[attack.preset] / (reference["steps"] * (reference["mine_steps"] + 1))
    units = attack.settings.steps * (attack.settings.mine_steps + 1)
    projections = isinstance(attack.sampler_for(tuple(sample_shape)), RandomProjectionSampler)
    factor = RANDOM_PROJECTION_COST if projections else 1.0
    return rows * per_unit * units * factor * math.prod(sample_shape) / (28 * 28)


class MINEUAE(MinMaxAttack):
    """Unsupervised adversarial examples: ``MinMaxAttack(criterion, mode="unsupervised", ...)``.

    Example:
        >>> from uae_augment import Reconstruction
        >>> ae = nn.Sequential(nn.Flatten(), nn.Linear(16, 16), nn.Sigmoid(), nn.Unflatten(1, (1, 4, 4)))
        >>> result = MINEUAE(Reconstruction(ae), preset="fast", steps=2, projections=8, projection_dim=4)(torch.rand(3, 1, 4, 4))
        >>> result.success.shape
        torch.Size([3])
    """

    def __init__(self, criterion: Criterion, **kwargs: Any):
        if kwargs.pop("mode", "unsupervised") != "unsupervised":
            raise ValueError("MINEUAE is the unsupervised preset; use MinMaxAttack for mode='supervised'")
        super().__init__(criterion, mode="unsupervised", **kwargs)
