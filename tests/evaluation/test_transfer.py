"""uae_augment.evaluation.transfer: Szegedy et al.'s transfer matrix on real digits and real attacks."""

from __future__ import annotations

import copy

import pytest
import torch

from uae_augment import FGSM, PGD
from uae_augment.evaluation import (
    distortion,
    transfer_matrix,
)

from ..helpers import digits, digits_classifier
from .helpers import digits_mlp


@pytest.fixture(scope="module")
def transfer_setup():
    conv, mlp = digits_classifier(), digits_mlp()
    x, y = digits()
    with torch.no_grad():
        both = (conv(x).argmax(1) == y) & (mlp(x).argmax(1) == y)
    rows = torch.nonzero(both).flatten()[:120]
    x, y = x[rows], y[rows]
    sources = {
        "conv": (conv, PGD(conv, epsilon=0.2, steps=10, step_size=0.04, seed=3)),
        "mlp": (mlp, FGSM(mlp, epsilon=0.2)),
    }
    targets = {"conv": conv, "mlp": mlp, "conv copy": copy.deepcopy(conv)}
    matrix = transfer_matrix(sources, targets, x, y, noise_stds=(0.1, 0.3), seed=5)
    return sources, targets, x, y, matrix


def test_transfer_matrix_shape_and_diagonal_equal_the_attacks_asr(transfer_setup):
    sources, targets, x, y, matrix = transfer_setup
    assert matrix.rows == [
        "conv",
        "mlp",
        "noise matched to conv",
        "noise matched to mlp",
        "noise rms=0.1",
        "noise rms=0.3",
    ]
    assert matrix.targets == ["conv", "mlp", "conv copy"]
    assert matrix.error.shape == (6, 3)
    assert bool(((matrix.error >= 0) & (matrix.error <= 1)).all())
    assert matrix.clean_error.tolist() == [0.0, 0.0, 0.0]  # x: correctly classified by both
    for name, (_, attack) in sources.items():
        result = attack(x, y)
        assert matrix.attack_success[name] == pytest.approx(result.asr)
        assert matrix.entry(name, name) == pytest.approx(result.asr)  # success = misclassified
        # an independent recount of one off-diagonal cell
        other = "mlp" if name == "conv" else "conv"
        with torch.no_grad():
            wrong = (targets[other](result.adversarial).argmax(1) != y).float().mean()
        assert matrix.entry(name, other) == pytest.approx(float(wrong))
        assert float(matrix.distortion[matrix.rows.index(name)]) == pytest.approx(
            float(distortion(x, result.adversarial)["rms"].mean()), rel=1e-5
        )
    # a copy of a model is the same target
    assert torch.equal(matrix.error[:, 0], matrix.error[:, 2])
    assert matrix.entry("conv", "conv") > 0.9 and matrix.entry("conv", "conv") > matrix.entry(
        "noise matched to conv", "conv"
    )


def test_noise_rows_match_the_distortion_after_clipping(transfer_setup):
    _, _, x, _, matrix = transfer_setup
    for source in ("conv", "mlp"):
        crafted, noise = matrix.rows.index(source), matrix.rows.index(f"noise matched to {source}")
        assert float(matrix.distortion[noise]) == pytest.approx(float(matrix.distortion[crafted]), rel=1e-4)
    for std in (0.1, 0.3):
        assert float(matrix.distortion[matrix.rows.index(f"noise rms={std:g}")]) == pytest.approx(std, rel=1e-4)
    as_dict = matrix.as_dict()
    assert set(as_dict["error"]) == set(matrix.rows) and set(as_dict["clean_error"]) == set(matrix.targets)


def test_transfer_matrix_is_seeded_and_rejects_mismatched_attacks(transfer_setup):
    sources, targets, x, y, matrix = transfer_setup
    again = transfer_matrix(sources, targets, x, y, noise_stds=(0.1, 0.3), seed=5)
    assert torch.equal(again.error, matrix.error)
    conv, mlp = digits_classifier(), digits_mlp()
    with pytest.raises(ValueError, match="not built on its source model"):
        transfer_matrix({"conv": (conv, FGSM(mlp, epsilon=0.1))}, targets, x, y)
    with pytest.raises(ValueError, match="at least one"):
        transfer_matrix({}, targets, x, y)
    with pytest.raises(ValueError, match="noise_stds"):
        transfer_matrix(sources, targets, x, y, noise_stds=(-1.0,))
