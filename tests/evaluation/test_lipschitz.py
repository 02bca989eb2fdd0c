"""uae_augment.evaluation.lipschitz against exact spectral norms (dense matrices of the real operators)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from torch import nn

from uae_augment.evaluation import (
    conv_norm_bound,
    lipschitz_bounds,
    operator_norm,
)
from uae_augment.models import LeNet

from ..helpers import digits


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
        applied = nn.functional.conv2d(
            probe, conv.weight.double(), None, conv.stride, conv.padding, conv.dilation, conv.groups
        )
    assert np.allclose(matrix @ probe.flatten().numpy(), applied.flatten().numpy(), atol=1e-10)
    exact = float(torch.linalg.matrix_norm(torch.from_numpy(matrix), ord=2))
    estimate = operator_norm(conv, shape)
    assert estimate == pytest.approx(exact, rel=1e-3)
    assert estimate <= exact * (1 + 1e-9)  # power iteration approaches from below
    assert conv_norm_bound(conv) >= exact * (1 - 1e-9)


def test_conv_with_other_padding_modes_uses_the_true_adjoint():
    torch.manual_seed(0)
    for conv in (
        nn.Conv2d(2, 3, 3, padding=1, padding_mode="circular"),
        nn.Conv2d(2, 3, 3, padding="same"),
    ):
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
    assert kinds == [
        "Conv2d",
        "MaxPool2d",
        "Conv2d",
        "MaxPool2d",
        "Conv2d",
        "ReLU",
        "Conv2d",
        "Flatten",
    ]
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
        nn.Sequential(nn.Sigmoid(), nn.MaxPool2d(3, stride=2), nn.MaxPool2d(2), nn.LeakyReLU(2.0)),
        (1, 9, 9),
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
