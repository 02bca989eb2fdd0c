"""Szegedy et al.'s box-constrained L-BFGS attack: minimum-L2 adversarial examples.

For a sample x and an aimed-at class t the attack solves, for a trade-off constant c,

    minimise_{x'}  c * ||x' - x||_2^2 + CE(Z(x'), t)   subject to  x' in [0, 1]^d

with SciPy's L-BFGS-B, whose bound constraints *are* the box (no change of
variables, no clipping), started at x, and searches c for the smallest
distortion that still succeeds: a larger c weighs the distortion more, so the
search brackets the largest successful c (c x10 after a success and /10 after a
failure until both sides are bracketed, then geometric bisection). The returned
example is the successful minimiser with the smallest L2 distance over all
search steps; when no step succeeds, the minimiser with the smallest C&W margin
(reported as not successful). A sample that the model already gets "wrong" at x
(misclassified, or already the target) is returned unchanged: its minimum
distortion is 0.

Choices the paper leaves open: the squared L2 norm (smooth) instead of ||r||,
cross-entropy as loss_f, and the search schedule above.

Untargeted (``targeted=False``, the default, so that ``attack(x, y)`` takes the
true labels like every other attack): t is the best other class of the clean
input, argmax_{j != y} Z_j(x) (Foolbox's convention for its L-BFGS attack), and
success means any misclassification. Targeted: t is given by ``y`` or chosen by
``target="least_likely" | "random"`` (see :mod:`uae_augment.attacks.gradient`).

Batching without coupling: one joint L-BFGS run over a batch would couple the
samples (the quasi-Newton memory and the line search act on the concatenated
vector), so every sample gets its own SciPy L-BFGS-B run and its own c-search,
each in its own thread. The threads run in lockstep: once all of them wait for
a function value, the model evaluates all requested points in one batched call
(on x's device), padded to a multiple of 8 rows
(:func:`~uae_augment.attacks.base.pad_rows`) so that its shape never shrinks to
the 1- or 2-row batches whose kernels round differently. A sample's trajectory
is therefore that of a lone per-sample run, bit for bit whatever else is in
the batch and however many samples have finished (tested in batches of 1, 2, 5
and 12 with 1 and 2 threads), and deterministic. The optimiser state lives in
float64 NumPy on the CPU; the model sees x's dtype.

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
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy.optimize import Bounds, minimize
from torch import nn

from .._validation import check_positive
from .base import pad_rows, padding_rows
from .gradient import ClassifierAttack, Target
from .result import AttackResult

logger = logging.getLogger(__name__)


@dataclass
class _Evaluation:
    value: float
    gradient: np.ndarray
    logits: torch.Tensor  # (1, C)


# evaluate(point, c) for one sample; a job is one sample's whole sequential computation.
_Evaluate = Callable[[np.ndarray, float], _Evaluation]
_BatchEvaluate = Callable[[list[int], np.ndarray, np.ndarray], list[_Evaluation]]


class _Aborted(Exception):
    """Raised inside the worker threads when the batched evaluation failed."""


def _run_in_lockstep(jobs: Sequence[Callable[[_Evaluate], Any]], evaluate_batch: _BatchEvaluate) -> list[Any]:
    """Runs ``jobs[i](evaluate)`` in one thread each and serves their evaluations in batches.

    A job calls ``evaluate(point, c)`` and blocks. As soon as every unfinished job
    waits, the calling thread evaluates all pending points with one
    ``evaluate_batch(rows, points (k, d), cs (k,))`` call and hands each job its
    own :class:`_Evaluation`. Each job sees exactly the values it would see alone.

    Raises:
        Exception: the first error of ``evaluate_batch`` or of a job.
    """
    if not jobs:
        return []
    lock = threading.Lock()
    all_waiting = threading.Event()
    replied = [threading.Event() for _ in jobs]
    replies: list[_Evaluation | None] = [None] * len(jobs)
    pending: dict[int, tuple[np.ndarray, float]] = {}
    outcomes: list[Any] = [None] * len(jobs)
    errors: list[BaseException] = []
    state = {"running": len(jobs), "aborted": False}

    def wake_main_if_all_wait() -> None:
        if len(pending) == state["running"]:
            all_waiting.set()

    def evaluator(row: int) -> _Evaluate:
        def evaluate(point: np.ndarray, c: float) -> _Evaluation:
            with lock:
                if state["aborted"]:
                    raise _Aborted
                pending[row] = (np.array(point, dtype=np.float64), float(c))
                wake_main_if_all_wait()
            replied[row].wait()
            replied[row].clear()
            reply = replies[row]
            if reply is None:
                raise _Aborted
            return reply

        return evaluate

    def work(row: int) -> None:
        try:
            outcomes[row] = jobs[row](evaluator(row))
        except _Aborted:
            pass
        except BaseException as error:  # re-raised in the calling thread
            errors.append(error)
        finally:
            with lock:
                state["running"] -= 1
                wake_main_if_all_wait()

    threads = [threading.Thread(target=work, args=(row,), daemon=True) for row in range(len(jobs))]
    for thread in threads:
        thread.start()
    try:
        while True:
            all_waiting.wait()
            all_waiting.clear()
            with lock:
                batch, rows = dict(pending), sorted(pending)
                pending.clear()
            if not rows:
                break
            results = evaluate_batch(rows, np.stack([batch[r][0] for r in rows]), np.array([batch[r][1] for r in rows]))
            for row, result in zip(rows, results):
                replies[row] = result
                replied[row].set()
    except BaseException:
        with lock:
            state["aborted"] = True
            for row in range(len(jobs)):
                replies[row] = None
                replied[row].set()
        raise
    finally:
        for thread in threads:
            thread.join()
    if errors:
        raise errors[0]
    return outcomes


@dataclass
class _Outcome:
    point: np.ndarray
    best_step: int
    first_success: int
    c: float


class LBFGS(ClassifierAttack):
    """Box-constrained L-BFGS minimum-L2 attack (Szegedy et al., 2014), SciPy L-BFGS-B per sample.

    Minimises ``c * ||x' - x||_2^2 + CE(Z(x'), t)`` over the box [0, 1]^d and searches
    c for the smallest successful distortion (see the module docstring for the
    exact schedule, the untargeted variant, the batching and the result fields).
    Cost: about ``search_steps * (max_iter + a few line-search steps)`` batched
    forward/backward passes per chunk.

    Args:
        model: classifier mapping (N, ...) in [0, 1] to logits (N, C).
        c: initial trade-off constant (> 0) on the squared distortion.
        search_steps: number of constants c tried per sample (>= 1).
        max_iter: L-BFGS-B iterations per constant (>= 1).
        memory: L-BFGS history size (SciPy's ``maxcor``, >= 1).
        targeted, target: see :class:`~uae_augment.attacks.gradient.ClassifierAttack`;
            untargeted aims at the best other class and succeeds on any misclassification.
        seed, batch_size, progress: see :class:`~uae_augment.attacks.base.Attack`
            (``batch_size`` also bounds the number of optimiser threads).

    Raises:
        ValueError: on a non-positive or infinite c, ``search_steps``/``max_iter``/``memory``
            below 1, or as :class:`~uae_augment.attacks.gradient.ClassifierAttack`.

    Example:
        >>> _ = torch.manual_seed(0)
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
        batch_size: int | None = 256,
        progress: bool = False,
    ):
        super().__init__(
            model,
            loss="ce",
            targeted=targeted,
            target=target,
            seed=seed,
            batch_size=batch_size,
            progress=progress,
        )
        self.c = float(check_positive(c, "c"))
        if not math.isfinite(self.c):
            raise ValueError(f"c must be finite, got {c}")
        for name, value in (
            ("search_steps", search_steps),
            ("max_iter", max_iter),
            ("memory", memory),
        ):
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
        aimed = self._aim(x, y, index)
        with torch.no_grad():
            clean_logits = self._logits(x, aimed)
        judged = aimed if self.targeted else y
        if not self.targeted:
            # The class the untargeted optimisation aims at: the best other class.
            own = nn.functional.one_hot(y, clean_logits.shape[1]).bool()
            aimed = clean_logits.masked_fill(own, float("-inf")).argmax(dim=1)
        starts = x.detach().double().cpu().numpy().reshape(x.shape[0], -1)
        # Padding rows (copies of the last row) keep their start; they are discarded.
        wanted = ~self._succeeded(clean_logits, judged) & ~padding_rows(index).to(x.device)
        attacked = [int(i) for i in torch.nonzero(wanted).flatten()]
        outcomes = dict.fromkeys(range(x.shape[0]), _Outcome(np.empty(0), 0, 0, float("nan")))

        def evaluate_batch(rows: list[int], points: np.ndarray, cs: np.ndarray) -> list[_Evaluation]:
            samples = [attacked[r] for r in rows]
            return self._evaluate(x[samples], aimed[samples], points, cs)

        jobs = [self._search_job(starts[i], judged[i : i + 1]) for i in attacked]
        for i, outcome in zip(attacked, _run_in_lockstep(jobs, evaluate_batch)):
            outcomes[i] = outcome
        points = np.stack([outcomes[i].point if i in attacked else starts[i] for i in range(x.shape[0])])
        adversarial = torch.from_numpy(points).to(device=x.device, dtype=x.dtype).view_as(x).clamp(0.0, 1.0)
        column = [outcomes[i] for i in range(x.shape[0])]
        return self._result(
            x,
            adversarial,
            judged,
            best_iteration=torch.tensor([o.best_step for o in column], device=x.device),
            first_success=torch.tensor([o.first_success for o in column], device=x.device),
            final_c=torch.tensor([o.c for o in column], dtype=x.dtype, device=x.device),
        )

    def _evaluate(self, x: torch.Tensor, aimed: torch.Tensor, points: np.ndarray, cs: np.ndarray) -> list[_Evaluation]:
        """Per-row c ||x' - x||^2 + CE(Z(x'), t), its gradient and the logits, in one batched pass.

        The pass runs on the rows padded by :func:`pad_rows`, so its shape never
        depends on how many samples are still being optimised.
        """
        candidate = pad_rows(torch.from_numpy(points).to(device=x.device, dtype=x.dtype).view_as(x))
        c = pad_rows(torch.from_numpy(cs).to(device=x.device, dtype=x.dtype))
        x, aimed = pad_rows(x), pad_rows(aimed)
        with torch.enable_grad():
            candidate.requires_grad_(True)
            logits = self._logits(candidate, aimed)
            values = c * (candidate - x).flatten(1).pow(2).sum(dim=1) + nn.functional.cross_entropy(
                logits, aimed, reduction="none"
            )
            (grad,) = torch.autograd.grad(values.sum(), candidate)
        values_np = values.detach().double().cpu().numpy()
        grads_np = grad.detach().double().cpu().numpy().reshape(candidate.shape[0], -1)
        logits = logits.detach()
        return [_Evaluation(float(values_np[k]), grads_np[k], logits[k : k + 1]) for k in range(len(points))]

    def _search_job(self, start: np.ndarray, judged: torch.Tensor) -> Callable[[_Evaluate], _Outcome]:
        """One sample's c-search (run in its own thread by :func:`_run_in_lockstep`)."""

        def job(evaluate: _Evaluate) -> _Outcome:
            low, high, c = 0.0, math.inf, self.c
            best: _Outcome | None = None
            best_distance = math.inf
            fallback, fallback_margin = _Outcome(start, 0, -1, float("nan")), math.inf
            first_success = -1
            for step in range(1, self.search_steps + 1):
                point = self._minimise(start, c, evaluate)
                logits = evaluate(point, c).logits
                if bool(self._succeeded(logits, judged)):
                    first_success = step if first_success < 0 else first_success
                    distance = float(np.linalg.norm(point - start))
                    if distance < best_distance:
                        best, best_distance = _Outcome(point, step, -1, c), distance
                    low = c
                    c = c * 10.0 if math.isinf(high) else math.sqrt(low * high)
                else:
                    gap = float(self._margin(logits, judged))
                    if gap < fallback_margin:
                        fallback, fallback_margin = _Outcome(point, step, -1, c), gap
                    high = c
                    c = c / 10.0 if low == 0.0 else math.sqrt(low * high)
            chosen = best if best is not None else fallback
            chosen.first_success = first_success
            return chosen

        return job

    def _minimise(self, start: np.ndarray, c: float, evaluate: _Evaluate) -> np.ndarray:
        """SciPy L-BFGS-B on c ||x' - x||^2 + CE(Z(x'), t) over x' in [0, 1]^d, started at x."""

        def value_and_gradient(point: np.ndarray) -> tuple[float, np.ndarray]:
            evaluation = evaluate(point, c)
            return evaluation.value, evaluation.gradient

        solution = minimize(
            value_and_gradient,
            start,
            jac=True,
            method="L-BFGS-B",
            bounds=Bounds(np.zeros_like(start), np.ones_like(start)),
            options={"maxiter": self.max_iter, "maxcor": self.memory},
        )
        logger.debug("L-BFGS-B (c=%.3g): %s after %d iterations", c, solution.message, solution.nit)
        return np.clip(solution.x, 0.0, 1.0)
