"""Lipschitz bounds (Szegedy et al., 2014, section 4.3).

:func:`operator_norm` (spectral norm of a linear or convolutional layer, on the
actual operator with its stride and padding), :func:`conv_norm_bound` (a
closed-form upper bound) and :func:`lipschitz_bounds` (every layer of a
feed-forward model and the product).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .._model_state import frozen, model_device

logger = logging.getLogger(__name__)

__all__ = ["LayerBound", "LipschitzReport", "conv_norm_bound", "lipschitz_bounds", "operator_norm"]


def _conv_adjoint(conv: nn.Conv2d, output: torch.Tensor, input_shape: tuple[int, int, int]) -> torch.Tensor:
    """The adjoint of the bias-free conv operator: conv_transpose2d with the matching output size."""
    stride, padding, dilation = conv.stride, conv.padding, conv.dilation
    kernel = conv.weight.shape[2:]
    output_padding = []
    for axis in range(2):
        produced = (
            (output.shape[2 + axis] - 1) * stride[axis] - 2 * padding[axis] + dilation[axis] * (kernel[axis] - 1) + 1
        )
        output_padding.append(input_shape[1 + axis] - produced)
    return F.conv_transpose2d(output, conv.weight, None, stride, padding, tuple(output_padding), conv.groups, dilation)


def _linear_operator(
    layer: nn.Module, input_shape: tuple[int, ...]
) -> tuple[Callable[[torch.Tensor], torch.Tensor], Callable[[torch.Tensor], torch.Tensor]]:
    """(forward, adjoint) of the layer's linear part (bias dropped) on batches of ``input_shape``."""
    if isinstance(layer, nn.Linear):
        weight = layer.weight
        return (lambda v: v @ weight.T), (lambda u: u @ weight)
    if isinstance(layer, nn.Conv2d):
        if isinstance(layer.padding, str) or layer.padding_mode != "zeros":
            return _autograd_operator(lambda v: layer._conv_forward(v, layer.weight, None), input_shape)

        def forward(v: torch.Tensor) -> torch.Tensor:
            return F.conv2d(v, layer.weight, None, layer.stride, layer.padding, layer.dilation, layer.groups)

        return forward, (lambda u: _conv_adjoint(layer, u, input_shape))  # type: ignore[arg-type]
    raise TypeError(f"operator_norm supports nn.Linear and nn.Conv2d, got {type(layer).__name__}")


def _autograd_operator(
    forward: Callable[[torch.Tensor], torch.Tensor], input_shape: tuple[int, ...]
) -> tuple[Callable[[torch.Tensor], torch.Tensor], Callable[[torch.Tensor], torch.Tensor]]:
    """The adjoint of a linear map by a vector-Jacobian product (for padding modes without a closed form)."""

    def adjoint(u: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():
            probe = torch.zeros((u.shape[0], *input_shape), dtype=u.dtype, device=u.device, requires_grad=True)
            (grad,) = torch.autograd.grad(forward(probe), probe, grad_outputs=u)
        return grad

    return forward, adjoint


def operator_norm(
    layer: nn.Module,
    input_shape: Sequence[int] | None = None,
    *,
    iterations: int = 2000,
    tol: float = 1e-7,
    seed: int = 0,
) -> float:
    """Spectral norm ||W||_2 of a layer's linear part (bias ignored): its exact Lipschitz constant in L2.

    * ``nn.Linear``: the largest singular value of the weight by SVD (exact).
    * ``nn.Conv2d``: power iteration on the actual operator for inputs of
      ``input_shape`` (C, H, W), with its stride, padding, dilation and groups:
      ``v <- A^T A v / ||A^T A v||`` where A is ``F.conv2d`` and its adjoint
      ``F.conv_transpose2d`` (a vector-Jacobian product for string or non-zero
      padding modes). The estimate ||A v|| increases monotonically towards the
      true norm from below; iteration stops when it changes by less than ``tol``
      (relative) or after ``iterations`` steps. It depends on the input size
      (border effects of the padding); :func:`conv_norm_bound` does not.

    Args:
        layer: an ``nn.Linear`` or ``nn.Conv2d``.
        input_shape: (C, H, W) of one input; required for convolutions.
        iterations: maximum power-iteration steps; tol: relative stopping tolerance.
        seed: seed of the random start vector.

    Raises:
        TypeError: for another layer type.
        ValueError: if a convolution gets no (C, H, W) input shape.

    Example:
        >>> layer = nn.Linear(3, 2, bias=False)
        >>> with torch.no_grad():
        ...     _ = layer.weight.copy_(torch.tensor([[3.0, 0, 0], [0, 4.0, 0]]))
        >>> operator_norm(layer)
        4.0
        >>> conv = nn.Conv2d(1, 1, 1, bias=False)
        >>> _ = nn.init.constant_(conv.weight, 2.0)
        >>> round(operator_norm(conv, (1, 5, 5)), 6)
        2.0
    """
    if isinstance(layer, nn.Linear):
        with torch.no_grad():
            return float(torch.linalg.matrix_norm(layer.weight.detach().double(), ord=2))
    if not isinstance(layer, nn.Conv2d):
        raise TypeError(f"operator_norm supports nn.Linear and nn.Conv2d, got {type(layer).__name__}")
    if input_shape is None or len(tuple(input_shape)) != 3:
        raise ValueError(f"a convolution needs input_shape (C, H, W), got {input_shape}")
    shape = tuple(int(s) for s in input_shape)
    generator = torch.Generator().manual_seed(seed)
    vector = torch.randn((1, *shape), generator=generator, dtype=torch.float64).to(layer.weight.device)
    vector = vector / vector.norm()
    estimate = 0.0
    with torch.no_grad():
        operator = _double(layer)
        forward, adjoint = _linear_operator(operator, shape)
        for step in range(iterations):
            image = forward(vector)
            new_estimate = float(image.norm())
            back = adjoint(image)
            size = back.norm()
            if size == 0:
                return 0.0
            vector = back / size
            if step > 0 and abs(new_estimate - estimate) <= tol * max(new_estimate, 1e-30):
                return new_estimate
            estimate = new_estimate
    logger.debug("operator_norm: %d iterations without reaching tol %.1e", iterations, tol)
    return estimate


def _double(layer: nn.Conv2d) -> nn.Conv2d:
    """A float64 copy of the convolution (the power iteration runs in double precision)."""
    copy = nn.Conv2d(
        layer.in_channels,
        layer.out_channels,
        layer.kernel_size,
        layer.stride,
        layer.padding,  # type: ignore[arg-type]
        layer.dilation,
        layer.groups,
        bias=False,
        padding_mode=layer.padding_mode,
        device=layer.weight.device,
        dtype=torch.float64,
    )
    copy.weight.data.copy_(layer.weight.detach())
    return copy.requires_grad_(False)


def conv_norm_bound(conv: nn.Conv2d) -> float:
    """A closed-form upper bound on the spectral norm of a convolution, for every input size.

    Each output position applies the kernel matrix M (out/groups, in/groups * kh * kw)
    of its group to one input patch, and every input pixel lies in at most
    n = n_h * n_w patches, n_axis = min(k, ceil(((k - 1) * dilation + 1) / stride)).
    Hence ||conv(x)||^2 <= max_g ||M_g||_2^2 * n * ||x||^2 and the bound is
    sqrt(n) * max_g ||M_g||_2. It equals the true norm for 1x1 kernels and is
    looser (by up to sqrt(n)) otherwise. Padding only adds zeros, so it holds for
    every zero padding; circular padding wraps pixels into more patches only when
    the input is smaller than the kernel.

    Example:
        >>> conv = nn.Conv2d(1, 1, 3, bias=False)
        >>> _ = nn.init.constant_(conv.weight, 1.0)
        >>> conv_norm_bound(conv)  # sqrt(9 patches) * ||ones(1, 9)||_2 = 3 * 3
        9.0
    """
    if not isinstance(conv, nn.Conv2d):
        raise TypeError(f"conv_norm_bound needs an nn.Conv2d, got {type(conv).__name__}")
    weight = conv.weight.detach().double()
    groups = conv.groups
    per_group = weight.shape[0] // groups
    norms = [
        float(torch.linalg.matrix_norm(weight[g * per_group : (g + 1) * per_group].flatten(1), ord=2))
        for g in range(groups)
    ]
    return math.sqrt(_overlap(conv.kernel_size, conv.stride, conv.dilation)) * max(norms)


def _pair(value: Any) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


def _overlap(kernel: Any, stride: Any, dilation: Any = 1) -> int:
    """The largest number of (kernel, stride, dilation) windows that contain one input pixel."""
    count = 1
    for k, s, d in zip(_pair(kernel), _pair(stride), _pair(dilation)):
        count *= min(k, math.ceil(((k - 1) * d + 1) / s))
    return count


@dataclass(frozen=True)
class LayerBound:
    """The Lipschitz constant (L2) of one layer of a model.

    Attributes:
        name: the layer's qualified name in the model.
        kind: its class name.
        size: the parameter shape in the notation of Szegedy et al.'s table:
            ``in x kh x kw x out`` for convolutions, ``in x out`` for dense layers, "" otherwise.
        stride: the convolution's stride ("" for other layers).
        input_shape, output_shape: per-sample shapes seen in the traced forward pass.
        norm: the layer's Lipschitz constant: the operator norm by power iteration
            (convolutions) or SVD (dense layers), or the closed-form constant of
            other layers (ReLU 1, sigmoid 1/4, max pooling 1 without overlap, ...).
        bound: an input-size independent upper bound (:func:`conv_norm_bound` for
            convolutions; equal to ``norm`` for every other layer).
    """

    name: str
    kind: str
    size: str
    stride: str
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    norm: float
    bound: float


@dataclass
class LipschitzReport:
    """Per-layer Lipschitz constants of a feed-forward model and their products.

    Attributes:
        layers: one :class:`LayerBound` per executed layer, in execution order.
        product: prod(layer.norm): an upper bound on the model's Lipschitz constant (L2).
        product_bound: prod(layer.bound) (>= product).
    """

    layers: list[LayerBound]
    product: float
    product_bound: float

    def as_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return {
            "layers": [asdict(layer) for layer in self.layers],
            "product": self.product,
            "product_bound": self.product_bound,
        }


def _batch_norm_constant(layer: nn.modules.batchnorm._BatchNorm) -> float:
    if layer.running_var is None:
        raise ValueError(f"{type(layer).__name__} without running statistics has no fixed Lipschitz constant")
    scale = (layer.running_var + layer.eps).rsqrt()
    if layer.weight is not None:
        scale = scale * layer.weight.detach().abs()
    return float(scale.max())


def _elementwise_constant(layer: nn.Module) -> float | None:
    """The Lipschitz constant of parameter-free or element-wise layers (None: unknown)."""
    one = (
        nn.ReLU,
        nn.ReLU6,
        nn.Tanh,
        nn.Softplus,
        nn.Identity,
        nn.Flatten,
        nn.Unflatten,
        nn.Dropout,
        nn.Dropout2d,
        nn.Softmax,
        nn.Hardtanh,
        nn.Softsign,
    )
    if isinstance(layer, one):
        return 1.0
    if isinstance(layer, nn.Sigmoid):
        return 0.25
    if isinstance(layer, nn.LeakyReLU):
        return max(1.0, abs(layer.negative_slope))
    if isinstance(layer, nn.ELU):
        return max(1.0, layer.alpha)
    if isinstance(layer, nn.GELU):
        return 1.1289  # max of d/dx x*Phi(x), at x = sqrt(2)
    if isinstance(layer, nn.SiLU):
        return 1.0998  # max of d/dx x*sigmoid(x), at x ~ 2.3994
    if isinstance(layer, nn.MaxPool2d):
        # |max_W a - max_W b| <= ||a - b||_W, and a pixel lies in at most `overlap` windows
        return math.sqrt(_overlap(layer.kernel_size, layer.stride or layer.kernel_size, layer.dilation))
    if isinstance(layer, nn.AvgPool2d) and _pair(layer.padding) == (0, 0):
        # a mean over `area` pixels is (1 / sqrt(area))-Lipschitz in L2 (Cauchy-Schwarz)
        area = math.prod(_pair(layer.kernel_size))
        return math.sqrt(_overlap(layer.kernel_size, layer.stride or layer.kernel_size) / area)
    if isinstance(layer, nn.modules.batchnorm._BatchNorm):
        return _batch_norm_constant(layer)
    declared = getattr(layer, "lipschitz_constant", None)
    if callable(declared):
        return float(declared())
    return None


def _describe(layer: nn.Module) -> tuple[str, str]:
    if isinstance(layer, nn.Conv2d):
        out_channels, in_per_group, kh, kw = layer.weight.shape
        stride = "x".join(map(str, layer.stride)) if layer.stride[0] != layer.stride[1] else str(layer.stride[0])
        return f"{in_per_group * layer.groups}x{kh}x{kw}x{out_channels}", stride
    if isinstance(layer, nn.Linear):
        return f"{layer.in_features}x{layer.out_features}", ""
    return "", ""


def lipschitz_bounds(
    model: nn.Module,
    input_shape: Sequence[int],
    *,
    iterations: int = 2000,
    tol: float = 1e-7,
    seed: int = 0,
) -> LipschitzReport:
    """Upper bounds on the L2 Lipschitz constant of every layer of a model, and their product.

    Traces one forward pass of a zero input of ``input_shape`` (in eval mode) to
    find the executed leaf modules, their order and their input shapes; then takes
    :func:`operator_norm` of every ``nn.Linear`` / ``nn.Conv2d`` (on the actual
    operator at that layer's input size) and the closed-form constant of every
    other layer (activations, pooling, eval-mode batch norm, dropout, reshapes,
    or a module's own ``lipschitz_constant()`` method). Biases do not change a
    Lipschitz constant. The product bounds the whole model's constant when the
    model is a chain of its leaf modules (no skip connections, no functional
    linear operations in ``forward``).

    Args:
        model: the model; its train/eval flags are restored afterwards.
        input_shape: shape of one input, e.g. (1, 28, 28).
        iterations, tol, seed: power-iteration settings of :func:`operator_norm`.

    Returns:
        A :class:`LipschitzReport`.

    Raises:
        ValueError: for a layer without a known Lipschitz constant, or a layer run
            more than once in one forward pass.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(1, 2, 3, stride=2), nn.ReLU(), nn.Flatten(), nn.Linear(8, 3))
        >>> report = lipschitz_bounds(net, (1, 5, 5))
        >>> [layer.kind for layer in report.layers], report.layers[0].size, report.layers[0].stride
        (['Conv2d', 'ReLU', 'Flatten', 'Linear'], '1x3x3x2', '2')
        >>> report.product <= report.product_bound
        True
    """
    names = {module: name for name, module in model.named_modules()}
    trace: list[tuple[nn.Module, tuple[int, ...], tuple[int, ...]]] = []

    def record(module: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
        if any(seen is module for seen, _, _ in trace):
            raise ValueError(f"layer {names.get(module, type(module).__name__)!r} runs more than once per forward pass")
        shape_in = tuple(inputs[0].shape[1:]) if inputs and isinstance(inputs[0], torch.Tensor) else ()
        shape_out = tuple(output.shape[1:]) if isinstance(output, torch.Tensor) else ()
        trace.append((module, shape_in, shape_out))

    leaves = [m for m in model.modules() if not list(m.children())]
    handles = [leaf.register_forward_hook(record) for leaf in leaves]
    try:
        probe = torch.zeros((1, *input_shape), device=model_device(model))
        with frozen([model]), torch.no_grad():
            model(probe)
    finally:
        for handle in handles:
            handle.remove()

    layers = []
    with frozen([model]):
        for module, shape_in, shape_out in trace:
            name = names.get(module, "")
            if isinstance(module, (nn.Linear, nn.Conv2d)):
                norm = operator_norm(module, shape_in, iterations=iterations, tol=tol, seed=seed)
                bound = conv_norm_bound(module) if isinstance(module, nn.Conv2d) else norm
            else:
                constant = _elementwise_constant(module)
                if constant is None:
                    raise ValueError(
                        f"no Lipschitz constant known for layer {name!r} ({type(module).__name__});"
                        " give the module a lipschitz_constant() method"
                    )
                norm = bound = constant
            size, stride = _describe(module)
            layers.append(LayerBound(name, type(module).__name__, size, stride, shape_in, shape_out, norm, bound))
    return LipschitzReport(
        layers=layers,
        product=math.prod(layer.norm for layer in layers),
        product_bound=math.prod(layer.bound for layer in layers),
    )
