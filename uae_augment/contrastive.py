"""The contrastive (SimCLR) attack criterion: NT-Xent over the sample's replayed views.

docs/method.md section 3: for an encoder ``backbone`` and projection head ``head``,

    f_x(x + delta) = max(0, L(x + delta) - L(x)),

with L the NT-Xent loss (temperature 0.5) of the sample's augmented views. The
views are :class:`~uae_augment.views.SimCLRViews` (real, differentiable SimCLR
augmentations), drawn once per sample and replayed on x in
:meth:`Contrastive.prepare` and on every candidate x + delta, so f_x measures
the effect of delta and nothing else. The release fed the *same* image as both
views, which makes its NT-Xent term a constant and its SimCLR attack pure MI
minimisation.

How L is computed for one sample (:func:`ntxent_per_sample`): the sample's V
views (V even) are projected and L2-normalised to z_1..z_V and paired as
(z_1, z_2), (z_3, z_4), ...; each view a is an anchor whose positive is its
partner p(a) and whose negatives are the sample's other views and, when given,
a fixed bank of M negative projections n_1..n_M:

    l_a = -s(z_a, z_p(a)) / tau + log( sum_{b != a} exp(s(z_a, z_b) / tau)
                                      + sum_k exp(s(z_a, n_k) / tau) ),
    L = mean_a l_a,          s = cosine similarity.

Without a bank this is exactly lightly's ``NTXentLoss(z[0::2], z[1::2])`` over
the sample's views (so V >= 4 is needed: with two views it is identically 0);
with V = 2 and a bank it is the mean of lightly's memory-bank (MoCo-style)
NT-Xent in both directions. The bank holds the projections of fixed images
(``negatives``), each under one view drawn from its own generator, recomputed
at every :meth:`Contrastive.prepare` with the current model, so it stands for
"the other images of the batch" without making a sample's value depend on the
batch it was attacked in: per-sample results are batch-composition independent.
Run the backbone and head in eval mode (attacks do), or BatchNorm's batch
statistics couple the samples.

``SimCLRViews``, ``ViewParameters``, ``ViewPurpose`` and ``view_generators``
moved to :mod:`uae_augment.views`; importing them from here still works for one
release and warns (``DeprecationWarning``).
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from . import views as _views
from ._validation import check_images
from .criteria import Criterion
from .mine import find_feature_layer

__all__ = ["Contrastive", "ntxent_per_sample"]

_MOVED_TO_VIEWS = frozenset({"SimCLRViews", "ViewParameters", "ViewPurpose", "view_generators"})


def __getattr__(name: str) -> Any:
    """The names that moved to :mod:`uae_augment.views`, with a ``DeprecationWarning``."""
    if name in _MOVED_TO_VIEWS:
        warnings.warn(
            f"uae_augment.contrastive.{name} moved to uae_augment.views.{name}; the old path will be removed"
            " in the next release",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(_views, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def ntxent_per_sample(
    projections: torch.Tensor, negatives: torch.Tensor | None = None, temperature: float = 0.5
) -> torch.Tensor:
    """NT-Xent loss of each sample's views (see the module docstring for the exact form).

    Args:
        projections: (B, V, D) projections of V views per sample (V even, pairs
            (0, 1), (2, 3), ...); normalised here.
        negatives: optional (M, D) bank of negative projections (normalised here),
            shared by every sample.
        temperature: tau > 0.

    Returns:
        (B,) per-sample losses; sample b depends on ``projections[b]`` and the bank only.

    Raises:
        ValueError: on an odd V, fewer than two views, or no negative at all
            (V = 2 without a bank makes the loss identically zero).

    Example:
        >>> z = torch.randn(3, 4, 8)
        >>> ntxent_per_sample(z).shape
        torch.Size([3])
    """
    if projections.dim() != 3:
        raise ValueError(f"projections must be (B, V, D), got shape {tuple(projections.shape)}")
    views = projections.shape[1]
    if views < 2 or views % 2:
        raise ValueError(f"NT-Xent needs an even number of views >= 2 per sample, got {views}")
    has_bank = negatives is not None and negatives.shape[0] > 0
    if views == 2 and not has_bank:
        raise ValueError(
            "with 2 views and no negatives each view's only candidate is its positive, so the loss"
            " is identically zero; use n_views >= 4 or a negative bank"
        )
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    z = F.normalize(projections, dim=-1)
    logits = torch.einsum("bvd,bwd->bvw", z, z) / temperature
    eye = torch.eye(views, dtype=torch.bool, device=z.device)
    partner = torch.arange(views, device=z.device) ^ 1
    positive = logits.gather(2, partner.view(1, views, 1).expand(z.shape[0], views, 1)).squeeze(2)
    candidates = logits.masked_fill(eye, float("-inf"))
    if has_bank:
        assert negatives is not None
        bank = F.normalize(negatives.to(z.dtype), dim=-1)
        candidates = torch.cat([candidates, torch.einsum("bvd,md->bvm", z, bank) / temperature], dim=2)
    return (torch.logsumexp(candidates, dim=2) - positive).mean(dim=1)


# --------------------------------------------------------------------------- the criterion


@dataclass
class _ContrastiveReference:
    params: _views.ViewParameters | _views.ViewPlan
    negatives: torch.Tensor | None
    clean_loss: torch.Tensor


class Contrastive(Criterion):
    """SimCLR criterion: f = max(0, L(x + delta) - L(x)), L the NT-Xent loss of the sample's views.

    ``L`` runs ``head(backbone(view))`` on ``n_views`` augmented views of the
    sample, drawn once per sample from ``views.view_generators(seed, index,
    ViewPurpose.CRITERION)`` and replayed on every candidate, and scores them
    with :func:`ntxent_per_sample` against the bank of ``negatives`` (see the
    module docstring). f = 0 means SimCLR's objective is no worse on
    x + delta than on x under the same augmentations. MINE's feature-map mode
    uses ``backbone.first_layer`` when the backbone defines it (the CIFAR
    ResNet-18's stem convolution, before its BatchNorm), else the first
    convolution found.

    Args:
        backbone: encoder, (N, C, H, W) in [0, 1] -> (N, F) features.
        head: projection head, (N, F) -> (N, D).
        transform: the replayable view augmentation (default ``SimCLRViews()``,
            which keeps the input size). lightly's PIL-based ``SimCLRTransform``
            is not differentiable; :class:`SimCLRViews` takes its arguments.
        n_views: views per sample, even (2 needs ``negatives``).
        negatives: optional (M, C, H, W) images in [0, 1] whose projections (one
            view each, recomputed at every :meth:`prepare`) form the negative
            bank, e.g. a fixed random subset of the training set.
        temperature: NT-Xent tau (SimCLR CIFAR-10: 0.5).
        seed: seed of the per-sample views (and of the bank's views).

    Raises:
        TypeError: if backbone or head is not an ``nn.Module`` or ``transform``
            does not have SimCLRViews' ``sample`` / ``__call__`` interface.
        ValueError: on an odd or too small ``n_views``, two views without
            negatives, a non-positive temperature, or negatives that are not
            images in [0, 1].

    Example:
        >>> from uae_augment.views import SimCLRViews
        >>> backbone = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        >>> crit = Contrastive(backbone, nn.Linear(4, 8), SimCLRViews(size=8), n_views=4)
        >>> x = torch.rand(2, 3, 8, 8)
        >>> reference = crit.prepare(x, None, torch.arange(2))
        >>> crit(x, reference).tolist()
        [0.0, 0.0]
    """

    def __init__(
        self,
        backbone: nn.Module,
        head: nn.Module,
        transform: _views.SimCLRViews | None = None,
        *,
        n_views: int = 2,
        negatives: torch.Tensor | None = None,
        temperature: float = 0.5,
        seed: int = 0,
    ):
        super().__init__(backbone)
        if not isinstance(head, nn.Module):
            raise TypeError(f"head must be a torch.nn.Module, got {type(head).__name__}")
        transform = _views.SimCLRViews() if transform is None else transform
        if not (callable(getattr(transform, "sample", None)) and callable(transform)):
            raise TypeError(
                "transform must be a replayable tensor augmentation with SimCLRViews' interface"
                f" (sample(generators, n_views, image_shape) and __call__(x, params)), got"
                f" {type(transform).__name__}; lightly's SimCLRTransform works on PIL images and is"
                " not differentiable: use uae_augment.SimCLRViews, which takes its arguments"
            )
        _views.check_n_views(n_views)
        if n_views % 2:
            raise ValueError(f"n_views must be even (views are paired), got {n_views}")
        if negatives is not None:
            negatives = check_images(negatives, name="negatives", min_rank=4).detach().cpu()
        if n_views == 2 and negatives is None:
            raise ValueError(
                "n_views=2 needs negatives (a bank of images); without them NT-Xent over one sample's"
                " two views is identically 0. Pass negatives=... or n_views >= 4"
            )
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.backbone = backbone
        self.head = head
        self.transform = transform
        self.n_views = n_views
        self.negatives = negatives
        self.temperature = float(temperature)
        self.seed = int(seed)

    def models(self) -> list[nn.Module]:
        return [self.backbone, self.head]

    def feature_layer(self) -> nn.Module | None:
        declared = getattr(self.backbone, "first_layer", None)
        return declared if isinstance(declared, nn.Module) else find_feature_layer(self.backbone)

    def project(self, views: torch.Tensor) -> torch.Tensor:
        """Projections of views (B, V, C, H, W) -> (B, V, D)."""
        z = self.head(self.backbone(views.flatten(0, 1)))
        return z.unflatten(0, views.shape[:2])

    def view_parameters(self, index: torch.Tensor, image_shape: Sequence[int]) -> _views.ViewParameters:
        """The (replayed) view parameters of the samples with global indices ``index``."""
        generators = _views.view_generators(self.seed, index, _views.ViewPurpose.CRITERION)
        return self.transform.sample(generators, self.n_views, image_shape)

    def negative_bank(self, device: torch.device | str) -> torch.Tensor | None:
        """(M, D) projections of the negatives under their fixed views (None without negatives)."""
        if self.negatives is None:
            return None
        count = self.negatives.shape[0]
        generators = _views.view_generators(self.seed, range(count), _views.ViewPurpose.NEGATIVES)
        params = self.transform.sample(generators, 1, self.negatives.shape[1:])
        images = self.negatives.to(device)
        return self.project(self.transform(images, params))[:, 0]

    def loss(
        self,
        x: torch.Tensor,
        params: _views.ViewParameters | _views.ViewPlan,
        negatives: torch.Tensor | None,
    ) -> torch.Tensor:
        """L per sample (N,) for images x (N, C, H, W) under ``params``, differentiable in x."""
        return ntxent_per_sample(self.project(self.transform(x, params)), negatives, self.temperature)

    def prepare(self, x: torch.Tensor, y: torch.Tensor | None, index: torch.Tensor) -> _ContrastiveReference:
        with torch.no_grad():
            params = self.view_parameters(index, tuple(x.shape[1:]))
            if callable(getattr(self.transform, "plan", None)):  # replayed on the device without syncs
                params = self.transform.plan(params, x.device)
            negatives = self.negative_bank(x.device)
            if negatives is not None:
                negatives = negatives.to(x.dtype)
            clean = self.loss(x, params, negatives)
        return _ContrastiveReference(params=params, negatives=negatives, clean_loss=clean)

    def __call__(self, x_adv: torch.Tensor, reference: _ContrastiveReference) -> torch.Tensor:
        return torch.clamp(self.loss(x_adv, reference.params, reference.negatives) - reference.clean_loss, min=0.0)

    def config(self) -> dict[str, Any]:
        bank: dict[str, Any] | None = None
        if self.negatives is not None:
            digest = hashlib.sha256(self.negatives.float().numpy().tobytes()).hexdigest()
            bank = {"count": int(self.negatives.shape[0]), "sha256": digest}
        return {
            "criterion": type(self).__name__,
            "model": f"{type(self.backbone).__name__}+{type(self.head).__name__}",
            "n_views": self.n_views,
            "temperature": self.temperature,
            "view_seed": self.seed,
            "transform": self.transform.config() if hasattr(self.transform, "config") else repr(self.transform),
            "negatives": bank,
        }

    def __repr__(self) -> str:
        count = 0 if self.negatives is None else self.negatives.shape[0]
        return (
            f"Contrastive({type(self.backbone).__name__}, {type(self.head).__name__},"
            f" n_views={self.n_views}, negatives={count}, temperature={self.temperature})"
        )
