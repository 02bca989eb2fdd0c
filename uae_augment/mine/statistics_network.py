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

    def get(self, name: str, shape: Sequence[int], like: torch.Tensor) -> torch.Tensor:
        """A tensor of ``shape`` with ``like``'s dtype and device; contents undefined."""
        numel = math.prod(shape)
        buffer = self._buffers.get(name)
        if buffer is None or buffer.numel() < numel or buffer.dtype != like.dtype or buffer.device != like.device:
            buffer = torch.empty(numel, dtype=like.dtype, device=like.device)
            self._buffers[name] = buffer
        return buffer[:numel].view(*shape)


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

    Weights are stored as (B, out, in) (``nn.Linear``'s order); with the hand-written
    backward of :meth:`ascent_gradients` this layout gives MKL its fastest products.
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
                weight = _glorot(generators, (fan_in, fan_out), fan_in, fan_out).transpose(1, 2).contiguous()
                self.register_parameter(f"{branch}_weight{layer}", nn.Parameter(weight))
                self.register_parameter(f"{branch}_bias{layer}", nn.Parameter(torch.zeros(batch, fan_out)))
        self.out_weight = nn.Parameter(_glorot(generators, (embed,), embed, 1))
        self.num_layers = 1 if hidden is None else 2

    @property
    def batch(self) -> int:
        return self.out_weight.shape[0]

    def patches(self, samples: torch.Tensor) -> torch.Tensor | None:
        """The kernel taps of feature-map samples (B, K, H, W) and a constant tap: (B, K, (k*k + 1) * H'W').

        Row k holds, tap by tap, the k*k shifted H' x W' windows of map k, then
        H'W' ones (the tap that carries the convolution bias). The convolution
        and the first linear layer of a branch are then one product of these
        taps with :meth:`_folded_weight` (None for vector samples).
        """
        if not self.is_map:
            return None
        batch, count, height, width = samples.shape
        kernel = self.conv_kernel
        out_h, out_w = height - kernel + 1, width - kernel + 1
        taps = [samples[:, :, p : p + out_h, q : q + out_w] for p in range(kernel) for q in range(kernel)]
        taps.append(torch.ones_like(taps[0]))
        return torch.stack(taps, dim=2).reshape(batch, count, (kernel * kernel + 1) * out_h * out_w)

    def _conv_taps(self, which: str, rows: slice) -> torch.Tensor:
        """The convolution's filters with the bias as one more tap: (b, C, k*k + 1)."""
        weight = self._param(f"{which}_conv_weight", rows)
        return torch.cat([weight, self._param(f"{which}_conv_bias", rows).unsqueeze(-1)], dim=2)

    def _folded_weight(self, which: str, rows: slice, work: Workspace | None = None) -> torch.Tensor:
        """The convolution folded into the first linear layer: (b, out, (k*k + 1) * H'W').

        ``W0[o, c, p]`` (the layer's weight over channel c at position p) times
        the filters ``w[c, t]``: ``A[o, t, p] = sum_c W0[o, c, p] w[c, t]``, so
        ``layer0(conv(x))[o] = sum_{t, p} A[o, t, p] taps[t, p] + bias0[o]``;
        4.4x fewer FLOPs per MINE step than the convolution followed by the
        layer, and no (K, C * H'W') feature tensor.
        """
        weight = self._param(f"{which}_weight0", rows)  # (b, out, C * H'W')
        filters = self._conv_taps(which, rows)  # (b, C, T)
        batch, out = weight.shape[:2]
        channels, taps = filters.shape[1:]
        per_out = (
            filters.transpose(1, 2).unsqueeze(1).expand(batch, out, taps, channels).reshape(batch * out, taps, channels)
        )
        maps = weight.reshape(batch * out, channels, -1)
        if work is None:
            folded = torch.bmm(per_out, maps)
        else:
            folded = torch.bmm(
                per_out,
                maps,
                out=work.get(f"{which}_folded", (batch * out, taps, maps.shape[2]), weight),
            )
        return folded.view(batch, out, -1)

    def _param(self, name: str, rows: slice) -> torch.Tensor:
        return getattr(self, name)[rows]

    def _linear_stack(
        self,
        which: str,
        inputs: torch.Tensor,
        rows: slice = slice(None),
        work: Workspace | None = None,
    ) -> list[torch.Tensor]:
        """Inputs of every layer of a branch (the :meth:`patches` for maps), then its output.

        For map samples the first layer is the convolution and the first linear
        layer in one (:meth:`_folded_weight`); hidden outputs are written into ``work``.
        """
        activations = [inputs]
        for layer in range(self.num_layers):
            if layer == 0 and self.is_map:
                weight = self._folded_weight(which, rows, work)
            else:
                weight = self._param(f"{which}_weight{layer}", rows)
            bias = self._param(f"{which}_bias{layer}", rows).unsqueeze(1)
            if work is None or layer == self.num_layers - 1:
                activations.append(torch.baddbmm(bias, activations[-1], weight.transpose(1, 2)))
            else:
                shape = (*activations[-1].shape[:2], weight.shape[1])
                out = work.get(f"{which}_hidden{layer}", shape, inputs)
                activations.append(torch.baddbmm(bias, activations[-1], weight.transpose(1, 2), out=out))
        return activations

    def branch(self, which: str, samples: torch.Tensor, rows: slice = slice(None)) -> torch.Tensor:
        """Applies branch ``which`` ('u' or 'v') to samples (B, K, *sample_shape) -> (B, K, embed).

        With ``rows``, applies those parameter sets to samples holding only those rows.
        """
        inputs = self.patches(samples) if self.is_map else samples
        return self._linear_stack(which, inputs, rows)[-1]

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
        weight = self._param("out_weight", rows).unsqueeze(-1)
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
    ) -> torch.Tensor:
        """Writes the gradients of ``-sum_b DV_b`` into every ``param.grad``; returns DV (b,).

        A hand-written backward pass for fixed samples u, v: equal to autograd's
        (checked in the tests) but writing each weight gradient straight into a
        persistent buffer with ``bmm(out=...)`` and every large temporary into
        ``work`` (a :class:`Workspace` kept across steps), so a step allocates no
        large tensor. ``patches`` are the samples' :meth:`patches` when the caller
        computed them once for many steps. ``rows`` restricts the step to a
        contiguous sub-batch of the parameter sets (u, v, permutation and patches
        are then that sub-batch's rows); only those rows of the gradients are written.
        """
        work = Workspace() if work is None else work
        with torch.no_grad():
            if patches is None:
                patches = (self.patches(u), self.patches(v))
            taps = {"u": patches[0], "v": patches[1]}
            stacks = {
                w: self._linear_stack(w, s if taps[w] is None else taps[w], rows, work) for w, s in (("u", u), ("v", v))
            }
            u_embed, v_embed = stacks["u"][-1], stacks["v"][-1]
            index = permutation.unsqueeze(-1).expand_as(v_embed)
            joint_pre = u_embed + v_embed
            marginal_pre = u_embed + v_embed.gather(1, index)
            joint_act, marginal_act = torch.relu(joint_pre), torch.relu(marginal_pre)
            out_weight = self._param("out_weight", rows)
            weight = out_weight.unsqueeze(-1)
            joint = torch.bmm(joint_act, weight).squeeze(-1)
            marginal = torch.bmm(marginal_act, weight).squeeze(-1)
            estimate = donsker_varadhan(joint, marginal)
            # d(-DV)/dT: -1/K on joint scores, softmax on marginal scores
            grad_joint = torch.full_like(joint, -1.0 / joint.shape[1])
            grad_marginal = torch.softmax(marginal, dim=1)
            self._grad(self.out_weight)[rows].copy_(
                (grad_joint.unsqueeze(-1) * joint_act + grad_marginal.unsqueeze(-1) * marginal_act).sum(dim=1)
            )
            out = out_weight.unsqueeze(1)
            grad_joint_pre = grad_joint.unsqueeze(-1) * out * (joint_pre > 0)
            grad_marginal_pre = grad_marginal.unsqueeze(-1) * out * (marginal_pre > 0)
            grads = {
                "u": grad_joint_pre + grad_marginal_pre,
                "v": grad_joint_pre.scatter_add(1, index, grad_marginal_pre),
            }
            for which in ("u", "v"):
                self._branch_backward(which, stacks[which], grads[which], rows, work)
        return estimate

    def _grad(self, parameter: nn.Parameter) -> torch.Tensor:
        if parameter.grad is None:
            parameter.grad = torch.empty_like(parameter)
        return parameter.grad

    def _grad_rows(self, name: str, rows: slice) -> torch.Tensor:
        return self._grad(getattr(self, name))[rows]

    def _branch_backward(
        self,
        which: str,
        activations: list[torch.Tensor],
        grad_out: torch.Tensor,
        rows: slice,
        work: Workspace,
    ) -> None:
        for layer in reversed(range(self.num_layers)):
            torch.sum(grad_out, dim=1, out=self._grad_rows(f"{which}_bias{layer}", rows))
            if layer == 0 and self.is_map:
                self._folded_backward(which, activations[0], grad_out, rows, work)
                return
            weight = self._param(f"{which}_weight{layer}", rows)
            torch.bmm(
                grad_out.transpose(1, 2),
                activations[layer],
                out=self._grad_rows(f"{which}_weight{layer}", rows),
            )
            if layer > 0:
                grad_in = work.get(f"grad_input{layer}", activations[layer].shape, grad_out)
                grad_out = torch.bmm(grad_out, weight, out=grad_in)

    def _folded_backward(
        self,
        which: str,
        patches: torch.Tensor,
        grad_out: torch.Tensor,
        rows: slice,
        work: Workspace,
    ) -> None:
        """Gradients of the first linear layer's weight and of the convolution through :meth:`_folded_weight`.

        With ``G[o, t, p] = sum_k grad_out[k, o] taps[k, t, p]`` (the folded
        weight's gradient): ``dW0[o, c, p] = sum_t w[c, t] G[o, t, p]`` and
        ``dw[c, t] = sum_{o, p} W0[o, c, p] G[o, t, p]`` (the bias tap gives the
        convolution bias's gradient).
        """
        filters = self._conv_taps(which, rows)  # (b, C, T)
        batch, channels, taps = filters.shape
        out = grad_out.shape[2]
        folded_grad = work.get(f"{which}_folded", (batch, out, patches.shape[2]), grad_out)
        torch.bmm(grad_out.transpose(1, 2), patches, out=folded_grad)
        folded_grad = folded_grad.view(batch * out, taps, -1)
        per_out = filters.unsqueeze(1).expand(batch, out, channels, taps).reshape(batch * out, channels, taps)
        weight_grad = self._grad_rows(f"{which}_weight0", rows).view(batch * out, channels, -1)
        torch.bmm(per_out, folded_grad, out=weight_grad)
        weight = self._param(f"{which}_weight0", rows).reshape(batch * out, channels, -1)
        # (T, C) per output: 25% faster than the (C, T) orientation (measured, one thread)
        filters_grad = torch.bmm(folded_grad, weight.transpose(1, 2)).view(batch, out, taps, channels).sum(dim=1)
        self._grad_rows(f"{which}_conv_weight", rows).copy_(filters_grad[:, :-1].transpose(1, 2))
        self._grad_rows(f"{which}_conv_bias", rows).copy_(filters_grad[:, -1])


def donsker_varadhan(joint: torch.Tensor, marginal: torch.Tensor) -> torch.Tensor:
    """DV lower bound mean(T_joint) - log mean(exp T_marginal) along the last axis (logsumexp)."""
    count = joint.shape[-1]
    return joint.mean(dim=-1) - (torch.logsumexp(marginal, dim=-1) - math.log(count))
