"""The ordinary MINE estimator (Belghazi et al. 2018) of I(A; B) from two paired sample sets.

:func:`estimate_mi` trains one MLP statistics network with the
moving-average-corrected gradient and scores it on held-out pairs.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .._seeding import Stream, derive_seed


class _JointStatistics(nn.Module):
    def __init__(self, dim_a: int, dim_b: int, hidden: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(dim_a + dim_b, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, 1),
        )

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([a, b], dim=1)).squeeze(1)


def _split_rows(n: int, holdout: float, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Random disjoint (training, held-out) row indices; training gets >= 2 rows, held-out >= 4."""
    held_out = min(max(4, round(holdout * n)), n - 2)
    rows = torch.randperm(n, generator=generator)
    return rows[held_out:], rows[:held_out]


class _HeldOut:
    """Held-out pairs a[rows], b[rows] with ``evaluations`` fixed marginal pairings (P, m)."""

    def __init__(
        self,
        a: torch.Tensor,
        b: torch.Tensor,
        rows: torch.Tensor,
        evaluations: int,
        generator: torch.Generator,
    ):
        self.a, self.b = a[rows], b[rows]
        self.pairings = torch.stack([torch.randperm(len(rows), generator=generator) for _ in range(evaluations)])

    def bound(self, network: _JointStatistics) -> float:
        """DV bound of ``network``: joint mean over the pairs, marginal log-mean-exp pooled over the pairings."""
        with torch.no_grad():
            joint = network(self.a, self.b)
            marginal = network(self.a.repeat(self.pairings.shape[0], 1), self.b[self.pairings.reshape(-1)])
            return float(joint.mean() - (torch.logsumexp(marginal, dim=0) - math.log(marginal.numel())))


def _ascent_step(
    network: _JointStatistics,
    optimizer: torch.optim.Optimizer,
    a: torch.Tensor,
    b: torch.Tensor,
    shuffled_b: torch.Tensor,
    moving_average: torch.Tensor | None,
    ema_rate: float,
) -> torch.Tensor:
    """One Adam step on the moving-average-corrected DV gradient; returns the new moving average."""
    joint = network(a, b)
    exp_marginal = network(a, shuffled_b).exp().mean()
    current = exp_marginal.detach()
    moving_average = current if moving_average is None else (1 - ema_rate) * moving_average + ema_rate * current
    loss = -(joint.mean() - exp_marginal / moving_average)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return moving_average


def estimate_mi(
    a: torch.Tensor,
    b: torch.Tensor,
    *,
    steps: int = 3000,
    batch_size: int = 512,
    lr: float = 1e-3,
    hidden: int = 128,
    ema_rate: float = 0.01,
    holdout: float = 0.3,
    eval_every: int = 100,
    patience: int = 5,
    evaluations: int = 20,
    seed: int = 0,
) -> float:
    """Held-out MINE estimate (nats) of I(A; B) from paired samples a (n, d_a), b (n, d_b).

    The pairs are split at random: a fraction ``holdout`` is held out (half
    for validation, half for the estimate) and the MLP statistics network T is
    trained on the rest, on the Donsker-Varadhan bound with the
    moving-average-corrected gradient of Belghazi et al. (2018) (the gradient
    of log E[exp T] is replaced by grad E[exp T] / (moving average of E[exp T]),
    which removes the minibatch bias). Every ``eval_every`` steps the DV bound
    of T is evaluated on the validation pairs (the marginal term pooled over
    ``evaluations`` fixed pairings); training stops after ``patience``
    evaluations without improvement (or after ``steps``). The returned value is
    the DV bound on the estimate pairs of the network that scored best on
    validation: T never trained on them and they did not choose the stopping
    point, so neither memorised pairs nor the choice of the checkpoint inflate
    it (scoring on the training pairs gave 0.58 nats for independent
    10-dimensional Gaussians at n = 10,000). Accuracy against the analytic MI
    of correlated Gaussians: README, "Estimating mutual information".

    Args:
        a, b: paired samples (n, d_a) and (n, d_b), n >= 6.
        steps, batch_size, lr, hidden: the most Adam steps, the minibatch, the
            learning rate and the width of T.
        ema_rate: rate of the moving average of E[exp T].
        holdout: fraction of the pairs held out, in (0, 1).
        eval_every, patience: validation period (steps) and the number of
            validations without improvement that stop training.
        evaluations: marginal pairings pooled in each held-out bound.
        seed: seed of the split, the minibatches and T's initialisation.

    Returns:
        The estimate in nats (a float; can be slightly negative when A, B are independent).

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> z = torch.randn(4000, 1, generator=g)
        >>> noisy = z + 0.1 * torch.randn(4000, 1, generator=g)
        >>> estimate_mi(z, noisy, steps=300) > 1.0
        True

    Raises:
        ValueError: on mismatched, non-finite or fewer than 6 samples, or a
            ``holdout`` outside (0, 1).
    """
    if a.dim() != 2 or b.dim() != 2 or a.shape[0] != b.shape[0]:
        raise ValueError(f"a and b must be (n, d) with equal n, got {tuple(a.shape)} and {tuple(b.shape)}")
    n = a.shape[0]
    if n < 6:
        raise ValueError(f"estimate_mi needs at least 6 paired samples (2 to train, 4 held out), got {n}")
    if not 0.0 < holdout < 1.0:
        raise ValueError(f"holdout must be a fraction in (0, 1), got {holdout}")
    if not (torch.isfinite(a).all() and torch.isfinite(b).all()):
        raise ValueError("a and b must be finite")
    generator = torch.Generator().manual_seed(derive_seed(seed, int(Stream.EVALUATOR)))
    a, b = a.float().cpu(), b.float().cpu()
    train_rows, heldout_rows = _split_rows(n, holdout, generator)
    validation = _HeldOut(a, b, heldout_rows[::2], evaluations, generator)
    scoring = _HeldOut(a, b, heldout_rows[1::2], evaluations, generator)
    train_a, train_b = a[train_rows], b[train_rows]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(seed, 0))
        network = _JointStatistics(a.shape[1], b.shape[1], hidden)
    optimizer = torch.optim.Adam(network.parameters(), lr=lr)
    best_validation, estimate = validation.bound(network), scoring.bound(network)
    checks_without_gain, moving_average = 0, None
    batch = min(batch_size, len(train_rows))
    with torch.enable_grad():
        for step in range(1, steps + 1):
            rows = torch.randint(0, len(train_rows), (batch,), generator=generator)
            shuffled = torch.randint(0, len(train_rows), (batch,), generator=generator)
            moving_average = _ascent_step(
                network,
                optimizer,
                train_a[rows],
                train_b[rows],
                train_b[shuffled],
                moving_average,
                ema_rate,
            )
            if step % eval_every and step != steps:
                continue
            bound = validation.bound(network)
            if bound > best_validation:
                best_validation, estimate, checks_without_gain = bound, scoring.bound(network), 0
            else:
                checks_without_gain += 1
                if checks_without_gain >= patience:
                    break
    return estimate
