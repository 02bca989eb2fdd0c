"""uae_augment.evaluation against independent recomputations on real digits and real attacks."""

from __future__ import annotations

import copy
import functools
import itertools
import math

import numpy as np
import pytest
import torch
from torch import nn

from uae_augment import FGSM, PGD
from uae_augment.evaluation import (
    ConfidenceTable,
    accuracy,
    confidence_table,
    conv_norm_bound,
    correctly_classified,
    distortion,
    lipschitz_bounds,
    operator_norm,
    predict,
    reconstruction_error,
    transfer_matrix,
)
from uae_augment.models import LeNet

from .helpers import _train, digits, digits_classifier, digits_dense_autoencoder


@functools.lru_cache(maxsize=1)
def digits_mlp() -> nn.Module:
    """A second, differently built classifier on the same digits (a dense net)."""
    torch.manual_seed(1)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    x, y = digits()
    return _train(model, x, y, nn.functional.cross_entropy, epochs=10)


# --------------------------------------------------------------------------- scores


def test_confidence_table_matches_a_numpy_recomputation():
    model = digits_classifier()
    x, y = digits()
    x, y = x[:400], y[:400]
    fooled = FGSM(model, epsilon=0.15)(x, y).adversarial
    for inputs in (x, fooled):
        with torch.no_grad():
            logits = model(inputs).double().numpy()
        shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
        probabilities = shifted / shifted.sum(axis=1, keepdims=True)
        predicted, confidence = probabilities.argmax(axis=1), probabilities.max(axis=1)
        hit = predicted == y.numpy()
        table = confidence_table(model, inputs, y, batch_size=64)
        assert table.n == 400
        assert table.correct == pytest.approx(hit.mean(), abs=1e-9)
        assert table.error == pytest.approx(1 - hit.mean(), abs=1e-9)
        assert table.confidence == pytest.approx(confidence.mean(), abs=1e-5)
        assert table.confidence_correct == pytest.approx(confidence[hit].mean(), abs=1e-5)
        assert table.confidence_error == pytest.approx(confidence[~hit].mean(), abs=1e-5)
        # the reference's columns are consistent: overall = mix of correct and wrong
        mixed = table.correct * table.confidence_correct + table.error * table.confidence_error
        assert table.confidence == pytest.approx(mixed, abs=1e-5)
        assert accuracy(model, inputs, y) == pytest.approx(table.correct)
    clean, attacked = confidence_table(model, x, y), confidence_table(model, fooled, y)
    assert clean.correct > 0.9 and attacked.correct < clean.correct - 0.3


def test_confidence_table_without_errors_reports_nan_and_as_dict():
    logits = torch.tensor([[5.0, 0.0], [0.0, 5.0]])
    table = ConfidenceTable.from_logits(logits, torch.tensor([0, 1]))
    assert table.correct == 1.0 and math.isnan(table.confidence_error)
    assert table.confidence_correct == pytest.approx(1 / (1 + math.exp(-5)))
    assert set(table.as_dict()) == {"n", "correct", "error", "confidence", "confidence_correct", "confidence_error"}


def test_predict_restores_modes_and_checks_inputs():
    model = nn.Sequential(nn.Flatten(), nn.Dropout(0.5), nn.Linear(4, 2)).train()
    x = torch.rand(16, 1, 2, 2)
    first, second = predict(model, x, batch_size=5), predict(model, x)
    assert torch.allclose(first, second, atol=1e-6)  # eval mode: no dropout; chunking does not matter
    assert model.training and all(p.requires_grad for p in model.parameters())
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        predict(model, x * 3)
    with pytest.raises(ValueError, match="batch_size"):
        predict(model, x, batch_size=0)
    with pytest.raises(ValueError, match="out of range"):
        accuracy(model, x, torch.full((16,), 7))


def test_correctly_classified_keeps_rows_every_model_gets_right_in_a_seeded_order():
    conv, mlp = digits_classifier(), digits_mlp()
    x, y = digits()
    with torch.no_grad():
        both = ((conv(x).argmax(1) == y) & (mlp(x).argmax(1) == y)).nonzero().flatten()
    assert torch.equal(correctly_classified({"conv": conv, "mlp": mlp}, x, y), both)
    some = correctly_classified([conv, mlp], x, y, count=50, seed=3)
    assert len(some) == 50 and torch.equal(some, some.sort().values)
    assert set(some.tolist()) <= set(both.tolist())
    assert not torch.equal(some, both[:50])  # a random choice, not a prefix (digits are not shuffled by class)
    assert torch.equal(some, correctly_classified([conv, mlp], x, y, count=50, seed=3))
    assert len(correctly_classified(conv, x, y)) >= len(both)
    with pytest.raises(ValueError, match="at least one model"):
        correctly_classified([], x, y)


def test_reconstruction_error_is_the_per_pixel_mse():
    model = digits_dense_autoencoder()
    x, _ = digits()
    with torch.no_grad():
        expected = ((model(x) - x) ** 2).mean(dim=(1, 2, 3))
    per_sample = reconstruction_error(model, x, reduction="none", batch_size=100)
    assert torch.allclose(per_sample, expected, atol=1e-7)
    assert reconstruction_error(model, x) == pytest.approx(float(expected.mean()), rel=1e-5)
    assert 0 < float(expected.mean()) < 0.1
    with pytest.raises(ValueError, match="reconstructions of shape"):
        reconstruction_error(nn.Flatten(), x)
    with pytest.raises(ValueError, match="reduction"):
        reconstruction_error(model, x, reduction="sum")


def test_distortion_matches_the_definitions():
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(5, 1, 3, 3, generator=generator)
    x_adv = torch.rand(5, 1, 3, 3, generator=generator)
    sizes = distortion(x, x_adv)
    delta = (x_adv - x).reshape(5, 9).numpy().astype(np.float64)
    assert np.allclose(sizes["l2"].numpy(), np.sqrt((delta**2).sum(axis=1)), atol=1e-6)
    assert np.allclose(sizes["linf"].numpy(), np.abs(delta).max(axis=1), atol=1e-7)
    assert np.allclose(sizes["rms"].numpy(), np.sqrt((delta**2).mean(axis=1)), atol=1e-6)
    with pytest.raises(ValueError, match="same shape"):
        distortion(x, x[:2])


# --------------------------------------------------------------------------- transferability


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
    assert matrix.rows == ["conv", "mlp", "noise matched to conv", "noise matched to mlp", "noise rms=0.1", "noise rms=0.3"]
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
    assert matrix.entry("conv", "conv") > 0.9 and matrix.entry("conv", "conv") > matrix.entry("noise matched to conv", "conv")


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


# --------------------------------------------------------------------------- Lipschitz bounds


def dense_conv_matrix(conv: nn.Conv2d, shape: tuple[int, int, int]) -> np.ndarray:
    """The conv operator (bias dropped, zero padding) as a dense matrix, by explicit index loops."""
    channels, height, width = shape
    weight = conv.weight.detach().double().numpy()
    out_channels, in_per_group, kh, kw = weight.shape
    (sh, sw), (ph, pw), (dh, dw) = conv.stride, conv.padding, conv.dilation
    out_h = (height + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    out_w = (width + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    per_group_out = out_channels // conv.groups
    matrix = np.zeros((out_channels * out_h * out_w, channels * height * width))
    for o, i, j in itertools.product(range(out_channels), range(out_h), range(out_w)):
        group = o // per_group_out
        row = (o * out_h + i) * out_w + j
        for c, a, b in itertools.product(range(in_per_group), range(kh), range(kw)):
            r, s = i * sh - ph + a * dh, j * sw - pw + b * dw
            if 0 <= r < height and 0 <= s < width:
                channel = group * in_per_group + c
                matrix[row, (channel * height + r) * width + s] += weight[o, c, a, b]
    return matrix


CONVS = [
    dict(in_channels=2, out_channels=3, kernel_size=3),
    dict(in_channels=2, out_channels=3, kernel_size=3, stride=2, padding=1),
    dict(in_channels=3, out_channels=4, kernel_size=(3, 2), stride=(2, 1), padding=(2, 1)),
    dict(in_channels=2, out_channels=2, kernel_size=3, padding=2, dilation=2),
    dict(in_channels=4, out_channels=2, kernel_size=2, stride=2, groups=2),
]


@pytest.mark.parametrize("options", CONVS)
def test_conv_power_iteration_matches_the_exact_spectral_norm(options):
    torch.manual_seed(0)
    conv = nn.Conv2d(**options)
    shape = (options["in_channels"], 7, 6)
    matrix = dense_conv_matrix(conv, shape)
    with torch.no_grad():  # the loop-built matrix is the operator torch applies
        probe = torch.rand(1, *shape, dtype=torch.float64)
        applied = nn.functional.conv2d(probe, conv.weight.double(), None, conv.stride, conv.padding, conv.dilation, conv.groups)
    assert np.allclose(matrix @ probe.flatten().numpy(), applied.flatten().numpy(), atol=1e-10)
    exact = float(torch.linalg.matrix_norm(torch.from_numpy(matrix), ord=2))
    estimate = operator_norm(conv, shape)
    assert estimate == pytest.approx(exact, rel=1e-3)
    assert estimate <= exact * (1 + 1e-9)  # power iteration approaches from below
    assert conv_norm_bound(conv) >= exact * (1 - 1e-9)


def test_conv_with_other_padding_modes_uses_the_true_adjoint():
    torch.manual_seed(0)
    for conv in (nn.Conv2d(2, 3, 3, padding=1, padding_mode="circular"), nn.Conv2d(2, 3, 3, padding="same")):
        shape = (2, 6, 6)
        basis = torch.eye(72).view(72, *shape)
        with torch.no_grad():
            matrix = conv._conv_forward(basis, conv.weight, None).flatten(1).T.double()
        assert operator_norm(conv, shape) == pytest.approx(float(torch.linalg.matrix_norm(matrix, ord=2)), rel=1e-3)


def test_dense_layer_bound_is_the_exact_spectral_norm():
    torch.manual_seed(0)
    layer = nn.Linear(30, 20)
    exact = np.linalg.svd(layer.weight.detach().double().numpy(), compute_uv=False)[0]
    assert operator_norm(layer) == pytest.approx(exact, rel=1e-12)
    report = lipschitz_bounds(nn.Sequential(layer), (30,))
    assert report.layers[0].norm == report.layers[0].bound == pytest.approx(exact, rel=1e-12)
    assert report.layers[0].size == "30x20" and report.product == pytest.approx(exact, rel=1e-12)


def test_conv_bound_is_exact_for_one_by_one_kernels_and_needs_an_input_shape():
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 5, 1)
    channel_mix = float(torch.linalg.matrix_norm(conv.weight.detach().double().flatten(1), ord=2))
    assert conv_norm_bound(conv) == pytest.approx(channel_mix, rel=1e-12)
    assert operator_norm(conv, (3, 4, 4)) == pytest.approx(channel_mix, rel=1e-6)
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        operator_norm(conv)
    with pytest.raises(TypeError, match="nn.Linear and nn.Conv2d"):
        operator_norm(nn.ReLU())


def test_lipschitz_report_of_lenet_follows_the_layer_table_and_bounds_the_model():
    torch.manual_seed(0)
    model = LeNet()
    report = lipschitz_bounds(model, (1, 28, 28), tol=1e-5)
    kinds = [layer.kind for layer in report.layers]
    assert kinds == ["Conv2d", "MaxPool2d", "Conv2d", "MaxPool2d", "Conv2d", "ReLU", "Conv2d", "Flatten"]
    convs = [layer for layer in report.layers if layer.kind == "Conv2d"]
    assert [c.size for c in convs] == ["1x5x5x20", "20x5x5x50", "50x4x4x500", "500x1x1x10"]
    assert [c.input_shape[1] for c in convs] == [28, 12, 4, 1]  # the reference's data sizes
    assert [c.output_shape[1] for c in convs] == [24, 8, 1, 1]
    assert all(c.norm <= c.bound * (1 + 1e-9) for c in convs)
    assert report.product == pytest.approx(math.prod(layer.norm for layer in report.layers))
    # the product bounds the model's local Lipschitz constant: ||J(x)^T u|| <= L for unit u
    x, _ = digits()
    inputs = nn.functional.interpolate(x[:16], size=(28, 28)).requires_grad_(True)
    outputs = model(inputs)
    direction = torch.randn_like(outputs)
    direction = direction / direction.norm(dim=1, keepdim=True)
    (grad,) = torch.autograd.grad((outputs * direction).sum(), inputs)
    assert float(grad.flatten(1).norm(dim=1).max()) <= report.product
    assert model.training  # modes restored


def test_layer_constants_and_errors():
    report = lipschitz_bounds(
        nn.Sequential(nn.Sigmoid(), nn.MaxPool2d(3, stride=2), nn.MaxPool2d(2), nn.LeakyReLU(2.0)), (1, 9, 9)
    )
    assert [layer.norm for layer in report.layers] == [0.25, 2.0, 1.0, 2.0]
    norm = nn.BatchNorm2d(2).eval()
    norm.running_var.copy_(torch.tensor([0.25, 4.0]))
    assert lipschitz_bounds(norm, (2, 3, 3)).product == pytest.approx(1 / math.sqrt(0.25 + norm.eps))

    class Square(nn.Module):
        def forward(self, x):
            return x * x

    with pytest.raises(ValueError, match="no Lipschitz constant known.*Square"):
        lipschitz_bounds(nn.Sequential(nn.Flatten(), Square()), (4,))
    shared = nn.Linear(4, 4)
    with pytest.raises(ValueError, match="more than once"):
        lipschitz_bounds(nn.Sequential(shared, nn.ReLU(), shared), (4,))
