"""The one result type every attack returns."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import torch


@dataclass
class AttackResult:
    """Per-sample outcome of an attack on N samples.

    Attributes:
        adversarial: (N, ...) the returned adversarial examples, in [0, 1].
        success: (N,) bool, whether the sample's attack criterion was met
            (supervised: misclassified / target reached; unsupervised: f_x = 0
            and, for MINE attacks, MI > 0).
        mi: (N,) the attack's own MINE estimate for the returned example (NaN
            for attacks that do not estimate MI).
        criterion: (N,) the attack criterion f_x (>= 0; 0 means success) of the
            returned example (for gradient attacks: the C&W margin).
        best_iteration: (N,) iteration at which the returned example was found
            (-1 when not applicable).
        first_success: (N,) first iteration with a successful iterate (-1 if none).
        moved_linf: (N,) L-infinity distance between the returned example and the
            attack's starting point clip(x + delta_0) (NaN where there is none):
            how far the optimisation really moved.
        moved_l2: (N,) the same in L2.
        final_c: (N,) final trade-off constant c (NaN where not applicable).
        mi_trace: optional (N, T) MI of every iterate.
        criterion_trace: optional (N, T) f_x of every iterate.
        clean_success: (N,) bool for supervised (label-taking) attacks: whether
            the clean input already met the criterion before the attack (it was
            misclassified, or already classified as the target); None for
            unsupervised attacks. :attr:`asr` leaves these inputs out.
    """

    adversarial: torch.Tensor
    success: torch.Tensor
    mi: torch.Tensor
    criterion: torch.Tensor
    best_iteration: torch.Tensor = field(default=None)  # type: ignore[assignment]
    first_success: torch.Tensor = field(default=None)  # type: ignore[assignment]
    moved_linf: torch.Tensor = field(default=None)  # type: ignore[assignment]
    moved_l2: torch.Tensor = field(default=None)  # type: ignore[assignment]
    final_c: torch.Tensor = field(default=None)  # type: ignore[assignment]
    mi_trace: torch.Tensor | None = None
    criterion_trace: torch.Tensor | None = None
    clean_success: torch.Tensor | None = None

    def __post_init__(self) -> None:
        n = self.adversarial.shape[0]
        device = self.adversarial.device
        nan = torch.full((n,), float("nan"), device=device)
        minus_one = torch.full((n,), -1, dtype=torch.long, device=device)
        for name, default in (
            ("best_iteration", minus_one),
            ("first_success", minus_one),
            ("moved_linf", nan),
            ("moved_l2", nan),
            ("final_c", nan),
        ):
            if getattr(self, name) is None:
                setattr(self, name, default.clone())
        self.success = self.success.bool()
        if self.clean_success is not None:
            self.clean_success = self.clean_success.bool()
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None and value.shape[0] != n:
                raise ValueError(f"AttackResult.{f.name} has {value.shape[0]} rows, expected {n}")

    def __len__(self) -> int:
        return self.adversarial.shape[0]

    def _map(self, fn: Any) -> AttackResult:
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return AttackResult(**{k: (fn(v) if v is not None else None) for k, v in values.items()})

    def to(self, device: torch.device | str) -> AttackResult:
        """A copy with every tensor on ``device``."""
        return self._map(lambda t: t.to(device))

    def __getitem__(self, rows: slice | torch.Tensor | Sequence[int]) -> AttackResult:
        """Selects rows (a slice, an index tensor or a boolean mask)."""
        return self._map(lambda t: t[rows])

    @staticmethod
    def cat(results: Sequence[AttackResult]) -> AttackResult:
        """Concatenates results along the sample axis."""
        if not results:
            raise ValueError("cannot concatenate an empty list of AttackResult")
        merged: dict[str, Any] = {}
        for f in fields(AttackResult):
            parts = [getattr(r, f.name) for r in results]
            if any(p is None for p in parts):
                merged[f.name] = None
            else:
                merged[f.name] = torch.cat(parts)
        return AttackResult(**merged)

    @property
    def asr(self) -> float:
        """Attack success rate, as torchattacks users expect it.

        Supervised attacks (``clean_success`` known): the fraction of successful
        samples among the inputs the model classified correctly (untargeted) or
        not yet as the target (targeted), so that inputs the model already gets
        wrong do not count as successes with zero perturbation; NaN when there
        is no such input. Unsupervised attacks: the fraction of successful
        samples (equal to :attr:`asr_all`).
        """
        if self.clean_success is None:
            return self.asr_all
        attacked = ~self.clean_success
        if not attacked.any():
            return float("nan")
        return float(self.success[attacked].float().mean())

    @property
    def asr_all(self) -> float:
        """The fraction of successful samples over all inputs (including those that
        already met the criterion before the attack)."""
        return float(self.success.float().mean())

    @property
    def clean_accuracy(self) -> float | None:
        """Supervised attacks: the fraction of inputs that did not meet the criterion
        before the attack (untargeted: the model's accuracy on them); None otherwise."""
        return None if self.clean_success is None else float((~self.clean_success).float().mean())

    def perturbation(self, x: torch.Tensor) -> torch.Tensor:
        """The effective perturbation ``adversarial - x``."""
        return self.adversarial - x.to(self.adversarial.device)

    def summary(self, x: torch.Tensor | None = None) -> dict[str, float]:
        """Scalar summary: ASR (see :attr:`asr`), ASR over all inputs, mean MI, mean criterion,
        the clean accuracy for supervised attacks, and distortions when ``x`` is given."""
        out = {
            "n": float(len(self)),
            "asr": self.asr,
            "asr_all": self.asr_all,
            "mean_mi": _nanmean(self.mi),
            "mean_criterion": float(self.criterion.float().mean()),
            "mean_moved_linf": _nanmean(self.moved_linf),
            "mean_moved_l2": _nanmean(self.moved_l2),
        }
        if self.clean_success is not None:
            out["clean_accuracy"] = float((~self.clean_success).float().mean())
        if x is not None:
            delta = self.perturbation(x).flatten(1)
            out["mean_linf"] = float(delta.abs().amax(dim=1).mean())
            out["max_linf"] = float(delta.abs().max())
            out["mean_l2"] = float(delta.norm(dim=1).mean())
        return out


def _nanmean(values: torch.Tensor) -> float:
    finite = values[~torch.isnan(values)]
    return float(finite.float().mean()) if finite.numel() else float("nan")
