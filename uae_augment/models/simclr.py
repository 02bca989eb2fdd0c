"""SimCLR (Chen et al., 2020) on a CIFAR ResNet-18, with lightly's projection head and NT-Xent loss.

The release's SimCLR setting (docs/method.md section 5): ResNet-18 with the CIFAR stem,
projection head, NT-Xent with temperature 0.5, colour-jitter strength 0.5, no
blur; LARS, learning rate 1.0, weight decay 1e-4, batch 512, 1000 epochs. The
views come from :class:`~uae_augment.views.SimCLRViews` (lightly's
``SimCLRTransform`` as batched tensor operations), so training and the
:class:`~uae_augment.contrastive.Contrastive` attack criterion see the same
augmentation distribution, and views can be drawn per sample from
``(seed, global index, epoch)``: a run then does not depend on how its batches
are split over processes (``torchrun``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from lightly.loss import NTXentLoss
from lightly.models.modules import SimCLRProjectionHead
from lightly.utils.lars import LARS
from lightly.utils.scheduler import cosine_warmup_schedule
from torch import nn
from torchvision.models.resnet import BasicBlock, ResNet

from ..contrastive import Contrastive
from ..views import SimCLRViews, ViewPurpose, view_generators
from .base import FitSettings, normalise_shape, positive_int

__all__ = ["CIFARResNet18", "SimCLR", "simclr_resnet18"]

_STAGE_BLOCKS = (2, 2, 2, 2)  # ResNet-18


class CIFARResNet18(ResNet):
    """torchvision's ResNet-18 with the CIFAR stem: a 3x3 stride-1 convolution and no max-pool.

    The four stages have ``width``, 2, 4 and 8 times ``width`` channels (64 is
    ResNet-18; narrower nets are for CPU runs); the classifier is removed, so
    the network maps (N, C, H, W) in [0, 1] to (N, 8 * width) pooled features.
    Initialisation as torchvision's (Kaiming-normal convolutions, BatchNorm
    weight 1 and bias 0).

    Args:
        width: channels of the stem and the first stage.
        in_channels: image channels.

    Attributes:
        feature_dim: 8 * width.
        first_layer: the stem convolution ``conv1`` (its output before BatchNorm):
            ``width`` maps of H x W (64 maps of 32 x 32 on CIFAR-10, as in the
            release), used by MINE's feature-map mode.

    Example:
        >>> net = CIFARResNet18(width=4)
        >>> net(torch.rand(2, 3, 32, 32)).shape, tuple(net.first_layer(torch.rand(1, 3, 32, 32)).shape)
        (torch.Size([2, 32]), (1, 4, 32, 32))
    """

    def __init__(self, width: int = 64, in_channels: int = 3):
        positive_int(width, "width")
        positive_int(in_channels, "in_channels")
        super().__init__(BasicBlock, list(_STAGE_BLOCKS))
        self.inplanes = width  # _make_layer grows the stages from here
        self.conv1 = nn.Conv2d(in_channels, width, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.maxpool = nn.Identity()
        self.layer1 = self._make_layer(BasicBlock, width, _STAGE_BLOCKS[0])
        self.layer2 = self._make_layer(BasicBlock, 2 * width, _STAGE_BLOCKS[1], stride=2)
        self.layer3 = self._make_layer(BasicBlock, 4 * width, _STAGE_BLOCKS[2], stride=2)
        self.layer4 = self._make_layer(BasicBlock, 8 * width, _STAGE_BLOCKS[3], stride=2)
        self.fc = nn.Identity()
        self.width = width
        self.in_channels = in_channels
        self.feature_dim = 8 * width
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    @property
    def first_layer(self) -> nn.Module:
        """The stem convolution (before BatchNorm and ReLU)."""
        return self.conv1


class SimCLR(nn.Module):
    """SimCLR: CIFAR ResNet-18 backbone + lightly ``SimCLRProjectionHead`` + ``NTXentLoss``.

    ``model(x)`` returns the projections (N, ``projection_dim``);
    ``model.backbone(x)`` the representation (N, 8 * width) used for linear
    evaluation. Training follows :mod:`uae_augment.models.base` (so
    :func:`uae_augment.fit` trains it): every step draws two
    :class:`~uae_augment.views.SimCLRViews` views per image, runs both
    through the network in one batch and minimises lightly's NT-Xent loss with
    lightly's LARS (momentum 0.9; BatchNorm parameters and biases get no
    weight decay and no LARS scaling, as in SimCLR), learning rate ``lr`` with
    a linear warm-up over ``warmup_fraction`` of the steps and a cosine decay
    to 0 (set up by ``on_fit_start``; without it the rate stays ``lr``).

    Args:
        in_channels: image channels.
        image_size: side (or (H, W)) of the views; the release's CIFAR-10: 32.
        width: backbone width (64 = ResNet-18; e.g. 8 or 16 for CPU runs).
        projection_dim: output size of the projection head (hidden size = 8 * width).
        temperature: NT-Xent tau.
        lr, momentum, weight_decay: LARS settings (release: 1.0, 0.9, 1e-4).
        warmup_fraction: share of the steps of the linear warm-up (10 of 1000 epochs).
        views: the view augmentation (default: ``SimCLRViews(size=image_size)``,
            colour-jitter strength 0.5, no blur).
        gather_distributed: NT-Xent negatives from every process under
            ``torch.distributed`` (lightly's ``gather_distributed``; a no-op in
            one process).

    Raises:
        ValueError: on a non-positive width, size or learning rate, or a warm-up
            fraction outside [0, 1).

    Example:
        >>> from uae_augment import fit
        >>> model = SimCLR(width=2, image_size=8)
        >>> history = fit(model, torch.rand(16, 3, 8, 8), epochs=1, batch_size=8, progress=False)
        >>> history.steps, model(torch.rand(4, 3, 8, 8)).shape
        (2, torch.Size([4, 128]))
    """

    fit_settings = FitSettings(epochs=1000, batch_size=512)

    def __init__(
        self,
        in_channels: int = 3,
        image_size: int | Sequence[int] = 32,
        *,
        width: int = 64,
        projection_dim: int = 128,
        temperature: float = 0.5,
        lr: float = 1.0,
        momentum: float = 0.9,
        weight_decay: float = 1e-4,
        warmup_fraction: float = 0.01,
        views: SimCLRViews | None = None,
        gather_distributed: bool = True,
    ):
        super().__init__()
        size = normalise_shape(image_size, name="image_size")
        if len(size) == 1:
            size = (size[0], size[0])
        if len(size) != 2:
            raise ValueError(f"image_size must be a side or (H, W), got {image_size!r}")
        positive_int(projection_dim, "projection_dim")
        if not lr > 0:
            raise ValueError(f"lr must be > 0, got {lr}")
        if not 0.0 <= warmup_fraction < 1.0:
            raise ValueError(f"warmup_fraction must lie in [0, 1), got {warmup_fraction}")
        self.backbone = CIFARResNet18(width=width, in_channels=in_channels)
        features = self.backbone.feature_dim
        self.head = SimCLRProjectionHead(input_dim=features, hidden_dim=features, output_dim=projection_dim)
        self.augment = views if views is not None else SimCLRViews(size=size)
        self.loss_fn = NTXentLoss(temperature=temperature, gather_distributed=gather_distributed)
        self.input_shape = (in_channels, *size)
        self.temperature = float(temperature)
        self.lr = float(lr)
        self.momentum = float(momentum)
        self.weight_decay = float(weight_decay)
        self.warmup_fraction = float(warmup_fraction)
        self._total_steps: int | None = None
        self._step = 0

    @property
    def first_layer(self) -> nn.Module:
        """The backbone's stem convolution (MINE's feature maps)."""
        return self.backbone.first_layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Projections (N, projection_dim) of images (N, C, H, W) in [0, 1]."""
        return self.head(self.backbone(x))

    # ------------------------------------------------------------------ training protocol

    def default_fit(self, num_samples: int) -> FitSettings:
        """The release's 1000 epochs with batch 512."""
        return self.fit_settings

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        """lightly's LARS; no weight decay (hence no LARS scaling) on BatchNorm parameters and biases."""
        decayed, plain = [], []
        for parameter in self.parameters():
            (plain if parameter.dim() <= 1 else decayed).append(parameter)
        groups = [
            {"params": decayed, "weight_decay": self.weight_decay},
            {"params": plain, "weight_decay": 0.0},
        ]
        return [LARS(groups, lr=self.lr, momentum=self.momentum)]

    def on_fit_start(self, total_steps: int) -> None:
        """Sets up the warm-up + cosine learning-rate schedule over ``total_steps`` steps."""
        self._total_steps = positive_int(total_steps, "total_steps")
        self._step = 0

    def learning_rate(self, step: int) -> float:
        """The learning rate of optimisation step ``step`` (0-based) under the schedule."""
        if self._total_steps is None:
            return self.lr
        warmup = int(round(self.warmup_fraction * self._total_steps))
        factor = cosine_warmup_schedule(
            step=min(step, self._total_steps - 1),
            max_steps=self._total_steps,
            start_value=1.0,
            end_value=0.0,
            warmup_steps=warmup,
            warmup_start_value=0.0,
        )
        return self.lr * factor

    def make_views(self, x: torch.Tensor, generators: Sequence[torch.Generator] | None = None) -> torch.Tensor:
        """Two training views per image: (N, C, H, W) -> (N, 2, C, H', W').

        ``generators`` (one per image, e.g. ``view_generators(seed, index,
        ViewPurpose.TRAINING, epoch)``) make the views a function of the image's
        global index; without them they come from torch's default generator.
        """
        shape = tuple(x.shape[1:])
        if generators is None:
            params = self.augment.sample_random(x.shape[0], 2, shape)
        else:
            if len(generators) != x.shape[0]:
                raise ValueError(f"expected {x.shape[0]} generators (one per image), got {len(generators)}")
            params = self.augment.sample(generators, 2, shape)
        return self.augment(x, params)

    def contrastive_loss(
        self, views: torch.Tensor, forward: Callable[[torch.Tensor], torch.Tensor] | None = None
    ) -> torch.Tensor:
        """lightly's NT-Xent of views (N, 2, C, H, W); both views go through ``forward`` in one batch.

        ``forward`` defaults to the model itself; pass its
        ``DistributedDataParallel`` wrapper under torchrun.
        """
        run = forward if forward is not None else self
        z = run(views.flatten(0, 1)).unflatten(0, views.shape[:2])
        return self.loss_fn(z[:, 0], z[:, 1])

    def training_step(
        self,
        x: torch.Tensor,
        y: torch.Tensor | None,
        optimizers: Sequence[torch.optim.Optimizer],
        *,
        generators: Sequence[torch.Generator] | None = None,
        forward: Callable[[torch.Tensor], torch.Tensor] | None = None,
        index: torch.Tensor | Sequence[int] | None = None,
        epoch: int = 0,
        seed: int = 0,
    ) -> dict[str, float]:
        """One LARS step on the NT-Xent loss of two views of ``x`` (labels are ignored).

        :func:`uae_augment.fit` passes ``index``, ``epoch``, ``seed`` (and ``forward``
        under torchrun), so every image's views come from its own generator.

        Args:
            x: images (N, C, H, W) in [0, 1].
            y: ignored (SimCLR is unsupervised).
            optimizers: ``configure_optimizers()``'s optimiser.
            generators: per-image view generators (see :meth:`make_views`).
            forward: the module that runs the network (default: the model; its
                DDP wrapper under torchrun).
            index, epoch, seed: without ``generators``, the views come from
                ``view_generators(seed, index, ViewPurpose.TRAINING, epoch)``
                (``index``: the images' rows in the data set); without either,
                from torch's default generator.

        Returns:
            ``{"loss": this process's loss, "lr": the learning rate used}``.
        """
        (optimizer,) = optimizers
        lr = self.learning_rate(self._step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        optimizer.zero_grad(set_to_none=True)
        if generators is None and index is not None:
            generators = view_generators(seed, index, ViewPurpose.TRAINING, epoch)
        loss = self.contrastive_loss(self.make_views(x, generators), forward)
        loss.backward()
        optimizer.step()
        self._step += 1
        return {"loss": float(loss.detach()), "lr": lr}

    # ------------------------------------------------------------------ attacks

    def criterion(self, **kwargs: Any) -> Contrastive:
        """The :class:`~uae_augment.contrastive.Contrastive` criterion of this model (its views).

        Keyword arguments go to ``Contrastive`` (``n_views``, ``negatives``, ``seed``);
        the temperature defaults to the model's.
        """
        kwargs.setdefault("temperature", self.temperature)
        return Contrastive(self.backbone, self.head, self.augment, **kwargs)


def simclr_resnet18(input_shape: Sequence[int] | int, **kwargs: Any) -> SimCLR:
    """Registry builder: a :class:`SimCLR` for images of ``input_shape`` (C, H, W).

    Raises:
        ValueError: if ``input_shape`` is not an image shape.
    """
    shape = normalise_shape(input_shape)
    if len(shape) != 3:
        raise ValueError(f"simclr-resnet18 needs an image input_shape (C, H, W), got {shape}")
    return SimCLR(in_channels=shape[0], image_size=shape[1:], **kwargs)
