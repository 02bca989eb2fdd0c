"""The release's statistics network T_theta, B independent copies stacked along dim 0.

A batch of B samples carries B independent parameter sets, applied with ``bmm``
(each branch's convolution folded into its first linear layer, so a branch on
feature maps is a product of the maps' kernel taps with one folded weight); the
marginal term reuses the joint term's branch
outputs (only the combination step is permuted). :meth:`StatisticsNetwork.ascent_gradients`
is a hand-written backward pass that writes into persistent gradient buffers
and a :class:`Workspace`, so a MINE step allocates no large tensor.
:func:`donsker_varadhan` is the bound it estimates.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import nn

from .._seeding import Streams, stacked_uniform

_Tensors = dict[str, torch.Tensor]

BRANCHES = ("u", "v")
"""The two branches of a statistics network, in the order of their index on the parameters' dim 1."""

OUTPUT_MAJOR_WIDTH = 64
"""First map layers at most this wide compute each tap's (out, K) product, wider ones its (K, out)
product (then transposed views of each other). One thread on the 2-core test machine, a 2-row
sub-batch of 16 MNIST-sized maps: the rank-10 layer's (10, K) products took 118 µs per step
against 215 µs for (K, 10); the 512-wide layer's took 5.7 ms against 5.4 ms for (K, 512)."""


def _glorot(generators: Streams, shape: Sequence[int], fan_in: int, fan_out: int) -> torch.Tensor:
    limit = math.sqrt(6.0 / (fan_in + fan_out))
    return stacked_uniform(generators, shape, -limit, limit)


class Workspace:
    """Scratch tensors reused by every MINE step of one attack call.

    ``get`` hands out the first elements of one flat buffer per name, grown only
    when a larger shape is asked for, so the steps of an attack write into the
    same memory instead of allocating (and page-faulting) fresh temporaries.
    ``kept`` holds the views a step makes of its sub-batch's parameters, inputs
    and buffers, so the next steps on the same sub-batch reuse them (a step of a
    2-row sub-batch made ~30 views).
    """

    def __init__(self) -> None:
        self._buffers: dict[str, torch.Tensor] = {}
        self._views: dict[tuple[str, tuple[int, ...]], torch.Tensor] = {}
        self._owners: tuple[object, ...] = ()
        self._kept: dict[str, torch.Tensor] = {}

    def get(self, name: str, shape: Sequence[int], like: torch.Tensor) -> torch.Tensor:
        """A tensor of ``shape`` with ``like``'s dtype and device; contents undefined.

        The view is made once per name and shape (a step asks for ~12 of them).
        """
        key = (name, tuple(shape))
        view = self._views.get(key)
        if view is not None and view.dtype == like.dtype and view.device == like.device:
            return view
        numel = math.prod(shape)
        buffer = self._buffers.get(name)
        if buffer is None or buffer.numel() < numel or buffer.dtype != like.dtype or buffer.device != like.device:
            buffer = torch.empty(numel, dtype=like.dtype, device=like.device)
            self._buffers[name] = buffer
            self._views = {k: v for k, v in self._views.items() if k[0] != name}
            self.start(())  # kept views may view the replaced buffer
        view = buffer[:numel].view(*shape)
        self._views[key] = view
        return view

    def start(self, owners: tuple[object, ...]) -> None:
        """Starts a step on ``owners`` (a sub-batch's parameter views and inputs): the views
        :meth:`kept` so far stay only if the owners are the same objects as the last step's."""
        if len(owners) != len(self._owners) or any(a is not b for a, b in zip(owners, self._owners)):
            self._owners = owners
            self._kept = {}

    def kept(self, name: str, make: Callable[[], torch.Tensor]) -> torch.Tensor:
        """``make()`` (a view of the current owners or of this workspace's buffers), made once per owners."""
        view = self._kept.get(name)
        if view is None:
            view = self._kept[name] = make()
        return view


def _kept(work: Workspace | None, name: str, make: Callable[[], torch.Tensor]) -> torch.Tensor:
    """``work.kept(name, make)``, or ``make()`` without a workspace (the autograd path)."""
    return make() if work is None else work.kept(name, make)


def _scratch(
    work: Workspace | None, name: str, shape: Callable[[], Sequence[int]], like: torch.Tensor
) -> torch.Tensor | None:
    """``work.get(name, shape(), like)``, kept; None without a workspace (the result is then allocated)."""
    return None if work is None else work.kept(name, lambda: work.get(name, shape(), like))


class StatisticsNetwork(nn.Module):
    """B independent release statistics networks T_theta, parameters stacked on dim 0.

    Each of the two unshared branches is ``Conv2d(1 -> 16, k=2) -> Flatten ->
    Linear(F, hidden) -> Linear(hidden, embed)`` (no activation inside a branch;
    the convolution is dropped for vector samples), and
    ``T(u, v) = Linear(embed -> 1, no bias)(ReLU(branch_u(u) + branch_v(v)))``.
    With ``hidden=None`` a branch is the single map ``Linear(F, embed)``: the same
    function class (the release's two linear layers compose to rank <= embed)
    with ~50x fewer parameters. Weights are glorot-uniform, biases zero (Keras
    defaults), drawn per sample from the given generators.

    The two branches' parameters are stacked too, on dim 1 (0: the ``u`` branch,
    1: the ``v`` branch), so that every branch operation of a step is one batched
    operation over both. Weights are stored as (B, 2, out, in) (``nn.Linear``'s
    order), except the first layer of a map branch, stored as (B, 2, C, out, H'W')
    so that the folded convolution and its gradients are single products over the
    weight's full width. Initial weights are drawn in (in, out) row-major order,
    the ``u`` branch's before the ``v`` branch's.

    Args:
        sample_shape: shape of one paired sample: (H, W) maps or (dim,) vectors.
        generators: one generator (or counter stream) per sample (their count is B).
        hidden: width of the hidden linear layer (512 in the release), or None.
        embed: branch output width (10 in the release).
        conv_channels, conv_kernel: the branch convolution (16 channels, 2x2).
    """

    def __init__(
        self,
        sample_shape: Sequence[int],
        generators: Streams,
        *,
        hidden: int | None = 512,
        embed: int = 10,
        conv_channels: int = 16,
        conv_kernel: int = 2,
    ):
        super().__init__()
        batch = len(generators)
        self.sample_shape = tuple(sample_shape)
        self.hidden = hidden
        self.embed = embed
        self.is_map = len(self.sample_shape) == 2
        self.conv_channels = conv_channels
        self.conv_kernel = conv_kernel
        if self.is_map:
            height, width = self.sample_shape
            if height < conv_kernel or width < conv_kernel:
                raise ValueError(
                    f"feature maps {self.sample_shape} are smaller than the {conv_kernel}x{conv_kernel} kernel"
                )
            features = conv_channels * (height - conv_kernel + 1) * (width - conv_kernel + 1)
        elif len(self.sample_shape) == 1:
            features = self.sample_shape[0]
        else:
            raise ValueError(f"paired samples must be 2-D maps or vectors, got shape {self.sample_shape}")
        self.features = features
        self.num_layers = 1 if hidden is None else 2
        kk = conv_kernel * conv_kernel
        widths = [features, embed] if hidden is None else [features, hidden, embed]
        conv: list[torch.Tensor] = []
        layers: list[list[torch.Tensor]] = [[] for _ in range(self.num_layers)]
        for _ in BRANCHES:  # the draws of the u branch, then those of the v branch
            if self.is_map:
                conv.append(_glorot(generators, (conv_channels, kk), kk, kk * conv_channels))
            for layer, (fan_in, fan_out) in enumerate(zip(widths[:-1], widths[1:])):
                weight = _glorot(generators, (fan_in, fan_out), fan_in, fan_out)
                if layer == 0 and self.is_map:  # (B, C * H'W', out) -> (B, C, out, H'W')
                    layers[layer].append(weight.view(batch, conv_channels, -1, fan_out).permute(0, 1, 3, 2))
                else:
                    layers[layer].append(weight.transpose(1, 2))
        if self.is_map:
            self.conv_weight = nn.Parameter(torch.stack(conv, dim=1))
            self.conv_bias = nn.Parameter(torch.zeros(batch, len(BRANCHES), conv_channels))
        for layer, weights in enumerate(layers):
            self.register_parameter(f"weight{layer}", nn.Parameter(torch.stack(weights, dim=1).contiguous()))
            bias = torch.zeros(batch, len(BRANCHES), widths[layer + 1])
            self.register_parameter(f"bias{layer}", nn.Parameter(bias))
        self.out_weight = nn.Parameter(_glorot(generators, (embed,), embed, 1))
        self._row_views: dict[tuple[int | None, int | None], tuple[_Tensors, _Tensors]] = {}

    @property
    def batch(self) -> int:
        return self.out_weight.shape[0]

    def _window_shape(self) -> tuple[int, int]:
        """(H', W'): the positions of the branch convolution on a map."""
        height, width = self.sample_shape
        return height - self.conv_kernel + 1, width - self.conv_kernel + 1

    def _windows(self) -> list[tuple[slice, slice]]:
        """The (rows, columns) of each kernel tap's shifted H' x W' window of a map, taps in filter order."""
        kernel = self.conv_kernel
        out_h, out_w = self._window_shape()
        return [(slice(p, p + out_h), slice(q, q + out_w)) for p in range(kernel) for q in range(kernel)]

    def branch_inputs(self, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Both branches' inputs (B, 2, ...): the samples' kernel taps for maps, the samples for vectors.

        For feature maps (B, K, H, W) a branch's input is (B, k*k + 1, K, H'W'): tap t
        of map k holds the t-th of the k*k shifted H' x W' windows of the map, and
        the last tap is ones (it carries the convolution bias). The convolution and
        the first linear layer of a branch are then products of these taps with the
        folded weight (:meth:`_first_map_layer`). Differentiable.
        """
        inputs = self.empty_inputs(u.shape[0], u.shape[1], u)
        self.write_inputs(inputs, 0, u)
        self.write_inputs(inputs, 1, v)
        return inputs

    def empty_inputs(self, batch: int, count: int, like: torch.Tensor) -> torch.Tensor:
        """An uninitialised (batch, 2, ...) :meth:`branch_inputs` tensor to :meth:`write_inputs` into."""
        if self.is_map:
            positions = self.features // self.conv_channels
            shape: tuple[int, ...] = (batch, len(BRANCHES), self.conv_kernel**2 + 1, count, positions)
        else:
            shape = (batch, len(BRANCHES), count, self.features)
        return torch.empty(shape, dtype=like.dtype, device=like.device)

    def write_inputs(self, inputs: torch.Tensor, branch: int, samples: torch.Tensor) -> None:
        """Writes branch ``branch``'s part of :meth:`branch_inputs` for ``samples`` into ``inputs``, in place."""
        target = inputs[:, branch]
        if not self.is_map:
            target.copy_(samples)
            return
        taps = target.view(*target.shape[:3], *self._window_shape())
        for tap, (rows, columns) in enumerate(self._windows()):
            taps[:, tap].copy_(samples[:, :, rows, columns])
        taps[:, -1].fill_(1.0)

    def _apply(self, fn, recurse=True):  # noqa: ANN001, ANN202 - nn.Module's signature
        self._row_views = {}  # views of the parameters before the move
        return super()._apply(fn, recurse)

    def _views(self, rows: slice) -> tuple[_Tensors, _Tensors]:
        """Detached views of every parameter's and gradient's ``rows``, made once per row block."""
        key = (rows.start, rows.stop)
        views = self._row_views.get(key)
        if views is None:
            named = list(self.named_parameters())
            views = ({n: p.detach()[rows] for n, p in named}, {n: self._grad(p)[rows] for n, p in named})
            self._row_views[key] = views
        return views

    def _sliced(self, rows: slice) -> _Tensors:
        """Every parameter's ``rows``, differentiable (the autograd path)."""
        return {name: parameter[rows] for name, parameter in self.named_parameters()}

    def _filters(self, params: _Tensors, work: Workspace | None) -> torch.Tensor:
        """The convolutions' filters with the bias as one more tap: (b, 2, C, k*k + 1)."""
        weight = params["conv_weight"]
        bias = _kept(work, "conv_bias_tap", lambda: params["conv_bias"].unsqueeze(-1))
        out = _scratch(work, "filters", lambda: (*weight.shape[:3], weight.shape[3] + 1), weight)
        return torch.cat([weight, bias], dim=3, out=out)

    def _first_map_layer(self, taps: torch.Tensor, params: _Tensors, work: Workspace | None) -> torch.Tensor:
        """The convolution and the first linear layer in one, on :meth:`branch_inputs`' taps: (b, 2, K, out).

        With ``W0`` stored as (C, out, H'W') and the filters ``w`` (C, T), the
        folded weight ``A[t, o, p] = sum_c w[c, t] W0[c, o, p]`` is one product, and
        ``layer0(conv(x))[k, o] = sum_{t, p} taps[t, k, p] A[t, o, p] + bias0[o]``:
        4.4x fewer FLOPs than the convolution followed by the layer, no
        (K, C * H'W') feature tensor, and every product over the weight's full
        width (measured: the per-output-row layout ran 1.2-1.5x slower). With
        ``work``, the filters and ``A`` stay in it for the backward pass.
        """
        weight = params["weight0"]
        batch, branches, channels, out, positions = weight.shape
        pairs = batch * branches
        filters = self._filters(params, work)
        tap_count, count = taps.shape[2], taps.shape[3]
        output_major = out <= OUTPUT_MAJOR_WIDTH
        shape = (out, count) if output_major else (count, out)
        folded = torch.bmm(
            _kept(work, "filters_by_tap", lambda: filters.view(pairs, channels, tap_count).transpose(1, 2)),
            _kept(work, "weight0_flat", lambda: weight.view(pairs, channels, -1)),
            out=_scratch(work, "folded", lambda: (pairs, tap_count, out * positions), taps),
        )
        flat_taps = self._tap_matrices(taps, work)
        flat_folded = _kept(work, "folded_flat", lambda: folded.view(pairs * tap_count, out, positions))
        per_tap_out = _scratch(work, "per_tap", lambda: (pairs * tap_count, *shape), taps)
        if output_major:
            taps_t = _kept(work, "taps_flat_t", lambda: flat_taps.transpose(1, 2))
            per_tap = torch.bmm(flat_folded, taps_t, out=per_tap_out)
        else:
            folded_t = _kept(work, "folded_flat_t", lambda: flat_folded.transpose(1, 2))
            per_tap = torch.bmm(flat_taps, folded_t, out=per_tap_out)
        per_tap = _kept(work, "per_tap_by_tap", lambda: per_tap.view(batch, branches, tap_count, *shape))
        summed = _scratch(work, "out0", lambda: (batch, branches, *shape), taps)
        hidden = torch.sum(per_tap, dim=2, out=summed)
        if output_major:
            hidden = _kept(work, "out0_t", lambda: hidden.transpose(2, 3))  # (b, 2, K, out), a view
        bias = _kept(work, "bias0_row", lambda: params["bias0"].unsqueeze(2))
        return hidden + bias if work is None else hidden.add_(bias)

    @staticmethod
    def _tap_matrices(taps: torch.Tensor, work: Workspace | None) -> torch.Tensor:
        """:meth:`branch_inputs`' taps (b, 2, T, K, H'W') as (2bT, K, H'W') matrices, kept.

        A view, never a copy: a kept tensor must see the v half that ``PerSampleMINE.train``
        rewrites in place.
        """
        return _kept(work, "taps_flat", lambda: taps.view(-1, *taps.shape[3:]))

    def _linear_stack(
        self, inputs: torch.Tensor, params: _Tensors, work: Workspace | None = None
    ) -> list[torch.Tensor]:
        """Inputs of every layer of both branches (b, 2, K, ...), then their outputs (b, 2, K, embed).

        For map samples the inputs are :meth:`branch_inputs` and the first layer is
        the convolution and the first linear layer in one (:meth:`_first_map_layer`);
        with ``work`` every output is written into it.
        """
        activations = [inputs]
        for layer in range(self.num_layers):
            if layer == 0 and self.is_map:
                activations.append(self._first_map_layer(inputs, params, work))
                continue
            weight = params[f"weight{layer}"]
            batch, branches, out, width = weight.shape
            pairs, count = batch * branches, activations[-1].shape[2]
            bias = params[f"bias{layer}"].view(pairs, 1, out)
            result = work.get(f"out{layer}", (pairs, count, out), inputs) if work is not None else None
            result = torch.baddbmm(
                bias,
                activations[-1].reshape(pairs, count, width),
                weight.view(pairs, out, width).transpose(1, 2),
                out=result,
            )
            activations.append(result.view(batch, branches, count, out))
        return activations

    def embeddings(self, u: torch.Tensor, v: torch.Tensor, rows: slice = slice(None)) -> torch.Tensor:
        """Both branches' outputs (B, 2, K, embed) for samples u, v (B, K, *sample_shape), differentiable.

        With ``rows``, applies those parameter sets to samples holding only those rows.
        """
        return self._linear_stack(self.branch_inputs(u, v), self._sliced(rows))[-1]

    def scores(
        self,
        u_embed: torch.Tensor,
        v_embed: torch.Tensor,
        permutation: torch.Tensor,
        rows: slice = slice(None),
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """T on joint pairs (u_k, v_k) and marginal pairs (u_k, v_pi(k)): two (B, K) tensors."""
        joint = torch.relu(u_embed + v_embed)
        shuffled = v_embed.gather(1, permutation.unsqueeze(-1).expand_as(v_embed))
        marginal = torch.relu(u_embed + shuffled)
        weight = self.out_weight[rows].unsqueeze(-1)
        return torch.bmm(joint, weight).squeeze(-1), torch.bmm(marginal, weight).squeeze(-1)

    def forward(
        self, u: torch.Tensor, v: torch.Tensor, permutation: torch.Tensor, rows: slice = slice(None)
    ) -> torch.Tensor:
        """The DV bound per sample (B,) for samples u, v (B, K, ...) and permutations (B, K).

        With ``rows``, u, v and permutation hold only those rows of the batch.
        """
        embed = self.embeddings(u, v, rows)
        joint, marginal = self.scores(embed[:, 0], embed[:, 1], permutation, rows)
        return donsker_varadhan(joint, marginal)

    def ascent_gradients(
        self,
        u: torch.Tensor,
        v: torch.Tensor,
        permutation: torch.Tensor,
        inputs: torch.Tensor | None = None,
        rows: slice = slice(None),
        work: Workspace | None = None,
        bound: bool = True,
    ) -> torch.Tensor | None:
        """Writes the gradients of ``-sum_b DV_b`` into every ``param.grad``; returns DV (b,).

        A hand-written backward pass for fixed samples u, v: equal to autograd's
        (checked in the tests) but writing each weight gradient straight into a
        persistent buffer with ``bmm(out=...)`` and every large temporary into
        ``work`` (a :class:`Workspace` kept across steps), so a step allocates no
        large tensor. ``inputs`` are the samples' :meth:`branch_inputs` when the
        caller made them once for many steps (u and v are then unused). ``rows``
        restricts the step to a contiguous sub-batch of the parameter sets (u, v,
        permutation and inputs are then that sub-batch's rows); only those rows of
        the gradients are written. With ``bound=False`` the bound itself is not
        evaluated (None is returned).
        """
        work = Workspace() if work is None else work
        params, grads = self._views(rows)
        with torch.no_grad():
            inputs = self.branch_inputs(u, v) if inputs is None else inputs
            work.start((params, inputs))
            estimate, activations, grad_embed, scores = self._bound_and_embed_grads(
                inputs, permutation, params, work, bound
            )
            grad_joint, joint_act, grad_marginal, marginal_act = scores
            weighted = joint_act * grad_joint + grad_marginal.unsqueeze(-1) * marginal_act
            torch.sum(weighted, dim=1, out=grads["out_weight"])
            self._stack_backward(activations, grad_embed, params, grads, work)
        return estimate

    def bound_and_sample_gradient(
        self,
        u: torch.Tensor,
        v: torch.Tensor,
        permutation: torch.Tensor,
        inputs: torch.Tensor | None = None,
        rows: slice = slice(None),
        work: Workspace | None = None,
        out: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """DV (b,) and its gradient with respect to the samples ``v`` (b, K, *sample_shape).

        The attack's delta step needs only this gradient: a hand-written pass
        through the ``v`` branch, without autograd's graph of the parameter
        slices and taps (whose backward zero-filled a batch-sized tensor per
        slice) and without any weight gradient. Arguments as :meth:`ascent_gradients`;
        the gradient is written into ``out`` (v's shape) when given. No parameter
        or parameter gradient is written.
        """
        work = Workspace() if work is None else work
        params, _ = self._views(rows)
        with torch.no_grad():
            inputs = self.branch_inputs(u, v) if inputs is None else inputs
            work.start((params, inputs))
            estimate, activations, grad_embed, _ = self._bound_and_embed_grads(inputs, permutation, params, work)
            if out is None:
                out = torch.empty_like(v)
            self._v_input_gradient(activations, grad_embed[:, 1], params, work, out)
        assert estimate is not None
        return estimate, out.neg_()

    def _bound_and_embed_grads(
        self,
        inputs: torch.Tensor,
        permutation: torch.Tensor,
        params: _Tensors,
        work: Workspace,
        bound: bool = True,
    ) -> tuple[torch.Tensor | None, list[torch.Tensor], torch.Tensor, tuple[torch.Tensor | float, ...]]:
        """The forward pass and the gradient of ``-DV`` at both branches' outputs.

        Returns DV (b,) (None with ``bound=False``: the gradient does not need it),
        the :meth:`_linear_stack`, the gradient at its output (b, 2, K, embed), and
        (d/d joint scores, joint activations, d/d marginal scores, marginal
        activations) for the output weight's gradient.
        """
        activations = self._linear_stack(inputs, params, work)
        embed = activations[-1]
        u_embed = work.kept("u_embed", lambda: embed[:, 0])
        v_embed = work.kept("v_embed", lambda: embed[:, 1])
        index = permutation.unsqueeze(-1).expand_as(v_embed)
        joint_pre = u_embed + v_embed
        marginal_pre = u_embed + v_embed.gather(1, index)
        joint_act, marginal_act = torch.relu(joint_pre), torch.relu(marginal_pre)
        out_weight = params["out_weight"]
        weight = work.kept("out_weight_column", lambda: out_weight.unsqueeze(-1))
        joint = torch.bmm(joint_act, weight).squeeze(-1)
        marginal = torch.bmm(marginal_act, weight).squeeze(-1)
        estimate = donsker_varadhan(joint, marginal) if bound else None
        # d(-DV)/dT: -1/K on every joint score (a float32 scalar: the bits of a -1/K tensor), softmax on
        # the marginal scores
        grad_joint = -1.0 / joint.shape[1]
        grad_marginal = torch.softmax(marginal, dim=1)
        out = work.kept("out_weight_row", lambda: out_weight.unsqueeze(1))
        # ReLU's backward, one operation each (the values of ``g * (pre > 0)``; a masked zero is +0)
        grad_joint_pre = torch.ops.aten.threshold_backward(out * grad_joint, joint_pre, 0)
        grad_marginal_pre = torch.ops.aten.threshold_backward(grad_marginal.unsqueeze(-1) * out, marginal_pre, 0)
        grad_embed = work.kept("grad_embed", lambda: work.get("grad_embed", embed.shape, embed))
        grad_u = work.kept("grad_u", lambda: grad_embed[:, 0])
        grad_v = work.kept("grad_v", lambda: grad_embed[:, 1])
        torch.add(grad_joint_pre, grad_marginal_pre, out=grad_u)
        grad_v.copy_(grad_joint_pre).scatter_add_(1, index, grad_marginal_pre)
        return estimate, activations, grad_embed, (grad_joint, joint_act, grad_marginal, marginal_act)

    def _grad(self, parameter: nn.Parameter) -> torch.Tensor:
        if parameter.grad is None:
            parameter.grad = torch.empty_like(parameter)
        return parameter.grad

    def _stack_backward(
        self,
        activations: list[torch.Tensor],
        grad_out: torch.Tensor,
        params: _Tensors,
        grads: _Tensors,
        work: Workspace,
    ) -> None:
        """Both branches' weight and bias gradients, given the gradient at their outputs (b, 2, K, embed)."""
        for layer in reversed(range(self.num_layers)):
            torch.sum(grad_out, dim=2, out=grads[f"bias{layer}"])
            if layer == 0 and self.is_map:
                self._first_map_layer_backward(activations[0], grad_out, params, grads, work)
                return
            weight = params[f"weight{layer}"]
            batch, branches, out, width = weight.shape
            pairs, count = batch * branches, grad_out.shape[2]
            flat_grad = grad_out.reshape(pairs, count, out)
            torch.bmm(
                flat_grad.transpose(1, 2),
                activations[layer].reshape(pairs, count, width),
                out=grads[f"weight{layer}"].view(pairs, out, width),
            )
            if layer > 0:
                grad_in = work.get(f"grad_input{layer}", (pairs, count, width), grad_out)
                grad_out = torch.bmm(flat_grad, weight.view(pairs, out, width), out=grad_in).view(
                    batch, branches, count, width
                )

    def _first_map_layer_backward(
        self,
        taps: torch.Tensor,
        grad_out: torch.Tensor,
        params: _Tensors,
        grads: _Tensors,
        work: Workspace,
    ) -> None:
        """Gradients of ``W0`` and of the convolutions through the folded weight of :meth:`_first_map_layer`.

        With the folded weight's gradient ``G[t, o, p] = sum_k grad_out[k, o] taps[t, k, p]``:
        ``dW0[c, o, p] = sum_t w[c, t] G[t, o, p]`` and ``dw[c, t] = sum_{o, p} W0[c, o, p] G[t, o, p]``
        (the bias tap gives the convolution bias's gradient). The filters are the
        forward pass's, still in ``work``.
        """
        weight = params["weight0"]
        batch, branches, channels, out, positions = weight.shape
        pairs = batch * branches
        tap_count, count = taps.shape[2], taps.shape[3]
        kept = work.kept
        shape = (batch, branches, tap_count, out, count)
        per_tap = kept("grad_per_tap", lambda: work.get("grad_per_tap", shape, grad_out))
        per_tap.copy_(kept("grad_out_by_tap", lambda: grad_out.transpose(2, 3).unsqueeze(2).expand(shape)))
        folded_grad = torch.bmm(
            kept("grad_per_tap_flat", lambda: per_tap.view(pairs * tap_count, out, count)),
            self._tap_matrices(taps, work),
            out=kept("folded_grad", lambda: work.get("folded", (pairs * tap_count, out, positions), grad_out)),
        )
        folded_grad = kept("folded_grad_flat", lambda: folded_grad.view(pairs, tap_count, out * positions))
        filters = kept(
            "filters_flat",
            lambda: work.get("filters", (batch, branches, channels, tap_count), grad_out).view(
                pairs, channels, tap_count
            ),
        )
        torch.bmm(
            filters, folded_grad, out=kept("weight0_grad_flat", lambda: grads["weight0"].view(pairs, channels, -1))
        )
        filters_grad = torch.bmm(
            folded_grad,
            kept("weight0_flat_t", lambda: weight.view(pairs, channels, -1).transpose(1, 2)),
            out=kept("filters_grad", lambda: work.get("filters_grad", (pairs, tap_count, channels), grad_out)),
        )
        kept("conv_weight_grad", lambda: grads["conv_weight"].view(pairs, channels, -1)).copy_(
            kept("filters_grad_weight", lambda: filters_grad[:, :-1].transpose(1, 2))
        )
        kept("conv_bias_grad", lambda: grads["conv_bias"].view(pairs, channels)).copy_(
            kept("filters_grad_bias", lambda: filters_grad[:, -1])
        )

    def _v_input_gradient(
        self,
        activations: list[torch.Tensor],
        grad_out: torch.Tensor,
        params: _Tensors,
        work: Workspace,
        result: torch.Tensor,
    ) -> None:
        """Writes the gradient at the ``v`` branch's samples (b, K, ...) into ``result``, given the one at its output.

        For map samples, through the folded first layer of :meth:`_first_map_layer`
        (its folded weight is still in ``work``): ``dtaps[t, k, p] = sum_o grad_out[k, o] A[t, o, p]``,
        and each kernel tap's gradient is added back at its window's place.
        """
        for layer in reversed(range(1, self.num_layers)):
            grad_out = torch.bmm(grad_out, params[f"weight{layer}"][:, 1])
        if not self.is_map:
            torch.bmm(grad_out, params["weight0"][:, 1], out=result)
            return
        batch, branches, channels, out, positions = params["weight0"].shape
        taps = activations[0]
        tap_count, count = taps.shape[2], taps.shape[3]
        folded = work.get("folded", (batch, branches, tap_count, out, positions), taps)[:, 1]
        folded_v = work.get("folded_v", (batch * tap_count, out, positions), taps)
        folded_v.view(batch, tap_count, out, positions).copy_(folded)
        per_tap = work.get("grad_per_tap", (batch, tap_count, count, out), grad_out)
        per_tap.copy_(grad_out.unsqueeze(1).expand(batch, tap_count, count, out))
        grad_taps = torch.bmm(
            per_tap.view(batch * tap_count, count, out),
            folded_v,
            out=work.get("grad_taps", (batch * tap_count, count, positions), taps),
        )
        grad_taps = grad_taps.view(batch, tap_count, count, *self._window_shape())
        result.zero_()
        for tap, (rows, columns) in enumerate(self._windows()):  # the last tap (bias) has none
            result[:, :, rows, columns] += grad_taps[:, tap]


def donsker_varadhan(joint: torch.Tensor, marginal: torch.Tensor) -> torch.Tensor:
    """DV lower bound mean(T_joint) - log mean(exp T_marginal) along the last axis (logsumexp)."""
    count = joint.shape[-1]
    return joint.mean(dim=-1) - (torch.logsumexp(marginal, dim=-1) - math.log(count))
