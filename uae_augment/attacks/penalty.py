"""Penalty-based MINE attack: C&W-style binary search over a fixed c (docs/method.md section 4)."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from ..criteria import Criterion
from ._minmax_loop import initial_delta, run_minmax
from .minmax import MinMaxAttack
from .result import AttackResult

_UPPER_UNSET = 1e10


class PenaltyAttack(MinMaxAttack):
    """The penalty-based baseline of the MinMax paper (supervised).

    ``search_steps`` outer rounds; in each, c is fixed (no dual update) and the
    inner loop runs ``steps`` plain gradient steps on L = c f_x - I_theta with a
    freshly initialised delta and per-sample MINE. Between rounds c follows the
    C&W binary search: c <- 10 c until the first success, then bisection between
    the largest failing and the smallest succeeding c. The kept example is the
    successful iterate with the highest MI over all rounds. With the defaults it
    runs 9x the iterations of :class:`MinMaxAttack`.

    Defaults follow the release's ``MINE_binary_search.py``: 9 rounds, c0 = 1e-3,
    20 MINE Adam steps per iteration at lr 2e-5. (The release also lets that Adam
    move delta towards higher MI; here only the gradient step moves delta, as in
    MinMax, so the two attacks differ only in how c is chosen.)

    Args:
        criterion: a labelled criterion (``ClassifierMargin``).
        search_steps: outer binary-search rounds.
        steps: inner iterations per round (preset: 1000).
        mine_steps, mine_lr: MINE training per iteration (release: 20 steps, 2e-5).
        **kwargs: any other :class:`MinMaxAttack` argument (preset, epsilon, alpha,
            c0, statistics_hidden, sampler, record_history, seed, batch_size, ...).

    Example:
        >>> from torch import nn
        >>> from uae_augment import ClassifierMargin
        >>> net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))
        >>> attack = PenaltyAttack(ClassifierMargin(net), search_steps=2, steps=3, mine_steps=1, preset="fast")
        >>> attack(torch.rand(2, 1, 8, 8), torch.tensor([0, 1])).success.shape
        torch.Size([2])
    """

    def __init__(
        self,
        criterion: Criterion,
        *,
        search_steps: int = 9,
        mine_steps: int | None = 20,
        mine_lr: float | None = 2e-5,
        **kwargs: Any,
    ):
        if kwargs.pop("mode", "supervised") != "supervised":
            raise ValueError("PenaltyAttack is a supervised attack")
        if search_steps < 1:
            raise ValueError(f"search_steps must be >= 1, got {search_steps}")
        super().__init__(criterion, mode="supervised", mine_steps=mine_steps, mine_lr=mine_lr, **kwargs)
        self.search_steps = int(search_steps)

    def _config(self) -> dict[str, Any]:
        config = super()._config()
        config.pop("beta")
        config.pop("gamma_power")
        return {**config, "search_steps": self.search_steps}

    def _chunk_units(self, rows: int) -> int:
        """The bar counts inner iterations over all rounds: ``search_steps * steps`` per chunk."""
        return self.search_steps * int(self.settings.steps)

    def _attack_batch(self, x: torch.Tensor, y: torch.Tensor | None, index: torch.Tensor) -> AttackResult:
        with torch.no_grad():
            reference = self.criterion.prepare(x, y, index)
        settings = dataclasses.replace(self.loop_settings(), beta=0.0)
        n = x.shape[0]
        c = torch.full((n,), float(self.settings.c0), device=x.device)
        lower = torch.zeros(n, device=x.device)
        upper = torch.full((n,), _UPPER_UNSET, device=x.device)
        best: AttackResult | None = None
        traces: list[AttackResult] = []
        for round_ in range(self.search_steps):
            delta0 = initial_delta(self.settings.delta_init, x, index, self.seed, self.settings.epsilon, round_)
            similarity = self.similarity(x, index, init_round=round_)
            result = run_minmax(x, reference, self.criterion, similarity, delta0, c, settings, self._advance)
            offset = round_ * settings.steps
            result.best_iteration = torch.where(result.best_iteration >= 0, result.best_iteration + offset, -1)
            result.first_success = torch.where(result.first_success >= 0, result.first_success + offset, -1)
            result.final_c = c.clone()
            traces.append(result)
            best = result if best is None else _keep_better(best, result)
            upper = torch.where(result.success, torch.minimum(upper, c), upper)
            lower = torch.where(result.success, lower, torch.maximum(lower, c))
            c = torch.where(upper < _UPPER_UNSET / 10, (lower + upper) / 2, c * 10)
        assert best is not None
        if self.record_history:
            best.mi_trace = torch.cat([t.mi_trace for t in traces if t.mi_trace is not None], dim=1)
            best.criterion_trace = torch.cat(
                [t.criterion_trace for t in traces if t.criterion_trace is not None], dim=1
            )
        best.first_success = _first_success(traces)
        return best


def _keep_better(best: AttackResult, new: AttackResult) -> AttackResult:
    """Per row: the successful result with higher MI, else the one with lower f_x."""
    take = torch.where(
        best.success & new.success,
        new.mi > best.mi,
        torch.where(best.success | new.success, new.success, new.criterion < best.criterion),
    )
    merged = {}
    for field in dataclasses.fields(AttackResult):
        old_value, new_value = getattr(best, field.name), getattr(new, field.name)
        if old_value is None or new_value is None or field.name.endswith("_trace"):
            merged[field.name] = None
            continue
        mask = take.view((-1,) + (1,) * (old_value.dim() - 1))
        merged[field.name] = torch.where(mask, new_value, old_value)
    return AttackResult(**merged)


def _first_success(traces: list[AttackResult]) -> torch.Tensor:
    first = traces[0].first_success.clone()
    for trace in traces[1:]:
        first = torch.where(first < 0, trace.first_success, first)
    return first
