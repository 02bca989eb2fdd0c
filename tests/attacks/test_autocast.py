"""Attacks under ``torch.autocast`` (bf16 model compute) on CPU; half-precision inputs and models raise.

The victim runs in bfloat16 under the caller's autocast; the attack's own state
(perturbation, MINE, constants) stays in float32, so the results keep the
[0, 1] box and the epsilon-ball.
"""

from __future__ import annotations

import copy

import pytest
import torch

from tests.helpers import (
    digits,
    digits_classifier,
    digits_conv_autoencoder,
    digits_dense_autoencoder,
)
from uae_augment import (
    FGSM,
    LBFGS,
    MINEUAE,
    PGD,
    ClassifierMargin,
    LpUAE,
    MinMaxAttack,
    PenaltyAttack,
    Reconstruction,
)

EPSILON = 0.2


def _attacks() -> dict:
    ae, dense, classifier = (
        digits_conv_autoencoder(),
        digits_dense_autoencoder(),
        digits_classifier(),
    )
    margin = ClassifierMargin(classifier)
    mine = dict(epsilon=EPSILON, mine_steps=2)
    return {
        "mine-uae fast": (MINEUAE(Reconstruction(ae), preset="fast", steps=4, **mine), False),
        "mine-uae paper": (
            MINEUAE(Reconstruction(ae), preset="paper", steps=3, statistics_hidden=16, **mine),
            False,
        ),
        "mine-uae projections": (
            MINEUAE(
                Reconstruction(dense),
                preset="fast",
                steps=3,
                projections=16,
                projection_dim=8,
                **mine,
            ),
            False,
        ),
        "supervised minmax": (MinMaxAttack(margin, steps=4, statistics_hidden=16, **mine), True),
        "penalty": (
            PenaltyAttack(margin, search_steps=2, steps=2, preset="fast", epsilon=EPSILON, mine_steps=1),
            True,
        ),
        "lp-uae": (LpUAE(Reconstruction(ae), steps=4, epsilon=EPSILON), False),
        "pgd": (PGD(classifier, epsilon=EPSILON), True),
        "fgsm": (FGSM(classifier, epsilon=EPSILON), True),
        "lbfgs": (LBFGS(classifier, search_steps=2, max_iter=5), True),
    }


@pytest.mark.parametrize("name", list(_attacks()))
def test_attacks_run_under_bf16_autocast(name):
    attack, supervised = _attacks()[name]
    x, y = digits()
    x, y = x[:4], y[:4]
    model = attack.models()[0]
    seen: list[torch.dtype] = []
    hook = model.register_forward_hook(lambda module, args, out: seen.append(out.dtype))
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            result = attack(x, y) if supervised else attack(x)
    finally:
        hook.remove()
    assert torch.bfloat16 in seen  # the victim really computed in bf16
    adversarial = result.adversarial
    assert adversarial.dtype == torch.float32 and torch.isfinite(adversarial).all()
    assert adversarial.min() >= 0.0 and adversarial.max() <= 1.0
    if name != "lbfgs":  # L-BFGS has no epsilon-ball
        assert (adversarial - x).abs().max() <= EPSILON + 1e-6
    assert result.success.dtype == torch.bool and torch.isfinite(result.criterion).all()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_inputs_and_models_raise_a_clear_error(dtype):
    x = digits()[0][:2]
    ae = digits_conv_autoencoder()
    with pytest.raises(ValueError, match=rf"x is {dtype}.*torch.autocast"):
        MINEUAE(Reconstruction(ae), preset="fast", steps=2)(x.to(dtype))
    half = copy.deepcopy(ae).to(dtype)
    with pytest.raises(ValueError, match=rf"Sequential has {dtype} parameters.*torch.autocast"):
        MINEUAE(Reconstruction(half), preset="fast", steps=2)(x)
    with pytest.raises(ValueError, match="torch.autocast"):
        PGD(copy.deepcopy(digits_classifier()).to(dtype), epsilon=0.1)(x, torch.tensor([0, 1]))
