"""Replayable, differentiable SimCLR views: the parameter sampler, the op and its colour kernels.

:class:`SimCLRViews` implements lightly's ``SimCLRTransform`` (random resized
crop, horizontal flip, colour jitter in random order, random grey-scale; no
blur, no normalisation) as batched tensor operations, laid out as in kornia:

* **The sampler.** :meth:`SimCLRViews.sample` draws the parameters of sample
  ``i`` (crop box, flip, colour-jitter factors and order, grey-scale) from the
  sample's own generator, seeded by ``(seed, i, purpose)``
  (:func:`view_generators`), into :class:`ViewParameters`;
  :meth:`SimCLRViews.sample_random` draws them from one generator.
* **The op.** ``SimCLRViews()(x, params)`` only consumes the parameters, so the
  same views can be replayed on x and on every candidate x + delta (the
  :class:`~uae_augment.contrastive.Contrastive` criterion does this: L(x + delta)
  and L(x) see exactly the same augmentations). The crop and flip are one
  ``affine_grid`` / ``grid_sample`` (bilinear); gradients flow back to the
  input through every operation.
* **The colour kernels.** torchvision's arithmetic (brightness, contrast and
  saturation blends, the HSV hue shift) on tensors with one factor per row, in
  the private functions at the end of this module (kornia's ``enhance`` role).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields
from enum import IntEnum
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ._seeding import Stream, sample_generators

__all__ = [
    "SimCLRViews",
    "ViewParameters",
    "ViewPlan",
    "ViewPurpose",
    "check_n_views",
    "view_generators",
]

_CROP_ATTEMPTS = 10  # torchvision's RandomResizedCrop tries 10 boxes before its fallback
# Uniforms per view: crop attempts (area, log-ratio), crop position (x, y), flip,
# jitter on/off, the four jitter factors, the four jitter order keys, grey-scale.
_UNIFORMS_PER_VIEW = 2 * _CROP_ATTEMPTS + 2 + 1 + 1 + 4 + 4 + 1
_GRAY_WEIGHTS = (0.2989, 0.587, 0.114)  # torchvision's rgb_to_grayscale


class ViewPurpose(IntEnum):
    """Independent view streams, so the views of one use never shift another's."""

    CRITERION = 1
    NEGATIVES = 2
    TRAINING = 3
    EVALUATION = 4


def view_generators(
    seed: int, index: torch.Tensor | Sequence[int], purpose: ViewPurpose, *extra: int
) -> list[torch.Generator]:
    """One CPU generator per global index for the views of ``purpose`` (e.g. ``extra=(epoch,)``).

    Example:
        >>> a = view_generators(0, [3, 4], ViewPurpose.TRAINING, 0)
        >>> b = view_generators(0, [4], ViewPurpose.TRAINING, 0)
        >>> bool(torch.rand(2, generator=a[1]).equal(torch.rand(2, generator=b[0])))
        True
    """
    return sample_generators(seed, index, Stream.VIEWS, int(purpose), *extra)


@dataclass
class ViewParameters:
    """The augmentation parameters of V views of B images (all tensors start with (B, V)).

    Attributes:
        box: (B, V, 4) crop box as (centre x, centre y, width, height), relative
            to the image (1 = the full side).
        flip: (B, V) bool, horizontal flip.
        jitter: (B, V) bool, whether colour jitter is applied.
        factors: (B, V, 4) brightness, contrast, saturation factors (1 = identity)
            and hue shift (fraction of the colour circle, 0 = identity).
        order: (B, V, 4) int64, the order of the four jitter operations
            (0 brightness, 1 contrast, 2 saturation, 3 hue), a permutation.
        gray: (B, V) bool, grey-scale conversion.
    """

    box: torch.Tensor
    flip: torch.Tensor
    jitter: torch.Tensor
    factors: torch.Tensor
    order: torch.Tensor
    gray: torch.Tensor

    @property
    def batch(self) -> int:
        return self.box.shape[0]

    @property
    def views(self) -> int:
        return self.box.shape[1]

    def to(self, device: torch.device | str) -> ViewParameters:
        """A copy with every tensor on ``device``."""
        return ViewParameters(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})

    def flatten(self) -> ViewParameters:
        """The parameters with (B, V) merged into one leading dimension of B * V views."""
        return ViewParameters(**{f.name: getattr(self, f.name).flatten(0, 1) for f in fields(self)})


@dataclass
class ViewPlan:
    """:class:`ViewParameters` ready to be replayed on one device without a host-device sync.

    The flattened parameters live on the device, and the rows each colour
    operation touches (found with ``nonzero``, which waits for the device) are
    found once, on the CPU parameters, instead of at every call. Made by
    :meth:`SimCLRViews.plan`; ``SimCLRViews()(x, plan)`` equals
    ``SimCLRViews()(x, params)`` bitwise.

    Attributes:
        batch, views: B and V of the parameters.
        params: the flattened (B * V) parameters on the device.
        jitter_rows: rows with colour jitter.
        chosen: ``chosen[position][op]``: positions in ``jitter_rows`` whose
            ``position``-th jitter operation is ``op``.
        gray_rows: rows converted to grey-scale.
    """

    batch: int
    views: int
    params: ViewParameters
    jitter_rows: torch.Tensor
    chosen: tuple[tuple[torch.Tensor, ...], ...]
    gray_rows: torch.Tensor


class SimCLRViews(nn.Module):
    """lightly's ``SimCLRTransform`` as a batched, differentiable, replayable tensor op.

    Per view, in this order (the order of ``SimCLRViewTransform``): random
    resized crop to ``size`` (area fraction U(min_scale, 1), aspect ratio
    log-uniform in ``ratio``, ten tries and torchvision's fallback), horizontal
    flip with ``hf_prob``, colour jitter with ``cj_prob`` (brightness, contrast,
    saturation, hue in random order, factors as ``torchvision.ColorJitter``
    with the ranges times ``cj_strength``), grey-scale with
    ``random_gray_scale``. No Gaussian blur, no rotation and no normalisation
    (the SimCLR CIFAR-10 setting; images stay in [0, 1]). The defaults are
    lightly's except ``cj_strength=0.5``, the value for CIFAR-sized images.
    One-channel images skip saturation, hue and grey-scale (identities there).

    The randomness is apart from the operation (as in kornia): draw parameters
    with :meth:`sample` (one generator per image, replayable) or
    :meth:`sample_random`, then ``views = transform(x, params)``. Differences
    to torchvision's PIL pipeline: crop boxes are continuous (no rounding to
    whole pixels) and resampled bilinearly without antialiasing; pixels
    outside the image repeat the border (boxes lie inside the image anyway).

    Args:
        size: output (H, W) or side; None keeps the input size.
        cj_prob, cj_strength, cj_bright, cj_contrast, cj_sat, cj_hue: colour jitter
            as in ``lightly.transforms.SimCLRTransform``.
        min_scale: smallest crop area fraction.
        random_gray_scale: grey-scale probability.
        hf_prob: horizontal flip probability.
        ratio: (min, max) aspect ratio (width / height) of the crop box.

    Raises:
        ValueError: on probabilities outside [0, 1], a negative strength, a hue
            range above 0.5, ``min_scale`` outside (0, 1] or a bad ratio.

    Example:
        >>> views = SimCLRViews(size=8)
        >>> x = torch.rand(2, 3, 8, 8)
        >>> params = views.sample(view_generators(0, [0, 1], ViewPurpose.TRAINING), n_views=2, image_shape=x.shape[1:])
        >>> out = views(x, params)
        >>> out.shape, bool(out.equal(views(x, params)))
        (torch.Size([2, 2, 3, 8, 8]), True)
    """

    def __init__(
        self,
        size: int | tuple[int, int] | None = None,
        *,
        cj_prob: float = 0.8,
        cj_strength: float = 0.5,
        cj_bright: float = 0.8,
        cj_contrast: float = 0.8,
        cj_sat: float = 0.8,
        cj_hue: float = 0.2,
        min_scale: float = 0.08,
        random_gray_scale: float = 0.2,
        hf_prob: float = 0.5,
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
    ):
        super().__init__()
        for name, value in (
            ("cj_prob", cj_prob),
            ("random_gray_scale", random_gray_scale),
            ("hf_prob", hf_prob),
        ):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1], got {value}")
        for name, value in (
            ("cj_strength", cj_strength),
            ("cj_bright", cj_bright),
            ("cj_contrast", cj_contrast),
            ("cj_sat", cj_sat),
            ("cj_hue", cj_hue),
        ):
            if value < 0 or not math.isfinite(value):
                raise ValueError(f"{name} must be a finite value >= 0, got {value}")
        if cj_strength * cj_hue > 0.5:
            raise ValueError(f"the hue range cj_strength * cj_hue must be <= 0.5, got {cj_strength * cj_hue}")
        if not 0.0 < min_scale <= 1.0:
            raise ValueError(f"min_scale must lie in (0, 1], got {min_scale}")
        if len(ratio) != 2 or not 0 < ratio[0] <= ratio[1]:
            raise ValueError(f"ratio must be (min, max) with 0 < min <= max, got {ratio}")
        if isinstance(size, int):
            size = (size, size)
        if size is not None and (len(size) != 2 or min(size) < 1):
            raise ValueError(f"size must be a positive int, an (H, W) pair or None, got {size}")
        self.size = None if size is None else (int(size[0]), int(size[1]))
        self.cj_prob = float(cj_prob)
        self.cj_strength = float(cj_strength)
        self.ranges = (
            float(cj_strength * cj_bright),
            float(cj_strength * cj_contrast),
            float(cj_strength * cj_sat),
            float(cj_strength * cj_hue),
        )
        self.min_scale = float(min_scale)
        self.random_gray_scale = float(random_gray_scale)
        self.hf_prob = float(hf_prob)
        self.ratio = (float(ratio[0]), float(ratio[1]))

    # ----------------------------------------------------------------- parameters

    def sample(self, generators: Sequence[torch.Generator], n_views: int, image_shape: Sequence[int]) -> ViewParameters:
        """Parameters of ``n_views`` views per image, image ``b`` drawn from ``generators[b]`` alone.

        Args:
            generators: one CPU generator per image (e.g. :func:`view_generators`).
            n_views: views per image (>= 1).
            image_shape: (C, H, W) of one image (the crop box depends on H / W).

        Returns:
            CPU :class:`ViewParameters` of shape (len(generators), n_views, ...).
        """
        check_n_views(n_views)
        uniforms = torch.empty(len(generators), n_views, _UNIFORMS_PER_VIEW)
        for row, generator in zip(uniforms, generators):
            row.uniform_(0.0, 1.0, generator=generator)
        return self._from_uniforms(uniforms, image_shape)

    def sample_random(
        self,
        batch: int,
        n_views: int,
        image_shape: Sequence[int],
        generator: torch.Generator | None = None,
    ) -> ViewParameters:
        """Parameters of ``n_views`` views for ``batch`` images from one CPU generator (default: torch's)."""
        check_n_views(n_views)
        uniforms = torch.rand(batch, n_views, _UNIFORMS_PER_VIEW, generator=generator)
        return self._from_uniforms(uniforms, image_shape)

    def _from_uniforms(self, u: torch.Tensor, image_shape: Sequence[int]) -> ViewParameters:
        _, height, width = _image_dims(image_shape)
        crop, rest = u[..., : 2 * _CROP_ATTEMPTS + 2], u[..., 2 * _CROP_ATTEMPTS + 2 :]
        box = self._crop_boxes(crop, height / width)
        flip = rest[..., 0] < self.hf_prob
        jitter = rest[..., 1] < self.cj_prob
        draws = rest[..., 2:6]
        low = torch.tensor([max(0.0, 1.0 - r) for r in self.ranges[:3]] + [-self.ranges[3]])
        high = torch.tensor([1.0 + r for r in self.ranges[:3]] + [self.ranges[3]])
        factors = low + draws * (high - low)
        order = rest[..., 6:10].argsort(dim=-1)
        gray = rest[..., 10] < self.random_gray_scale
        return ViewParameters(box=box, flip=flip, jitter=jitter, factors=factors, order=order, gray=gray)

    def _crop_boxes(self, u: torch.Tensor, aspect: float) -> torch.Tensor:
        """torchvision's RandomResizedCrop.get_params on relative, continuous boxes; aspect = H / W."""
        attempts = u[..., : 2 * _CROP_ATTEMPTS].unflatten(-1, (_CROP_ATTEMPTS, 2))
        area = self.min_scale + attempts[..., 0] * (1.0 - self.min_scale)
        log_low, log_high = math.log(self.ratio[0]), math.log(self.ratio[1])
        ratio = torch.exp(log_low + attempts[..., 1] * (log_high - log_low))
        # w_px = sqrt(H W area ratio), h_px = sqrt(H W area / ratio), as fractions of W and H
        width = torch.sqrt(area * ratio * aspect)
        height = torch.sqrt(area / ratio / aspect)
        valid = (width <= 1.0) & (height <= 1.0)
        first = valid.to(torch.uint8).argmax(dim=-1, keepdim=True)
        chosen_w = width.gather(-1, first).squeeze(-1)
        chosen_h = height.gather(-1, first).squeeze(-1)
        fallback_w, fallback_h = self._fallback_box(aspect)
        found = valid.any(dim=-1)
        chosen_w = torch.where(found, chosen_w, torch.full_like(chosen_w, fallback_w))
        chosen_h = torch.where(found, chosen_h, torch.full_like(chosen_h, fallback_h))
        position = u[..., 2 * _CROP_ATTEMPTS :]
        # the top-left corner is uniform over the positions that keep the box inside
        centre_x = position[..., 0] * (1.0 - chosen_w) + chosen_w / 2
        centre_y = position[..., 1] * (1.0 - chosen_h) + chosen_h / 2
        centre_x = torch.where(found, centre_x, torch.full_like(centre_x, 0.5))
        centre_y = torch.where(found, centre_y, torch.full_like(centre_y, 0.5))
        return torch.stack([centre_x, centre_y, chosen_w, chosen_h], dim=-1)

    def _fallback_box(self, aspect: float) -> tuple[float, float]:
        """torchvision's central fallback crop (relative width, height) when ten tries fail."""
        in_ratio = 1.0 / aspect  # W / H
        if in_ratio < self.ratio[0]:
            return 1.0, in_ratio / self.ratio[0]
        if in_ratio > self.ratio[1]:
            return self.ratio[1] / in_ratio, 1.0
        return 1.0, 1.0

    # ----------------------------------------------------------------- the operation

    def plan(self, params: ViewParameters, device: torch.device | str) -> ViewPlan:
        """``params`` moved to ``device`` once, with the rows of each colour operation found in advance.

        Replaying a :class:`ViewPlan` issues no host-device synchronisation (no
        ``nonzero``, no parameter copy), which matters when the same views are
        applied at every attack iteration on a GPU.
        """
        flat = params.flatten()
        jitter_rows = flat.jitter.cpu().nonzero().flatten()
        order = flat.order.cpu().index_select(0, jitter_rows)
        chosen = tuple(
            tuple((order[:, position] == op_id).nonzero().flatten().to(device) for op_id in range(4))
            for position in range(4)
        )
        return ViewPlan(
            batch=params.batch,
            views=params.views,
            params=flat.to(device),
            jitter_rows=jitter_rows.to(device),
            chosen=chosen,
            gray_rows=flat.gray.cpu().nonzero().flatten().to(device),
        )

    def forward(self, x: torch.Tensor, params: ViewParameters | ViewPlan) -> torch.Tensor:
        """The views of ``x``: (B, C, H, W) in [0, 1] -> (B, V, C, H', W') in [0, 1].

        Differentiable with respect to ``x``; deterministic given ``params``
        (a :class:`ViewPlan` of the parameters gives the same views bitwise).

        Raises:
            ValueError: if ``x`` is not (B, C, H, W) with C in {1, 3}, or ``params``
                belong to another batch size.
        """
        channels, _, _ = _image_dims(tuple(x.shape[1:]))
        if x.dim() != 4 or params.batch != x.shape[0]:
            raise ValueError(
                f"expected x of shape (B, C, H, W) with B = {params.batch} (the parameters' batch),"
                f" got {tuple(x.shape)}"
            )
        plan = params if isinstance(params, ViewPlan) else self.plan(params, x.device)
        rows = x.unsqueeze(1).expand(plan.batch, plan.views, *x.shape[1:]).flatten(0, 1)
        out = self._crop_and_flip(rows, plan.params)
        out = self._jitter(out, plan, colour=channels == 3)
        if channels == 3:
            out = _replace_rows(out, plan.gray_rows, _grayscale)
        return out.unflatten(0, (plan.batch, plan.views))

    def _crop_and_flip(self, rows: torch.Tensor, params: ViewParameters) -> torch.Tensor:
        centre_x, centre_y, width, height = params.box.to(rows.dtype).unbind(-1)
        scale_x = torch.where(params.flip, -width, width)
        zeros = torch.zeros_like(width)
        theta = torch.stack(
            [
                torch.stack([scale_x, zeros, 2 * centre_x - 1], dim=-1),
                torch.stack([zeros, height, 2 * centre_y - 1], dim=-1),
            ],
            dim=-2,
        )
        out_h, out_w = self.size or rows.shape[-2:]
        grid = F.affine_grid(theta, [rows.shape[0], rows.shape[1], out_h, out_w], align_corners=False)
        return F.grid_sample(rows, grid, mode="bilinear", padding_mode="border", align_corners=False)

    def _jitter(self, out: torch.Tensor, plan: ViewPlan, *, colour: bool) -> torch.Tensor:
        rows = plan.jitter_rows
        if rows.numel() == 0:
            return out
        selected = out.index_select(0, rows)
        factors = plan.params.factors.index_select(0, rows).to(out.dtype)
        operations = (_brightness, _contrast, _saturation, _hue) if colour else (_brightness, _contrast)
        for position in range(4):
            step = selected
            for op_id, (operation, chosen) in enumerate(zip(operations, plan.chosen[position])):
                if chosen.numel():
                    changed = operation(selected.index_select(0, chosen), factors.index_select(0, chosen)[:, op_id])
                    step = step.index_copy(0, chosen, changed)
            selected = step
        return out.index_copy(0, rows, selected)

    def config(self) -> dict[str, Any]:
        """JSON-serialisable settings (part of the criterion's cache provenance)."""
        return {
            "size": list(self.size) if self.size else None,
            "cj_prob": self.cj_prob,
            "cj_ranges": list(self.ranges),
            "min_scale": self.min_scale,
            "ratio": list(self.ratio),
            "random_gray_scale": self.random_gray_scale,
            "hf_prob": self.hf_prob,
        }

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.config().items())


def check_n_views(n_views: int) -> None:
    """Raises ValueError unless ``n_views`` (views per image) is a positive int."""
    if isinstance(n_views, bool) or not isinstance(n_views, int) or n_views < 1:
        raise ValueError(f"n_views must be a positive int, got {n_views!r}")


def _image_dims(shape: Sequence[int]) -> tuple[int, int, int]:
    if len(shape) != 3 or shape[0] not in (1, 3):
        raise ValueError(f"SimCLR views need images (C, H, W) with C = 1 or 3, got shape {tuple(shape)}")
    return int(shape[0]), int(shape[1]), int(shape[2])


# --------------------------------------------------------------------------- colour kernels


def _replace_rows(out: torch.Tensor, rows: torch.Tensor, operation: Any) -> torch.Tensor:
    if rows.numel() == 0:
        return out
    return out.index_copy(0, rows, operation(out.index_select(0, rows)))


def _per_row(factor: torch.Tensor) -> torch.Tensor:
    return factor.view(-1, 1, 1, 1)


def _gray_channel(x: torch.Tensor) -> torch.Tensor:
    if x.shape[1] == 1:
        return x
    weights = x.new_tensor(_GRAY_WEIGHTS).view(1, 3, 1, 1)
    return (x * weights).sum(dim=1, keepdim=True)


def _grayscale(x: torch.Tensor) -> torch.Tensor:
    return _gray_channel(x).expand_as(x)


def _blend(x: torch.Tensor, other: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """torchvision's _blend: factor * x + (1 - factor) * other, clipped to [0, 1]."""
    factor = _per_row(factor)
    return (factor * x + (1.0 - factor) * other).clamp(0.0, 1.0)


def _brightness(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return (_per_row(factor) * x).clamp(0.0, 1.0)


def _contrast(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    mean = _gray_channel(x).mean(dim=(-3, -2, -1), keepdim=True)
    return _blend(x, mean, factor)


def _saturation(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return _blend(x, _gray_channel(x), factor)


def _hue(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """torchvision's adjust_hue (RGB -> HSV, rotate H, HSV -> RGB) with one shift per row."""
    hue, saturation, value = _rgb_to_hsv(x)
    hue = torch.remainder(hue + shift.view(-1, 1, 1, 1), 1.0)
    return _hsv_to_rgb(hue, saturation, value)


def _rgb_to_hsv(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """torchvision's _rgb2hsv: hue in [0, 1), saturation, value; each (N, 1, H, W)."""
    red, green, blue = x.split(1, dim=1)
    maximum = x.amax(dim=1, keepdim=True)
    chroma = maximum - x.amin(dim=1, keepdim=True)
    grey = chroma == 0
    saturation = chroma / torch.where(grey, torch.ones_like(maximum), maximum)
    divisor = torch.where(grey, torch.ones_like(chroma), chroma)
    hue = torch.where(
        maximum == red,
        (green - blue) / divisor,
        torch.where(maximum == green, 2.0 + (blue - red) / divisor, 4.0 + (red - green) / divisor),
    )
    return torch.fmod(hue / 6.0 + 1.0, 1.0), saturation, maximum


def _hsv_to_rgb(hue: torch.Tensor, saturation: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """HSV -> RGB as c_n = V - V S clip(min(k, 4 - k), 0, 1), k = (n + 6 H) mod 6, n = 5, 3, 1.

    The same values as torchvision's sector-wise _hsv2rgb, in elementwise operations.
    """
    offsets = hue.new_tensor([5.0, 3.0, 1.0]).view(1, 3, 1, 1)
    k = torch.remainder(offsets + 6.0 * hue, 6.0)
    return value - value * saturation * torch.minimum(k, 4.0 - k).clamp(0.0, 1.0)
