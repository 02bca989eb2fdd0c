"""The MinMax optimisation loop shared by MinMaxAttack, PenaltyAttack and LpUAE.

One loop (docs/method.md section 2) with a pluggable similarity term s(x, x'):

    L(delta, c) = c * f_x(x') + sign * s(x, x'),   x' = clip(x + delta, 0, 1)

with sign = -1 for supervised attacks (maximise similarity while misclassifying)
and +1 for unsupervised ones (minimise similarity while f_x = 0). The MINE term
is s = I_theta; the analytic term is the exact MI of the random-projection
pairs, -(p/2) log(1 - cos^2(x, x')); the L2 baseline uses s = -||x' - x||^2.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .._seeding import Stream, sample_generators, stacked_uniform
from ..criteria import Criterion
from ..mine import PerSampleMINE, Sampler, projection_mi
from .base import padding_rows
from .result import AttackResult


def glorot_limit(sample_shape: tuple[int, ...]) -> float:
    """Half-width of Keras' glorot-uniform init for the release's input-shaped variable.

    The release stores delta as a variable of the input's NHWC shape (1, H, W, C)
    (or (1, d) for vectors); Keras then uses fan_in = H * W and fan_out = W * C,
    e.g. +-0.0860 for 28x28x1 and +-0.0732 for 32x32x3.
    """
    if len(sample_shape) == 3:
        channels, height, width = sample_shape
        fan_in, fan_out = height * width, width * channels
    elif len(sample_shape) == 2:
        height, width = sample_shape
        fan_in, fan_out = height * width, width
    else:
        fan_in, fan_out = 1, math.prod(sample_shape)
    return math.sqrt(6.0 / (fan_in + fan_out))


def initial_delta(
    kind: str, x: torch.Tensor, index: torch.Tensor, seed: int, epsilon: float, round_: int = 0
) -> torch.Tensor:
    """delta_0 per sample: 'glorot' (the release's effective init), 'uniform' U(-eps, eps) or 'zeros'."""
    shape = tuple(x.shape[1:])
    if kind == "zeros":
        return torch.zeros_like(x)
    if kind == "glorot":
        limit = glorot_limit(shape)
    elif kind == "uniform":
        limit = epsilon
    else:
        raise ValueError(f"delta_init must be 'glorot', 'uniform' or 'zeros', got {kind!r}")
    generators = sample_generators(seed, index, Stream.DELTA_INIT, round_)
    delta = stacked_uniform(generators, shape, -limit, limit, device=x.device, dtype=x.dtype)
    return delta.clamp(-epsilon, epsilon)


def full_precision(device: torch.device) -> contextlib.AbstractContextManager[None]:
    """Disables an active ``torch.autocast`` on ``device`` (MINE's hand-written steps run in float32)."""
    if device.type in ("cpu", "cuda") and torch.is_autocast_enabled(device.type):
        return torch.autocast(device.type, enabled=False)
    return contextlib.nullcontext()


class MISimilarity:
    """s = I_theta(x, x') by per-sample MINE, trained ``mine_steps`` Adam steps per iteration.

    The sampler (the victim's first layer) runs under the caller's autocast, if
    any; its maps are cast to float32 and MINE itself runs without autocast.

    MINE runs on the chunk's real rows only: the rows that pad a chunk to a
    multiple of 8 (:func:`~uae_augment.attacks.base.pad_rows`) get the last real
    row's value, without gradient. A MINE row's bits do not depend on its
    sub-batch (tested), so this changes no result and spares a 1-row attack 7
    rows of MINE training; the sampler still sees every row, so its bits stay
    those of the padded batch.
    """

    reports_mi = True

    def __init__(
        self,
        sampler: Sampler,
        x: torch.Tensor,
        index: torch.Tensor,
        *,
        seed: int,
        mine_steps: int,
        mine_lr: float,
        hidden: int | None,
        init_round: int = 0,
    ):
        self.sampler = sampler
        self.rows = int((~padding_rows(index.cpu())).sum())
        with torch.no_grad():
            self.u = sampler(x)[: self.rows].detach().float()
        self.mine = PerSampleMINE(
            self.u.shape[2:],
            seed=seed,
            index=index[: self.rows],
            count=self.u.shape[1],
            lr=mine_lr,
            hidden=hidden,
            device=x.device,
            init_round=init_round,
        )
        self.mine_steps = mine_steps

    def _padded(self, values: torch.Tensor, total: int) -> torch.Tensor:
        if total == self.rows:
            return values
        return torch.cat([values, values[-1:].detach().expand(total - self.rows)])

    def value(self, x_adv: torch.Tensor) -> torch.Tensor:
        v = self.sampler(x_adv)[: self.rows].float()
        with full_precision(x_adv.device):
            return self._padded(self.mine.attack_estimate(self.u, v), x_adv.shape[0])

    def update(self, x_adv: torch.Tensor) -> None:
        with torch.no_grad():
            v = self.sampler(x_adv)[: self.rows].float()
        with torch.enable_grad(), full_precision(x_adv.device):
            self.mine.train(self.u, v, self.mine_steps)

    @staticmethod
    def valid(values: torch.Tensor) -> torch.Tensor:
        return values > 0


class AnalyticMISimilarity:
    """s = -(p/2) log(1 - cos^2(x, x')): the exact MI of Gaussian random-projection pairs.

    The training-free counterpart of :class:`MISimilarity` for the
    random-projection sampler (see :func:`~uae_augment.mine.projection_mi`):
    cos is the uncentred cosine of the flattened x and x'; the value does not
    depend on the number of projections or their seed.

    Args:
        x: clean batch (B, ...).
        dim: p, the projected sample length.
    """

    reports_mi = True

    def __init__(self, x: torch.Tensor, dim: int):
        self.x = x.flatten(1)
        self.dim = dim

    def value(self, x_adv: torch.Tensor) -> torch.Tensor:
        return projection_mi(flat_cosine(self.x, x_adv), self.dim)

    def update(self, x_adv: torch.Tensor) -> None:
        return None

    @staticmethod
    def valid(values: torch.Tensor) -> torch.Tensor:
        return values > 0


class L2Similarity:
    """s = -||x' - x||_2^2 (the L2-UAE baseline's dissimilarity, negated)."""

    reports_mi = False

    def __init__(self, x: torch.Tensor):
        self.x = x

    def value(self, x_adv: torch.Tensor) -> torch.Tensor:
        return -(x_adv - self.x).flatten(1).pow(2).sum(dim=1)

    def update(self, x_adv: torch.Tensor) -> None:
        return None

    @staticmethod
    def valid(values: torch.Tensor) -> torch.Tensor:
        return torch.ones_like(values, dtype=torch.bool)


Similarity = MISimilarity | AnalyticMISimilarity | L2Similarity


@dataclass
class LoopSettings:
    """Hyperparameters of one MinMax run."""

    supervised: bool
    steps: int
    epsilon: float
    alpha: float
    beta: float
    gamma_power: float
    delta_update: str = "gradient"
    record_history: bool = False
    select: str = "running"


SELECTIONS = ("running", "cosine")
"""How the kept iterate is chosen among the successful ones: by the similarity term's own
value at that iteration (``"running"``, the release: a warm-started MINE estimate rises
while it trains, so early iterates win), or on one common scale, the uncentred
cos(x, x') (``"cosine"``; equivalently the exact random-projection MI
-(p/2) log(1 - cos^2), which is increasing in cos for images in [0, 1])."""


def flat_cosine(x: torch.Tensor, x_adv: torch.Tensor) -> torch.Tensor:
    """Per-row uncentred cosine of the flattened x and x' (B,), as :class:`AnalyticMISimilarity` uses it."""
    return torch.nn.functional.cosine_similarity(x.flatten(1), x_adv.flatten(1), dim=1)


class _BestIterate:
    """Keeps each sample's best iterate (docs/method.md section 2, step 5).

    Among successful iterates the best is the one with the highest (supervised) or
    lowest (unsupervised) selection key; the key is the similarity score itself
    unless :meth:`update` is given another (``LoopSettings.select``).
    """

    def __init__(self, x: torch.Tensor, supervised: bool):
        n = x.shape[0]
        self.supervised = supervised
        self.best = x.clone()
        self.best_key = torch.full((n,), -math.inf if supervised else math.inf, device=x.device)
        self.best_score = torch.full((n,), math.nan, device=x.device)
        self.best_f = torch.full((n,), math.inf, device=x.device)
        self.best_iteration = torch.full((n,), -1, dtype=torch.long, device=x.device)
        self.found = torch.zeros(n, dtype=torch.bool, device=x.device)
        self.first_success = torch.full((n,), -1, dtype=torch.long, device=x.device)
        self.fallback = x.clone()
        self.fallback_f = torch.full((n,), math.inf, device=x.device)
        self.fallback_score = torch.full((n,), math.nan, device=x.device)
        self.fallback_iteration = torch.full((n,), -1, dtype=torch.long, device=x.device)

    def update(
        self,
        iteration: int,
        x_adv: torch.Tensor,
        f: torch.Tensor,
        score: torch.Tensor,
        ok: torch.Tensor,
        key: torch.Tensor | None = None,
    ) -> None:
        """Records iteration ``iteration``'s candidates; device-resident, no host-device sync."""
        key = score if key is None else key
        better = key > self.best_key if self.supervised else key < self.best_key
        take = ok & better
        self.best_key.copy_(torch.where(take, key, self.best_key))
        self._assign(
            take,
            x_adv,
            score,
            f,
            iteration,
            self.best,
            self.best_score,
            self.best_f,
            self.best_iteration,
        )
        self.found |= ok
        self.first_success.masked_fill_((self.first_success < 0) & ok, iteration)
        lower = f < self.fallback_f
        self._assign(
            lower,
            x_adv,
            score,
            f,
            iteration,
            self.fallback,
            self.fallback_score,
            self.fallback_f,
            self.fallback_iteration,
        )

    @staticmethod
    def _assign(mask, x_adv, score, f, iteration, images, scores, fs, iterations) -> None:  # type: ignore[no-untyped-def]
        """Rows where ``mask`` holds take the candidate (``torch.where``: no boolean indexing, no sync)."""
        images.copy_(torch.where(mask.view((-1,) + (1,) * (images.dim() - 1)), x_adv, images))
        scores.copy_(torch.where(mask, score, scores))
        fs.copy_(torch.where(mask, f, fs))
        iterations.masked_fill_(mask, iteration)

    def select(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(images, scores, f, iteration): the best successful iterate, else the lowest-f one."""
        found = self.found
        shape = (-1,) + (1,) * (self.best.dim() - 1)
        images = torch.where(found.view(shape), self.best, self.fallback)
        scores = torch.where(found, self.best_score, self.fallback_score)
        fs = torch.where(found, self.best_f, self.fallback_f)
        iterations = torch.where(found, self.best_iteration, self.fallback_iteration)
        return images, scores, fs, iterations


def _step(
    delta: torch.Tensor, grad: torch.Tensor, settings: LoopSettings, adam: torch.optim.Adam | None
) -> torch.Tensor:
    if settings.delta_update == "gradient":
        delta = delta - settings.alpha * grad
    elif settings.delta_update == "sign":
        delta = delta - settings.alpha * grad.sign()
    elif settings.delta_update == "adam":
        assert adam is not None
        param = adam.param_groups[0]["params"][0]
        param.grad = grad
        adam.step()
        with torch.no_grad():
            param.clamp_(-settings.epsilon, settings.epsilon)
        return param.detach().clone()
    else:
        raise ValueError(f"unknown delta_update {settings.delta_update!r}")
    return delta.clamp(-settings.epsilon, settings.epsilon)


def run_minmax(
    x: torch.Tensor,
    reference: object,
    criterion: Criterion,
    similarity: Similarity,
    delta0: torch.Tensor,
    c0: torch.Tensor,
    settings: LoopSettings,
    on_iteration: Callable[[], None] | None = None,
) -> AttackResult:
    """Runs the MinMax loop on one batch and returns the kept iterates.

    Args:
        x: clean batch (B, ...).
        reference: ``criterion.prepare(x, y, index)``.
        criterion: f_x.
        similarity: the similarity term s(x, x') and its per-iteration update.
        delta0: initial perturbation (B, ...).
        c0: initial trade-off constants (B,).
        settings: loop hyperparameters.
        on_iteration: called with no argument after each of the ``settings.steps``
            iterations (the attack's progress bar; it must not touch the tensors).
    """
    sign = -1.0 if settings.supervised else 1.0
    delta = delta0.clone()
    c = c0.clone()
    tracker = _BestIterate(x, settings.supervised)
    mi_trace: list[torch.Tensor] = []
    f_trace: list[torch.Tensor] = []
    adam = None
    if settings.delta_update == "adam":
        adam = torch.optim.Adam([torch.nn.Parameter(delta.clone())], lr=settings.alpha)
    for iteration in range(settings.steps):
        last = iteration == settings.steps - 1
        with torch.enable_grad():
            delta.requires_grad_(not last)
            x_adv = torch.clamp(x + delta, 0.0, 1.0)
            f = criterion(x_adv, reference).to(x.dtype)  # float32 under autocast too
            score = similarity.value(x_adv).to(x.dtype)
            grad = None
            if not last:
                (grad,) = torch.autograd.grad((c * f + sign * score).sum(), delta)
        f, score, x_adv = f.detach(), score.detach(), x_adv.detach()
        ok = f <= 0 if settings.supervised else (f <= 0) & similarity.valid(score)
        key = flat_cosine(x, x_adv) if settings.select == "cosine" else None
        tracker.update(iteration, x_adv, f, score, ok, key)
        if on_iteration is not None:
            on_iteration()
        if settings.record_history:
            mi_trace.append(score)
            f_trace.append(f)
        if last:
            break
        assert grad is not None
        delta = _step(delta.detach(), grad, settings, adam)
        similarity.update(torch.clamp(x + delta, 0.0, 1.0))
        gamma = (iteration + 1) ** (-settings.gamma_power)
        c = torch.clamp((1.0 - settings.beta * gamma) * c + settings.beta * f, min=0.0)
    images, scores, fs, iterations = tracker.select()
    start = torch.clamp(x + delta0, 0.0, 1.0)
    moved = (images - start).flatten(1)
    return AttackResult(
        adversarial=images,
        success=tracker.found,
        mi=scores if similarity.reports_mi else torch.full_like(scores, math.nan),
        criterion=fs,
        best_iteration=iterations,
        first_success=tracker.first_success,
        moved_linf=moved.abs().amax(dim=1),
        moved_l2=moved.norm(dim=1),
        final_c=c,
        mi_trace=torch.stack(mi_trace, dim=1) if settings.record_history and similarity.reports_mi else None,
        criterion_trace=torch.stack(f_trace, dim=1) if settings.record_history else None,
    )
