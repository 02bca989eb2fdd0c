"""A plain per-sample reference of the MinMax attack, written straightforwardly.

One sample at a time, a fresh ``nn.Module`` statistics network built from
``nn.Conv2d`` / ``nn.Linear``, autograd everywhere and ``torch.optim.Adam`` with
default settings: the faithful loop that the batched engine is checked against
(tests) and measured against (benchmarks/attack_speed.py). It consumes the same
per-sample random streams as the engine, so both must give the same outputs.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from uae_augment._seeding import Stream, sample_generator
from uae_augment.attacks._minmax_loop import glorot_limit


def _uniform(generator: torch.Generator, shape: tuple[int, ...], limit: float) -> torch.Tensor:
    return torch.empty(shape).uniform_(-limit, limit, generator=generator)


class ReferenceStatisticsNetwork(nn.Module):
    """The release's T_theta for one sample: two unshared branches and a bias-free output."""

    def __init__(
        self,
        sample_shape: tuple[int, ...],
        generator: torch.Generator,
        hidden: int | None,
        embed: int = 10,
    ):
        super().__init__()
        self.is_map = len(sample_shape) == 2
        self.branches = nn.ModuleDict()
        for name in ("u", "v"):
            layers: list[nn.Module] = []
            if self.is_map:
                conv = nn.Conv2d(1, 16, 2)
                conv.weight.data = _uniform(generator, (16, 4), math.sqrt(6 / (4 + 64))).view(16, 1, 2, 2)
                conv.bias.data.zero_()
                layers += [conv, nn.Flatten()]
                features = 16 * (sample_shape[0] - 1) * (sample_shape[1] - 1)
            else:
                features = sample_shape[0]
            widths = [features, embed] if hidden is None else [features, hidden, embed]
            for fan_in, fan_out in zip(widths[:-1], widths[1:]):
                linear = nn.Linear(fan_in, fan_out)
                linear.weight.data = _uniform(
                    generator, (fan_in, fan_out), math.sqrt(6 / (fan_in + fan_out))
                ).T.contiguous()
                linear.bias.data.zero_()
                layers.append(linear)
            self.branches[name] = nn.Sequential(*layers)
        self.out = nn.Linear(embed, 1, bias=False)
        self.out.weight.data = _uniform(generator, (embed,), math.sqrt(6 / (embed + 1))).view(1, embed)

    def forward(self, u: torch.Tensor, v: torch.Tensor, permutation: torch.Tensor) -> torch.Tensor:
        if self.is_map:
            u, v = u.unsqueeze(1), v.unsqueeze(1)
        a = self.branches["u"](u)
        b = self.branches["v"](v)
        joint = self.out(torch.relu(a + b)).squeeze(1)
        marginal = self.out(torch.relu(a + b[permutation])).squeeze(1)
        return joint.mean() - (torch.logsumexp(marginal, 0) - math.log(len(marginal)))


def _permutations(generator: torch.Generator, count: int, size: int) -> torch.Tensor:
    return torch.empty(count, size).uniform_(0.0, 1.0, generator=generator).argsort(dim=-1)


def reference_minmax(
    x: torch.Tensor,
    criterion,
    sampler,
    *,
    supervised: bool,
    label: torch.Tensor | None = None,
    index: int = 0,
    seed: int = 0,
    steps: int = 40,
    mine_steps: int = 20,
    epsilon: float = 1.0,
    alpha: float = 0.01,
    beta: float = 0.1,
    c0: float = 1e-3,
    mine_lr: float = 1.5e-5,
    gamma_power: float = 0.25,
    hidden: int | None = 512,
) -> dict[str, torch.Tensor]:
    """Attacks ONE sample x (C, H, W) (or (d,)); returns its kept iterate and scores."""
    x = x.detach()
    limit = glorot_limit(tuple(x.shape))
    delta = _uniform(sample_generator(seed, index, Stream.DELTA_INIT, 0), tuple(x.shape), limit).clamp(
        -epsilon, epsilon
    )
    start = torch.clamp(x + delta, 0, 1)
    y = None if label is None else label.view(1)
    reference = criterion.prepare(x[None], y, torch.tensor([index]))
    with torch.no_grad():
        u = sampler(x[None])[0]
    network = ReferenceStatisticsNetwork(tuple(u.shape[1:]), sample_generator(seed, index, Stream.MINE_INIT, 0), hidden)
    optimizer = torch.optim.Adam(network.parameters(), lr=mine_lr)
    permutation_generator = sample_generator(seed, index, Stream.PERMUTATION, 0)
    count = u.shape[0]
    c = c0
    best, best_score, best_f, found = None, None, None, False
    fallback, fallback_f, fallback_score = None, math.inf, None
    for t in range(steps):
        delta = delta.detach().requires_grad_(True)
        x_adv = torch.clamp(x + delta, 0, 1)
        f = criterion(x_adv[None], reference)[0]
        mi = network(u, sampler(x_adv[None])[0], _permutations(permutation_generator, 1, count)[0])
        f_value, mi_value = float(f.detach()), float(mi.detach())
        ok = f_value <= 0 and (supervised or mi_value > 0)
        if ok and (best is None or (mi_value > best_score if supervised else mi_value < best_score)):
            best, best_score, best_f = x_adv.detach().clone(), mi_value, f_value
        found = found or ok
        if f_value < fallback_f:
            fallback, fallback_f, fallback_score = x_adv.detach().clone(), f_value, mi_value
        if t == steps - 1:
            break
        loss = c * f + (-mi if supervised else mi)
        (grad,) = torch.autograd.grad(loss, delta)
        delta = torch.clamp(delta.detach() - alpha * grad, -epsilon, epsilon)
        with torch.no_grad():
            v = sampler(torch.clamp(x + delta, 0, 1)[None])[0]
        permutations = _permutations(permutation_generator, mine_steps, count)
        for s in range(mine_steps):
            optimizer.zero_grad()
            (-network(u, v, permutations[s])).backward()
            optimizer.step()
        c = max(0.0, (1 - beta * (t + 1) ** (-gamma_power)) * c + beta * f_value)
    chosen = best if found else fallback
    return {
        "adversarial": chosen,
        "success": torch.tensor(found),
        "mi": torch.tensor(best_score if found else fallback_score),
        "criterion": torch.tensor(best_f if found else fallback_f),
        "moved_linf": (chosen - start).abs().max(),
        "final_c": torch.tensor(c),
    }
