"""Szegedy et al.'s box-constrained L-BFGS attack: minimum-L2 adversarial examples.

For a sample x and an aimed-at class t the attack solves, for a trade-off constant c,

    minimise_{x'}  c * ||x' - x||_2^2 + CE(Z(x'), t)   subject to  x' in [0, 1]^d

with SciPy's L-BFGS-B, whose bound constraints *are* the box (no change of
variables, no clipping), and searches c for the smallest distortion that still
succeeds: a larger c weighs the distortion more, so the search brackets the
largest successful c (x10 / /10 until bracketed, then geometric bisection).
The returned example is the successful minimiser with the smallest L2 distance
over all search steps; when no step succeeds, the minimiser with the smallest
C&W margin (reported as not successful). A sample that the model already gets
"wrong" at x (misclassified, or already the target) is returned unchanged: its
minimum distortion is 0.

Deviations from the paper, which leaves these open: the squared L2 norm (smooth)
instead of ||r||, cross-entropy as loss_f, and the search schedule above.

Untargeted (``targeted=False``, the default, so that ``attack(x, y)`` takes the
true labels like every other attack): t is the best other class of the clean
input, argmax_{j != y} Z_j(x) (the convention of Foolbox's L-BFGS attack), and
success means any misclassification. Targeted: t is given by ``y`` or chosen by
``target="least_likely" | "random"`` (see :mod:`uae_augment.attacks.gradient`).

Each sample is optimised on its own (L-BFGS's memory and line search would
couple the samples of a joint optimisation), so results do not depend on which
samples share a batch and are deterministic. The model runs on x's device; the
optimiser state lives in float64 NumPy on the CPU.

The result follows the conventions of :mod:`uae_augment.attacks.gradient`:
``success`` and ``criterion`` (C&W margin) belong to the returned example, ``mi``
is NaN; the iterations are the c-search steps: ``best_iteration`` is the search
step (1-based) of the returned example, ``first_success`` the first successful
one (0 = x itself), ``final_c`` the c of the returned example (NaN for x itself),
``moved_linf``/``moved_l2`` the distortion from x.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
import torch
from scipy.optimize import Bounds, minimize
from torch import nn

from .._validation import check_positive
from .gradient import ClassifierAttack, Target
from .result import AttackResult

logger = logging.getLogger(__name__)


class LBFGS(ClassifierAttack):
    """Box-constrained L-BFGS minimum-L2 attack (Szegedy et al., 2014), SciPy L-BFGS-B per sample.

    Minimises ``c * ||x' - x||_2^2 + CE(Z(x'), t)`` over the box [0, 1]^d and searches
    c for the smallest successful distortion (see the module docstring for the
    exact schedule, the untargeted variant and the result fields).

    Args:
        model: classifier mapping (N, ...) in [0, 1] to logits (N, C).
        c: initial trade-off constant (> 0) on the squared distortion.
        search_steps: number of constants c tried per sample (>= 1).
        max_iter: L-BFGS-B iterations per constant (>= 1).
        memory: L-BFGS history size (SciPy's ``maxcor``).
        targeted, target: see :class:`~uae_augment.attacks.gradient.ClassifierAttack`;
            untargeted aims at the best other class and succeeds on any misclassification.
        seed, progress: see :class:`~uae_augment.attacks.base.Attack`.
        batch_size: samples per chunk; samples are optimised one by one anyway, so
            this only sets how often the progress bar moves (default 1).

    Raises:
        ValueError: on a non-positive c, ``search_steps``/``max_iter``/``memory`` < 1,
            or as :class:`~uae_augment.attacks.gradient.ClassifierAttack`.

    Example:
        >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
        <torch._C.Generator object at ...>
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
        >>> x = torch.rand(3, 1, 4, 4)
        >>> y = net(x).argmax(dim=1)
        >>> result = LBFGS(net, search_steps=4, max_iter=50)(x, y)
        >>> bool(((net(result.adversarial).argmax(dim=1) != y) == result.success).all())
        True
        >>> bool(((result.adversarial >= 0) & (result.adversarial <= 1)).all())
        True
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        c: float = 1.0,
        search_steps: int = 10,
        max_iter: int = 100,
        memory: int = 10,
        targeted: bool = False,
        target: Target = "given",
        seed: int = 0,
        batch_size: int | None = 1,
        progress: bool = False,
    ):
        super().__init__(
            model, loss="ce", targeted=targeted, target=target, seed=seed,
            batch_size=batch_size, progress=progress,
        )
        self.c = float(check_positive(c, "c"))
        if not math.isfinite(self.c):
            raise ValueError(f"c must be finite, got {c}")
        for name, value in (("search_steps", search_steps), ("max_iter", max_iter), ("memory", memory)):
            if int(value) != value or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value}")
        self.search_steps = int(search_steps)
        self.max_iter = int(max_iter)
        self.memory = int(memory)

    def _config(self) -> dict[str, Any]:
        config = super()._config()
        config.pop("loss")
        return {
            **config,
            "c": self.c,
            "search_steps": self.search_steps,
            "max_iter": self.max_iter,
            "memory": self.memory,
        }

    def _attack_batch(self, x: torch.Tensor, y: torch.Tensor | None, index: torch.Tensor) -> AttackResult:
        assert y is not None
        targets = self._aim(x, y, index)
        with torch.no_grad():
            clean_logits = self._logits(x, targets)
        judged = targets if self.targeted else y
        if not self.targeted:
            # The class the untargeted optimisation aims at: the best other class.
            own = nn.functional.one_hot(y, clean_logits.shape[1]).bool()
            targets = clean_logits.masked_fill(own, float("-inf")).argmax(dim=1)
        clean_success = self._succeeded(clean_logits, judged)
        rows = [
            self._attack_sample(x[i : i + 1], judged[i : i + 1], targets[i : i + 1], bool(clean_success[i]))
            for i in range(x.shape[0])
        ]
        adversarial = torch.cat([r[0] for r in rows])
        result = self._result(
            x,
            adversarial,
            judged,
            best_iteration=torch.tensor([r[1] for r in rows], dtype=torch.long, device=x.device),
            first_success=torch.tensor([r[2] for r in rows], dtype=torch.long, device=x.device),
            final_c=torch.tensor([r[3] for r in rows], dtype=x.dtype, device=x.device),
        )
        return result

    def _attack_sample(
        self, x: torch.Tensor, judged: torch.Tensor, target: torch.Tensor, clean_success: bool
    ) -> tuple[torch.Tensor, int, int, float]:
        """(adversarial (1, ...), best search step, first successful step, its c) for one sample."""
        if clean_success:
            return x, 0, 0, float("nan")
        low, high, c = 0.0, math.inf, self.c
        best: tuple[torch.Tensor, int, float] | None = None
        best_distance = math.inf
        fallback: tuple[torch.Tensor, int, float] = (x, 0, float("nan"))
        fallback_margin = math.inf
        first_success = -1
        for step in range(1, self.search_steps + 1):
            candidate = self._minimise(x, target, c)
            with torch.no_grad():
                logits = self._logits(candidate, judged)
            if bool(self._succeeded(logits, judged)):
                if first_success < 0:
                    first_success = step
                distance = float((candidate - x).norm())
                if distance < best_distance:
                    best, best_distance = (candidate, step, c), distance
                low = c
                c = c * 10.0 if math.isinf(high) else math.sqrt(low * high)
            else:
                gap = float(self._margin(logits, judged))
                if gap < fallback_margin:
                    fallback, fallback_margin = (candidate, step, c), gap
                high = c
                c = c / 10.0 if low == 0.0 else math.sqrt(low * high)
        chosen = best if best is not None else fallback
        return chosen[0], chosen[1], first_success, chosen[2]

    def _minimise(self, x: torch.Tensor, target: torch.Tensor, c: float) -> torch.Tensor:
        """L-BFGS-B on c ||x' - x||^2 + CE(Z(x'), t) over x' in [0, 1]^d, started at x."""
        shape, dtype, device = x.shape, x.dtype, x.device

        def value_and_gradient(flat: np.ndarray) -> tuple[float, np.ndarray]:
            candidate = torch.from_numpy(flat).to(device=device, dtype=dtype).view(shape)
            with torch.enable_grad():
                candidate.requires_grad_(True)
                logits = self._logits(candidate, target)
                loss = nn.functional.cross_entropy(logits, target, reduction="sum")
                value = c * (candidate - x).pow(2).sum() + loss
                (grad,) = torch.autograd.grad(value, candidate)
            return float(value.detach()), grad.detach().double().cpu().numpy().ravel()

        start = x.detach().double().cpu().numpy().ravel()
        solution = minimize(
            value_and_gradient,
            start,
            jac=True,
            method="L-BFGS-B",
            bounds=Bounds(np.zeros_like(start), np.ones_like(start)),
            options={"maxiter": self.max_iter, "maxcor": self.memory},
        )
        logger.debug("L-BFGS-B (c=%.3g): %s after %d iterations", c, solution.message, solution.nit)
        found = torch.from_numpy(solution.x).to(device=device, dtype=dtype).view(shape)
        return found.clamp(0.0, 1.0)
