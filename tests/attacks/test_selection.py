"""Which iterate an attack keeps: the running score (paper, fast) or one common scale, cos(x, x') (strong)."""

from __future__ import annotations

import pytest
import torch

from tests.helpers import digits_conv_autoencoder
from uae_augment import MINEUAE, LpUAE, Reconstruction
from uae_augment.attacks._minmax_loop import LoopSettings, flat_cosine, run_minmax
from uae_augment.criteria import Criterion
from uae_augment.mine import projection_mi


class _EveryOther(Criterion):
    """f = -1 (success) on even calls, +1 on odd ones; no gradient of its own."""

    def __init__(self) -> None:
        super().__init__(torch.nn.Identity())
        self.calls = 0

    def prepare(self, x, y, index):  # type: ignore[no-untyped-def]
        return None

    def __call__(self, x_adv, reference):  # type: ignore[no-untyped-def]
        sign = 1.0 if self.calls % 2 else -1.0
        self.calls += 1
        return x_adv.flatten(1).sum(1) * 0 + sign


class _WarmStarted:
    """An analytic MI plus an offset that rises 100 nats per iteration, like a MINE estimate while it trains.

    Records every iterate it scores.
    """

    reports_mi = True

    def __init__(self, x: torch.Tensor):
        self.x, self.offset, self.seen = x, 0.0, []

    def value(self, x_adv: torch.Tensor) -> torch.Tensor:
        self.seen.append(x_adv.detach().clone())
        return projection_mi(flat_cosine(self.x, x_adv), 8) + self.offset

    def update(self, x_adv: torch.Tensor) -> None:
        self.offset += 100.0

    @staticmethod
    def valid(values: torch.Tensor) -> torch.Tensor:
        return values > 0


def _run(select: str, steps: int = 9):
    x = torch.rand(5, 1, 6, 6, generator=torch.Generator().manual_seed(0)) * 0.8 + 0.1
    delta0 = 0.05 * torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    similarity = _WarmStarted(x)
    settings = LoopSettings(
        supervised=False,
        steps=steps,
        epsilon=1.0,
        alpha=0.03,
        beta=0.1,
        gamma_power=0.25,
        delta_update="sign",
        select=select,
    )
    result = run_minmax(x, None, _EveryOther(), similarity, delta0, torch.zeros(5), settings)
    iterates = torch.stack(similarity.seen, dim=1)  # (B, T, ...)
    cos = torch.stack([flat_cosine(x, iterates[:, t]) for t in range(steps)], dim=1)
    return x, result, iterates, cos


def test_cosine_selection_keeps_the_successful_iterate_of_lowest_cosine():
    x, result, iterates, cos = _run("cosine")
    successful = torch.arange(cos.shape[1]) % 2 == 0
    expected = torch.where(successful, cos, torch.inf).argmin(dim=1)
    assert torch.equal(result.best_iteration, expected)
    assert torch.equal(result.adversarial, iterates[torch.arange(5), expected])
    assert (expected > 0).all()  # the rising score would have kept iteration 0 ...
    _, running, _, _ = _run("running")
    assert (running.best_iteration == 0).all()  # ... and does under the release's rule
    # the result reports the term's value at the kept iterate, not the selection key
    offset = 100.0 * expected.double()
    torch.testing.assert_close(result.mi.double(), projection_mi(cos[torch.arange(5), expected], 8).double() + offset)


@pytest.mark.parametrize("preset", ["paper", "fast"])
def test_paper_and_fast_keep_the_running_rule_and_their_config(preset):
    attack = MINEUAE(Reconstruction(digits_conv_autoencoder()), preset=preset)
    assert attack.select == "running" and attack.mi == "mine"
    assert "select" not in attack.config() and "mi" not in attack.config()  # cache fingerprints unchanged


def test_strong_selects_on_the_common_scale_and_reports_it():
    attack = MINEUAE(Reconstruction(digits_conv_autoencoder()), preset="strong")
    assert attack.select == "cosine" and attack.config()["select"] == "cosine"
    assert MINEUAE(Reconstruction(digits_conv_autoencoder()), preset="strong", select="running").select == "running"


def test_select_validation():
    criterion = Reconstruction(digits_conv_autoencoder())
    with pytest.raises(ValueError, match="select must be one of"):
        MINEUAE(criterion, select="latest")
    with pytest.raises(ValueError, match="LpUAE keeps the successful iterate farthest"):
        LpUAE(criterion, select="cosine")
    l2 = LpUAE(criterion, preset="strong")
    assert l2.select == "running" and "select" not in l2.config()
