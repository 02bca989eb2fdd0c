"""Batched per-sample MINE (docs/method.md section 1): B estimators for one batch, trained by Adam.

Per-sample MINE estimates how much information a candidate x' = clip(x + delta)
keeps about x from the pair alone. The B samples' statistics networks are
stacked (:class:`~uae_augment.mine.statistics_network.StatisticsNetwork`) and
trained sub-batch by sub-batch, one fused Adam per sub-batch. Adam is
element-wise and the objective is a sum over samples, so this equals B separate
optimisers. :func:`per_sample_mi` is the independent evaluator built on it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from .._seeding import Stream, sample_streams, stacked_permutations
from .samplers import RandomProjectionSampler, Sampler
from .statistics_network import StatisticsNetwork, Workspace


def make_adam(parameters: Sequence[nn.Parameter] | nn.Module, lr: float) -> torch.optim.Adam:
    """Adam with the fused kernel where available (PyTorch's default CPU Adam is ~6x slower)."""
    params = list(parameters.parameters()) if isinstance(parameters, nn.Module) else list(parameters)
    if any(p.device.type == "meta" for p in params):  # no fused kernel on meta (device tests)
        return torch.optim.Adam(params, lr=lr, foreach=False)
    try:
        return torch.optim.Adam(params, lr=lr, fused=True)
    except (RuntimeError, ValueError):  # pragma: no cover - old torch or unsupported device
        return torch.optim.Adam(params, lr=lr, foreach=True)


SUB_BATCH_BYTES = 24 * 2**20
"""Working-set budget of one MINE training sub-batch (bytes): its rows' parameters,
gradients, Adam moments and step temporaries, so that the S steps of an attack
iteration reuse cached state and every temporary is small enough to be recycled
by the allocator (no page faults per step)."""

SUB_BATCH_MULTIPLE = 8
"""Sub-batches hold a multiple of this many rows (measured: at B = 64 with one
thread, 8-row sub-batches give bitwise the whole-batch results, 3-row ones do not)."""


def sub_batch_rows(network: StatisticsNetwork, count: int, budget: int = SUB_BATCH_BYTES) -> int:
    """Rows per MINE sub-batch: the budget's rows rounded up to a multiple of 8 (x4 with several threads).

    Per row: 4 floats per parameter (value, gradient, two Adam moments) and the
    step's temporaries (for map samples two K x (k*k + 1)H'W' tap tensors and two
    folded first-layer weights of that width, four K x hidden ones with a hidden
    layer). With more than one torch
    thread the sub-batch is 4x larger: measured on 2 shared cores, 8-row
    sub-batches spent 3.4x the CPU time of 32-row ones in thread synchronisation.
    """
    params = sum(p[0].numel() for p in network.parameters())
    temporaries = 0
    if network.is_map:
        taps = (network.conv_kernel**2 + 1) * network.features // network.conv_channels
        temporaries = 2 * taps * (count + (network.hidden or network.embed))
    if network.hidden is not None:
        temporaries += 4 * count * network.hidden
    rows = max(1, budget // (4 * (4 * params + temporaries)))
    rows = -(-rows // SUB_BATCH_MULTIPLE) * SUB_BATCH_MULTIPLE
    return rows if torch.get_num_threads() == 1 else 4 * rows


class PerSampleMINE:
    """B per-sample MINE estimators for one batch: estimate, and train by Adam.

    Training runs sub-batch by sub-batch (:func:`sub_batch_rows` rows each): all
    ``steps`` Adam steps of one sub-batch, then the next, with one fused Adam per
    sub-batch over views of the stacked parameters. Samples never interact, so this
    is the same computation as stepping the whole batch at once: the training steps
    are bitwise equal with one thread (with several, MKL may split one sample's
    products differently, as it already does between batch sizes); :meth:`estimate`
    also runs by sub-batch.

    Args:
        sample_shape: shape of one paired sample (H, W) or (dim,).
        seed: attack seed; parameters and permutations of sample i come from
            generators seeded by (seed, index[i]).
        index: (B,) global indices of the batch's samples.
        count: K, the number of paired samples per sample.
        lr: Adam learning rate (1.5e-5 in the release).
        hidden, embed: statistics-network widths (see :class:`StatisticsNetwork`).
        device: where the parameters live.
        init_round: re-initialisation counter (penalty attacks draw fresh networks).
        sub_batch: rows per training sub-batch (default :func:`sub_batch_rows`).
        device_draws: draw the initial parameters and the permutations on ``device``
            with counter-based streams (:class:`~uae_augment._seeding.CounterStreams`)
            instead of CPU generators; default: on any device but the CPU (the CPU
            keeps the generator streams). Either way sample i's draws depend only on
            (seed, index[i]).
    """

    def __init__(
        self,
        sample_shape: Sequence[int],
        *,
        seed: int,
        index: torch.Tensor,
        count: int,
        lr: float,
        hidden: int | None = 512,
        embed: int = 10,
        device: torch.device | str = "cpu",
        init_round: int = 0,
        sub_batch: int | None = None,
        device_draws: bool | None = None,
    ):
        init_generators = sample_streams(
            seed, index, Stream.MINE_INIT, init_round, device=device, on_device=device_draws
        )
        self.network = StatisticsNetwork(sample_shape, init_generators, hidden=hidden, embed=embed).to(device)
        self._permutation_generators = sample_streams(
            seed, index, Stream.PERMUTATION, init_round, device=device, on_device=device_draws
        )
        self.count = count
        self.device = torch.device(device)
        self.workspace = Workspace()
        rows = sub_batch if sub_batch is not None else sub_batch_rows(self.network, count)
        if rows < 1:
            raise ValueError(f"sub_batch must be >= 1, got {rows}")
        batch = self.network.batch
        self.sub_batches = [slice(start, min(start + rows, batch)) for start in range(0, batch, rows)]
        self.optimizers = [make_adam(self._row_views(part), lr) for part in self.sub_batches]

    @property
    def optimizer(self) -> torch.optim.Adam:
        """The first sub-batch's Adam (every sub-batch has the same settings)."""
        return self.optimizers[0]

    def _row_views(self, rows: slice) -> list[torch.Tensor]:
        """Leaf views of every parameter's ``rows``, with their gradients viewing the gradient buffers."""
        views = []
        for parameter in self.network.parameters():
            view = parameter.detach()[rows]
            view.grad = self.network._grad(parameter)[rows]
            views.append(view)
        return views

    def permutations(self, number: int) -> torch.Tensor:
        """The next ``number`` fresh permutations per sample: (number, B, K)."""
        perms = stacked_permutations(self._permutation_generators, number, self.count, device=self.device)
        return perms.transpose(0, 1)

    def estimate(self, u: torch.Tensor, v: torch.Tensor, permutation: torch.Tensor | None = None) -> torch.Tensor:
        """I_theta(x, x') per sample (B,), differentiable w.r.t. u, v and theta."""
        if permutation is None:
            permutation = self.permutations(1)[0]
        # by sub-batch: each sub-batch's temporaries are small enough to be recycled by the allocator
        parts = [self.network(u[rows], v[rows], permutation[rows], rows) for rows in self.sub_batches]
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    def train(self, u: torch.Tensor, v: torch.Tensor, steps: int) -> torch.Tensor:
        """``steps`` Adam steps maximising I_theta on fixed (u, v); returns the last estimates (B,)."""
        u, v = u.detach(), v.detach()
        last = torch.full((u.shape[0],), float("nan"), device=u.device)
        if steps <= 0:
            return last
        permutations = self.permutations(steps)
        for rows, optimizer in zip(self.sub_batches, self.optimizers):
            taps = (self.network.patches(u[rows]), self.network.patches(v[rows]))
            for step in range(steps):
                estimate = self.network.ascent_gradients(
                    u[rows], v[rows], permutations[step, rows], taps, rows, self.workspace
                )
                optimizer.step()
            last[rows] = estimate
        return last


def per_sample_mi(
    x: torch.Tensor,
    x_other: torch.Tensor,
    sampler: Sampler | None = None,
    *,
    steps: int = 600,
    lr: float = 1e-3,
    hidden: int | None = None,
    projections: int = 200,
    projection_dim: int = 32,
    evaluations: int = 16,
    seed: int = 0,
    index: torch.Tensor | None = None,
) -> torch.Tensor:
    """An independent per-sample MI score: a fresh per-sample MINE, same budget for every pair.

    Scores every pair (x_i, x_other_i) with identical settings, so scores of
    different attacks are comparable (an attack's own running estimate is not:
    it depends on how long and how that attack trained its network). The value
    is the DV bound averaged over ``evaluations`` fresh permutations after
    ``steps`` Adam steps.

    The default sampler is random projections (``projections`` x ``projection_dim``):
    its K samples are exchangeable, so the score measures how much x_other says
    about x. Feature-map samples are not suitable here: each map carries the
    identity of the filter that made it, so a statistics network separates
    joint from shuffled pairs even for unrelated images (measured: an unrelated
    MNIST digit scored 7.6 nats, the identical image 6.7).

    Args:
        x, x_other: (N, ...) pairs to score.
        sampler: the paired-sample construction (default: random projections).
        steps, lr, hidden: training budget and statistics-network width.
        projections, projection_dim: random-projection K and sample length.
        evaluations: permutations averaged in the final estimate.
        seed: seed of the projections, network init and permutations.
        index: global indices (N,) for per-sample seeding (default arange(N)).

    Returns:
        (N,) MI scores in nats.
    """
    index = torch.arange(x.shape[0]) if index is None else index.cpu()
    if sampler is None:
        sampler = RandomProjectionSampler(math.prod(x.shape[1:]), projections, projection_dim, seed)
    with torch.no_grad():
        u, v = sampler(x), sampler(x_other)
    mine = PerSampleMINE(
        u.shape[2:],
        seed=seed,
        index=index,
        count=u.shape[1],
        lr=lr,
        hidden=hidden,
        device=x.device,
        init_round=int(Stream.EVALUATOR),
    )
    mine.train(u, v, steps)
    with torch.no_grad():
        values = [mine.estimate(u, v, perm) for perm in mine.permutations(evaluations)]
    return torch.stack(values).mean(dim=0)
