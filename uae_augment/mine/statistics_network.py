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
from collections.abc import Sequence

import torch
from torch import nn

from .._seeding import Streams, stacked_uniform

_Tensors = dict[str, torch.Tensor]


def _glorot(generators: Streams, shape: Sequence[int], fan_in: int, fan_out: int) -> torch.Tensor:
    limit = math.sqrt(6.0 / (fan_in + fan_out))
    return stacked_uniform(generators, shape, -limit, limit)


class Workspace:
    """Scratch tensors reused by every MINE step of one attack call.

    ``get`` hands out the first elements of one flat buffer per name, grown only
    when a larger shape is asked for, so the steps of an attack write into the
    same memory instead of allocating (and page-faulting) fresh temporaries.
    """

    def __init__(self) -> None:
        self._buffers: dict[str, torch.Tensor] = {}
        self._views: dict[tuple[str, tuple[int, ...]], torch.Tensor] = {}

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
        view = buffer[:numel].view(*shape)
        self._views[key] = view
        return view


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

    Weights are stored as (B, out, in) (``nn.Linear``'s order), except the first
    layer of a map branch, stored as (B, C, out, H'W') so that the folded
    convolution and its gradients are single products over the weight's full width.
    Initial weights are drawn in (in, out) row-major order.

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
        kk = conv_kernel * conv_kernel
        for branch in ("u", "v"):
            if self.is_map:
                self.register_parameter(
                    f"{branch}_conv_weight",
                    nn.Parameter(_glorot(generators, (conv_channels, kk), kk, kk * conv_channels)),
                )
                self.register_parameter(f"{branch}_conv_bias", nn.Parameter(torch.zeros(batch, conv_channels)))
            widths = [features, embed] if hidden is None else [features, hidden, embed]
            for layer, (fan_in, fan_out) in enumerate(zip(widths[:-1], widths[1:])):
                weight = _glorot(generators, (fan_in, fan_out), fan_in, fan_out)
                if layer == 0 and self.is_map:  # (B, C * H'W', out) -> (B, C, out, H'W')
                    weight = weight.view(batch, conv_channels, -1, fan_out).permute(0, 1, 3, 2)
                else:
                    weight = weight.transpose(1, 2)
                weight = weight.contiguous()
                self.register_parameter(f"{branch}_weight{layer}", nn.Parameter(weight))
                self.register_parameter(f"{branch}_bias{layer}", nn.Parameter(torch.zeros(batch, fan_out)))
        self.out_weight = nn.Parameter(_glorot(generators, (embed,), embed, 1))
        self.num_layers = 1 if hidden is None else 2
        self._row_views: dict[tuple[int | None, int | None], tuple[_Tensors, _Tensors]] = {}

    @property
    def batch(self) -> int:
        return self.out_weight.shape[0]

    def patches(self, samples: torch.Tensor) -> torch.Tensor | None:
        """The kernel taps of feature-map samples (B, K, H, W) and a constant tap: (B, k*k + 1, K, H'W').

        Tap t of map k holds the t-th of the k*k shifted H' x W' windows of the
        map; the last tap is ones (it carries the convolution bias). The
        convolution and the first linear layer of a branch are then products of
        these taps with the folded weight (:meth:`_first_map_layer`). None for
        vector samples.
        """
        if not self.is_map:
            return None
        batch, count, height, width = samples.shape
        kernel = self.conv_kernel
        out_h, out_w = height - kernel + 1, width - kernel + 1
        taps = [samples[:, :, p : p + out_h, q : q + out_w] for p in range(kernel) for q in range(kernel)]
        taps.append(torch.ones_like(taps[0]))
        return torch.stack(taps, dim=1).reshape(batch, kernel * kernel + 1, count, out_h * out_w)

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

    def _filters(self, which: str, params: _Tensors) -> torch.Tensor:
        """The convolution's filters with the bias as one more tap: (b, C, k*k + 1)."""
        return torch.cat([params[f"{which}_conv_weight"], params[f"{which}_conv_bias"].unsqueeze(-1)], dim=2)

    def _first_map_layer(
        self, which: str, taps: torch.Tensor, params: _Tensors, work: Workspace | None
    ) -> torch.Tensor:
        """The convolution and the first linear layer in one, on :meth:`patches`: (b, K, out).

        With ``W0`` stored as (C, out, H'W') and the filters ``w`` (C, T), the
        folded weight ``A[t, o, p] = sum_c w[c, t] W0[c, o, p]`` is one product, and
        ``layer0(conv(x))[k, o] = sum_{t, p} taps[t, k, p] A[t, o, p] + bias0[o]``:
        4.4x fewer FLOPs than the convolution followed by the layer, no
        (K, C * H'W') feature tensor, and every product over the weight's full
        width (measured: the per-output-row layout ran 1.2-1.5x slower).
        """
        weight = params[f"{which}_weight0"]
        batch, channels, out, positions = weight.shape
        filters = self._filters(which, params)
        tap_count, count = taps.shape[1], taps.shape[2]
        shape = (batch, tap_count, out * positions)
        folded = work.get(f"{which}_folded", shape, taps) if work is not None else None
        folded = torch.bmm(filters.transpose(1, 2), weight.view(batch, channels, -1), out=folded)
        per_tap = work.get(f"{which}_per_tap", (batch * tap_count, count, out), taps) if work is not None else None
        per_tap = torch.bmm(
            taps.reshape(batch * tap_count, count, positions),
            folded.view(batch * tap_count, out, positions).transpose(1, 2),
            out=per_tap,
        ).view(batch, tap_count, count, out)
        bias = params[f"{which}_bias0"].unsqueeze(1)
        if work is None:
            return per_tap.sum(dim=1) + bias
        hidden = torch.sum(per_tap, dim=1, out=work.get(f"{which}_out0", (batch, count, out), taps))
        return hidden.add_(bias)

    def _linear_stack(
        self, which: str, inputs: torch.Tensor, params: _Tensors, work: Workspace | None = None
    ) -> list[torch.Tensor]:
        """Inputs of every layer of a branch (the :meth:`patches` for maps), then its output.

        For map samples the first layer is the convolution and the first linear
        layer in one (:meth:`_first_map_layer`); with ``work`` every output is
        written into it.
        """
        activations = [inputs]
        for layer in range(self.num_layers):
            if layer == 0 and self.is_map:
                activations.append(self._first_map_layer(which, inputs, params, work))
                continue
            weight = params[f"{which}_weight{layer}"]
            bias = params[f"{which}_bias{layer}"].unsqueeze(1)
            out = None
            if work is not None:
                out = work.get(f"{which}_out{layer}", (*activations[-1].shape[:2], weight.shape[1]), inputs)
            activations.append(torch.baddbmm(bias, activations[-1], weight.transpose(1, 2), out=out))
        return activations

    def branch(self, which: str, samples: torch.Tensor, rows: slice = slice(None)) -> torch.Tensor:
        """Applies branch ``which`` ('u' or 'v') to samples (B, K, *sample_shape) -> (B, K, embed).

        With ``rows``, applies those parameter sets to samples holding only those rows.
        """
        inputs = self.patches(samples) if self.is_map else samples
        return self._linear_stack(which, inputs, self._sliced(rows))[-1]

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
        joint, marginal = self.scores(self.branch("u", u, rows), self.branch("v", v, rows), permutation, rows)
        return donsker_varadhan(joint, marginal)

    def ascent_gradients(
        self,
        u: torch.Tensor,
        v: torch.Tensor,
        permutation: torch.Tensor,
        patches: tuple[torch.Tensor | None, torch.Tensor | None] | None = None,
        rows: slice = slice(None),
        work: Workspace | None = None,
        bound: bool = True,
    ) -> torch.Tensor | None:
        """Writes the gradients of ``-sum_b DV_b`` into every ``param.grad``; returns DV (b,).

        A hand-written backward pass for fixed samples u, v: equal to autograd's
        (checked in the tests) but writing each weight gradient straight into a
        persistent buffer with ``bmm(out=...)`` and every large temporary into
        ``work`` (a :class:`Workspace` kept across steps), so a step allocates no
        large tensor. ``patches`` are the samples' :meth:`patches` when the caller
        computed them once for many steps. ``rows`` restricts the step to a
        contiguous sub-batch of the parameter sets (u, v, permutation and patches
        are then that sub-batch's rows); only those rows of the gradients are written.
        With ``bound=False`` the bound itself is not evaluated (None is returned).
        """
        work = Workspace() if work is None else work
        params, grads = self._views(rows)
        with torch.no_grad():
            estimate, stacks, grad_embed, scores = self._bound_and_embed_grads(
                u, v, permutation, patches, params, work, bound
            )
            grad_joint, joint_act, grad_marginal, marginal_act = scores
            grads["out_weight"].copy_(
                (grad_joint.unsqueeze(-1) * joint_act + grad_marginal.unsqueeze(-1) * marginal_act).sum(dim=1)
            )
            for which in ("u", "v"):
                self._branch_backward(which, stacks[which], grad_embed[which], params, grads, work)
        return estimate

    def bound_and_sample_gradient(
        self,
        u: torch.Tensor,
        v: torch.Tensor,
        permutation: torch.Tensor,
        patches: tuple[torch.Tensor | None, torch.Tensor | None] | None = None,
        rows: slice = slice(None),
        work: Workspace | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """DV (b,) and its gradient with respect to the samples ``v`` (b, K, *sample_shape).

        The attack's delta step needs only this gradient: a hand-written pass
        through the ``v`` branch, without autograd's graph of the parameter
        slices and taps (whose backward zero-filled a batch-sized tensor per
        slice) and without any weight gradient. Arguments as :meth:`ascent_gradients`;
        no parameter or gradient is written.
        """
        work = Workspace() if work is None else work
        params, _ = self._views(rows)
        with torch.no_grad():
            estimate, stacks, grad_embed, _ = self._bound_and_embed_grads(u, v, permutation, patches, params, work)
            grad_v = self._branch_input_gradient("v", stacks["v"], grad_embed["v"], params, work, v.shape)
        return estimate, grad_v.neg_()

    def _bound_and_embed_grads(
        self,
        u: torch.Tensor,
        v: torch.Tensor,
        permutation: torch.Tensor,
        patches: tuple[torch.Tensor | None, torch.Tensor | None] | None,
        params: _Tensors,
        work: Workspace,
        bound: bool = True,
    ) -> tuple[torch.Tensor | None, dict[str, list[torch.Tensor]], _Tensors, tuple[torch.Tensor, ...]]:
        """The forward pass and the gradients of ``-DV`` at both branches' outputs.

        Returns DV (b,) (None with ``bound=False``: the gradient does not need it), every branch's :meth:`_linear_stack`, the gradients at
        the branch outputs, and (d/d joint scores, joint activations, d/d marginal
        scores, marginal activations) for the output weight's gradient.
        """
        if patches is None:
            patches = (self.patches(u), self.patches(v))
        inputs = {"u": u if patches[0] is None else patches[0], "v": v if patches[1] is None else patches[1]}
        stacks = {which: self._linear_stack(which, inputs[which], params, work) for which in ("u", "v")}
        u_embed, v_embed = stacks["u"][-1], stacks["v"][-1]
        index = permutation.unsqueeze(-1).expand_as(v_embed)
        joint_pre = u_embed + v_embed
        marginal_pre = u_embed + v_embed.gather(1, index)
        joint_act, marginal_act = torch.relu(joint_pre), torch.relu(marginal_pre)
        out_weight = params["out_weight"]
        weight = out_weight.unsqueeze(-1)
        joint = torch.bmm(joint_act, weight).squeeze(-1)
        marginal = torch.bmm(marginal_act, weight).squeeze(-1)
        estimate = donsker_varadhan(joint, marginal) if bound else None
        # d(-DV)/dT: -1/K on joint scores, softmax on marginal scores
        grad_joint = torch.full_like(joint, -1.0 / joint.shape[1])
        grad_marginal = torch.softmax(marginal, dim=1)
        out = out_weight.unsqueeze(1)
        grad_joint_pre = grad_joint.unsqueeze(-1) * out * (joint_pre > 0)
        grad_marginal_pre = grad_marginal.unsqueeze(-1) * out * (marginal_pre > 0)
        grad_embed = {
            "u": grad_joint_pre + grad_marginal_pre,
            "v": grad_joint_pre.scatter_add(1, index, grad_marginal_pre),
        }
        return estimate, stacks, grad_embed, (grad_joint, joint_act, grad_marginal, marginal_act)

    def _branch_input_gradient(
        self,
        which: str,
        activations: list[torch.Tensor],
        grad_out: torch.Tensor,
        params: _Tensors,
        work: Workspace,
        shape: torch.Size,
    ) -> torch.Tensor:
        """The gradient at branch ``which``'s samples (``shape``: b, K, ...), given the one at its output.

        For map samples, through the folded first layer of :meth:`_first_map_layer`
        (its folded weight is still in ``work``): ``dtaps[t, k, p] = sum_o grad_out[k, o] A[t, o, p]``,
        and each kernel tap's gradient is added back at its window's place.
        """
        for layer in reversed(range(1, self.num_layers)):
            grad_out = torch.bmm(grad_out, params[f"{which}_weight{layer}"])
        if not self.is_map:
            return torch.bmm(grad_out, params[f"{which}_weight0"])
        batch, channels, out, positions = params[f"{which}_weight0"].shape
        taps = activations[0]
        tap_count, count = taps.shape[1], taps.shape[2]
        per_tap = work.get(f"{which}_grad_per_tap", (batch, tap_count, count, out), grad_out)
        per_tap.copy_(grad_out.unsqueeze(1).expand(batch, tap_count, count, out))
        folded = work.get(f"{which}_folded", (batch * tap_count, out, positions), taps)
        grad_taps = torch.bmm(
            per_tap.view(batch * tap_count, count, out),
            folded,
            out=work.get(f"{which}_grad_taps", (batch * tap_count, count, positions), taps),
        )
        kernel = self.conv_kernel
        out_h, out_w = (size - kernel + 1 for size in self.sample_shape)
        grad_taps = grad_taps.view(batch, tap_count, count, out_h, out_w)
        grad = torch.zeros(shape, dtype=grad_out.dtype, device=grad_out.device)
        for tap, (p, q) in enumerate((p, q) for p in range(kernel) for q in range(kernel)):
            grad[:, :, p : p + out_h, q : q + out_w] += grad_taps[:, tap]  # the last tap (bias) has none
        return grad

    def _grad(self, parameter: nn.Parameter) -> torch.Tensor:
        if parameter.grad is None:
            parameter.grad = torch.empty_like(parameter)
        return parameter.grad

    def _branch_backward(
        self,
        which: str,
        activations: list[torch.Tensor],
        grad_out: torch.Tensor,
        params: _Tensors,
        grads: _Tensors,
        work: Workspace,
    ) -> None:
        for layer in reversed(range(self.num_layers)):
            torch.sum(grad_out, dim=1, out=grads[f"{which}_bias{layer}"])
            if layer == 0 and self.is_map:
                self._first_map_layer_backward(which, activations[0], grad_out, params, grads, work)
                return
            torch.bmm(grad_out.transpose(1, 2), activations[layer], out=grads[f"{which}_weight{layer}"])
            if layer > 0:
                grad_in = work.get(f"grad_input{layer}", activations[layer].shape, grad_out)
                grad_out = torch.bmm(grad_out, params[f"{which}_weight{layer}"], out=grad_in)

    def _first_map_layer_backward(
        self,
        which: str,
        taps: torch.Tensor,
        grad_out: torch.Tensor,
        params: _Tensors,
        grads: _Tensors,
        work: Workspace,
    ) -> None:
        """Gradients of ``W0`` and of the convolution through the folded weight of :meth:`_first_map_layer`.

        With the folded weight's gradient ``G[t, o, p] = sum_k grad_out[k, o] taps[t, k, p]``:
        ``dW0[c, o, p] = sum_t w[c, t] G[t, o, p]`` and ``dw[c, t] = sum_{o, p} W0[c, o, p] G[t, o, p]``
        (the bias tap gives the convolution bias's gradient).
        """
        weight = params[f"{which}_weight0"]
        batch, channels, out, positions = weight.shape
        tap_count, count = taps.shape[1], taps.shape[2]
        per_tap = work.get(f"{which}_grad_per_tap", (batch, tap_count, out, count), grad_out)
        per_tap.copy_(grad_out.transpose(1, 2).unsqueeze(1).expand(batch, tap_count, out, count))
        folded_grad = torch.bmm(
            per_tap.view(batch * tap_count, out, count),
            taps.reshape(batch * tap_count, count, positions),
            out=work.get(f"{which}_folded", (batch * tap_count, out, positions), grad_out),
        ).view(batch, tap_count, out * positions)
        filters = self._filters(which, params)
        torch.bmm(filters, folded_grad, out=grads[f"{which}_weight0"].view(batch, channels, -1))
        filters_grad = torch.bmm(folded_grad, weight.view(batch, channels, -1).transpose(1, 2))  # (b, T, C)
        grads[f"{which}_conv_weight"].copy_(filters_grad[:, :-1].transpose(1, 2))
        grads[f"{which}_conv_bias"].copy_(filters_grad[:, -1])


def donsker_varadhan(joint: torch.Tensor, marginal: torch.Tensor) -> torch.Tensor:
    """DV lower bound mean(T_joint) - log mean(exp T_marginal) along the last axis (logsumexp)."""
    count = joint.shape[-1]
    return joint.mean(dim=-1) - (torch.logsumexp(marginal, dim=-1) - math.log(count))
