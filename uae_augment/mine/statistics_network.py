"""The release's statistics network T_theta, B independent copies stacked along dim 0.

A batch of B samples carries B independent parameter sets, applied with grouped
convolutions and ``bmm``; the marginal term reuses the joint term's branch
outputs (only the combination step is permuted). :meth:`StatisticsNetwork.ascent_gradients`
is a hand-written backward pass that writes into persistent gradient buffers
and a :class:`Workspace`, so a MINE step allocates no large tensor.
:func:`donsker_varadhan` is the bound it estimates.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
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
                raise ValueError(f"feature maps {self.sample_shape} are smaller than the {conv_kernel}x{conv_kernel} kernel")
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

    def _features(self, which: str, samples: torch.Tensor, rows: slice = slice(None)) -> torch.Tensor:
        """The branch's convolution output, flattened: (B, K, F) (vector samples pass through)."""
        if not self.is_map:
            return samples
        batch, count = samples.shape[:2]
        maps = samples.transpose(0, 1)  # (K, B, H, W): sample b's maps meet filter group b
        weight = self._param(f"{which}_conv_weight", rows).reshape(
            batch * self.conv_channels, 1, self.conv_kernel, self.conv_kernel
        )
        bias = self._param(f"{which}_conv_bias", rows).reshape(-1)
        conv = F.conv2d(maps, weight, bias, groups=batch)  # (K, B*C, H', W')
        return conv.reshape(count, batch, self.features).transpose(0, 1).contiguous()

    def patches(self, samples: torch.Tensor) -> torch.Tensor | None:
        """The kernel taps of feature-map samples (B, K, H, W): (B, k*k, K*H'*W') (None for vectors).

        The convolution of a branch is then one ``bmm`` with the (B, C, k*k)
        filters; :meth:`ascent_gradients` takes these precomputed taps because
        the samples stay fixed during the MINE steps of an attack iteration.
        """
        if not self.is_map:
            return None
        batch, count, height, width = samples.shape
        kernel = self.conv_kernel
        out_h, out_w = height - kernel + 1, width - kernel + 1
        taps = [samples[:, :, p : p + out_h, q : q + out_w] for p in range(kernel) for q in range(kernel)]
        return torch.stack(taps, dim=2).transpose(1, 2).reshape(batch, kernel * kernel, count * out_h * out_w)

    def _features_from_patches(
        self, which: str, patches: torch.Tensor, count: int, rows: slice, work: Workspace
    ) -> torch.Tensor:
        """:meth:`_features` of samples given by their :meth:`patches`, written into ``work``: (b, K, F)."""
        weight = self._param(f"{which}_conv_weight", rows)  # (b, C, k*k)
        bias = self._param(f"{which}_conv_bias", rows).unsqueeze(-1)  # (b, C, 1)
        batch = weight.shape[0]
        conv = work.get("conv", (batch, self.conv_channels, patches.shape[2]), patches)
        torch.baddbmm(bias, weight, patches, out=conv)  # (b, C, K * H'W')
        features = work.get(f"{which}_features", (batch, count, self.features), patches)
        features.view(batch, count, self.conv_channels, -1).copy_(conv.view(batch, self.conv_channels, count, -1).transpose(1, 2))
        return features

    def _param(self, name: str, rows: slice) -> torch.Tensor:
        return getattr(self, name)[rows]

    def _linear_stack(
        self, which: str, features: torch.Tensor, rows: slice = slice(None), work: Workspace | None = None
    ) -> list[torch.Tensor]:
        """Inputs of every linear layer of a branch, then its output (hidden ones written into ``work``)."""
        activations = [features]
        for layer in range(self.num_layers):
            weight = self._param(f"{which}_weight{layer}", rows)
            bias = self._param(f"{which}_bias{layer}", rows).unsqueeze(1)
            if work is None or layer == self.num_layers - 1:
                activations.append(torch.baddbmm(bias, activations[-1], weight.transpose(1, 2)))
            else:
                shape = (*activations[-1].shape[:2], weight.shape[1])
                out = work.get(f"{which}_hidden{layer}", shape, features)
                activations.append(torch.baddbmm(bias, activations[-1], weight.transpose(1, 2), out=out))
        return activations

    def branch(self, which: str, samples: torch.Tensor, rows: slice = slice(None)) -> torch.Tensor:
        """Applies branch ``which`` ('u' or 'v') to samples (B, K, *sample_shape) -> (B, K, embed).

        With ``rows``, applies those parameter sets to samples holding only those rows.
        """
        return self._linear_stack(which, self._features(which, samples, rows), rows)[-1]

    def scores(
        self, u_embed: torch.Tensor, v_embed: torch.Tensor, permutation: torch.Tensor, rows: slice = slice(None)
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
                w: self._linear_stack(
                    w,
                    s if taps[w] is None else self._features_from_patches(w, taps[w], s.shape[1], rows, work),
                    rows,
                    work,
                )
                for w, s in (("u", u), ("v", v))
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
            for which, samples in (("u", u), ("v", v)):
                self._branch_backward(which, samples, stacks[which], grads[which], taps[which], rows, work)
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
        samples: torch.Tensor,
        activations: list[torch.Tensor],
        grad_out: torch.Tensor,
        patches: torch.Tensor | None,
        rows: slice,
        work: Workspace,
    ) -> None:
        for layer in reversed(range(self.num_layers)):
            weight = self._param(f"{which}_weight{layer}", rows)
            torch.bmm(grad_out.transpose(1, 2), activations[layer], out=self._grad_rows(f"{which}_weight{layer}", rows))
            torch.sum(grad_out, dim=1, out=self._grad_rows(f"{which}_bias{layer}", rows))
            if layer > 0 or self.is_map:
                grad_in = work.get(f"grad_input{layer}", activations[layer].shape, grad_out)
                grad_out = torch.bmm(grad_out, weight, out=grad_in)
        if patches is None:
            return
        batch, count = samples.shape[:2]
        # (b, K, C * H'W') -> (b, C, K * H'W'), the layout of the patches' columns
        grad_conv = work.get("conv", (batch, self.conv_channels, patches.shape[2]), grad_out)
        grad_conv.view(batch, self.conv_channels, count, -1).copy_(
            grad_out.view(batch, count, self.conv_channels, -1).transpose(1, 2)
        )
        torch.sum(grad_conv, dim=2, out=self._grad_rows(f"{which}_conv_bias", rows))
        torch.bmm(grad_conv, patches.transpose(1, 2), out=self._grad_rows(f"{which}_conv_weight", rows))


def donsker_varadhan(joint: torch.Tensor, marginal: torch.Tensor) -> torch.Tensor:
    """DV lower bound mean(T_joint) - log mean(exp T_marginal) along the last axis (logsumexp)."""
    count = joint.shape[-1]
    return joint.mean(dim=-1) - (torch.logsumexp(marginal, dim=-1) - math.log(count))
