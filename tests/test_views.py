"""SimCLR views against torchvision: each operation, the crop box, the drawn distribution, replay."""

from __future__ import annotations

import math

import pytest
import torch
import torchvision.transforms.functional as TF
from torchvision.transforms import RandomResizedCrop

from uae_augment import SimCLRViews
from uae_augment.views import ViewParameters, ViewPurpose, view_generators


def _one_view(
    batch: int,
    *,
    box=(0.5, 0.5, 1.0, 1.0),
    flip=False,
    jitter=False,
    factors=(1.0, 1.0, 1.0, 0.0),
    order=(0, 1, 2, 3),
    gray=False,
) -> ViewParameters:
    def full(value, dtype=None):
        return torch.tensor(value, dtype=dtype).expand(batch, 1, *torch.tensor(value).shape).clone()

    return ViewParameters(
        box=full(box),
        flip=full(flip),
        jitter=full(jitter),
        factors=full(factors, torch.float32),
        order=full(order),
        gray=full(gray),
    )


# --------------------------------------------------------------------------- the views


def test_each_view_operation_equals_torchvisions(cifar: torch.Tensor) -> None:
    x = cifar[:6]
    views = SimCLRViews()
    assert views(x, _one_view(6))[:, 0].equal(x)  # the full box is the identity
    single = {
        (1.3, 1.0, 1.0, 0.0): lambda im: TF.adjust_brightness(im, 1.3),
        (1.0, 0.6, 1.0, 0.0): lambda im: TF.adjust_contrast(im, 0.6),
        (1.0, 1.0, 1.4, 0.0): lambda im: TF.adjust_saturation(im, 1.4),
        (1.0, 1.0, 1.0, 0.1): lambda im: TF.adjust_hue(im, 0.1),
        (1.0, 1.0, 1.0, -0.2): lambda im: TF.adjust_hue(im, -0.2),
    }
    for factors, reference in single.items():
        torch.testing.assert_close(
            views(x, _one_view(6, jitter=True, factors=factors))[:, 0],
            reference(x),
            atol=3e-6,
            rtol=0,
        )
    composed = x
    for op in (3, 1, 0, 2):  # the jitter runs in the drawn order
        composed = [
            lambda im: TF.adjust_brightness(im, 1.2),
            lambda im: TF.adjust_contrast(im, 0.7),
            lambda im: TF.adjust_saturation(im, 1.3),
            lambda im: TF.adjust_hue(im, 0.05),
        ][op](composed)
    out = views(x, _one_view(6, jitter=True, factors=(1.2, 0.7, 1.3, 0.05), order=(3, 1, 0, 2)))[:, 0]
    torch.testing.assert_close(out, composed, atol=3e-6, rtol=0)
    torch.testing.assert_close(views(x, _one_view(6, gray=True))[:, 0], TF.rgb_to_grayscale(x, 3), atol=1e-6, rtol=0)
    assert views(x, _one_view(6, flip=True))[:, 0].equal(TF.hflip(x))


def test_crop_box_resamples_like_torchvisions_resized_crop(cifar: torch.Tensor) -> None:
    x = cifar[:4]
    # top 4, left 8, height 12, width 20 pixels of 32, resized to 24 x 24
    box = ((8 + 10) / 32, (4 + 6) / 32, 20 / 32, 12 / 32)
    out = SimCLRViews(size=24)(x, _one_view(4, box=box))[:, 0]
    reference = TF.resized_crop(x, 4, 8, 12, 20, [24, 24], antialias=False)
    # the same bilinear sampling points; on the border rows torchvision clamps to the crop, we read the image
    torch.testing.assert_close(out[..., 1:-1, 1:-1], reference[..., 1:-1, 1:-1], atol=1e-5, rtol=0)
    assert not torch.allclose(out, x[..., :24, :24])


def test_drawn_parameters_follow_simclrs_distribution() -> None:
    views = SimCLRViews(cj_strength=0.5)
    n = 3000
    params = views.sample(view_generators(0, range(n), ViewPurpose.TRAINING), 1, (3, 32, 32)).flatten()
    centre_x, centre_y, width, height = params.box.unbind(-1)
    area = width * height
    assert bool((area >= 0.08 - 1e-6).all() and (area <= 1 + 1e-6).all())
    assert bool(((width / height) >= 3 / 4 - 1e-5).all() and ((width / height) <= 4 / 3 + 1e-5).all())
    assert bool((centre_x - width / 2 >= -1e-6).all() and (centre_x + width / 2 <= 1 + 1e-6).all())
    assert bool((centre_y - height / 2 >= -1e-6).all() and (centre_y + height / 2 <= 1 + 1e-6).all())
    torchvision_area = [
        math.prod(RandomResizedCrop.get_params(torch.zeros(3, 32, 32), (0.08, 1.0), (3 / 4, 4 / 3))[2:]) / 1024
        for _ in range(n)
    ]
    assert abs(float(area.mean()) - sum(torchvision_area) / n) < 0.03
    for rate, expected in ((params.flip, 0.5), (params.jitter, 0.8), (params.gray, 0.2)):
        assert abs(rate.float().mean().item() - expected) < 0.035
    low = torch.tensor([0.6, 0.6, 0.6, -0.1])
    high = torch.tensor([1.4, 1.4, 1.4, 0.1])
    assert bool((params.factors >= low - 1e-6).all() and (params.factors <= high + 1e-6).all())
    assert torch.allclose(params.factors.mean(0), (low + high) / 2, atol=0.02)
    assert bool((params.order.sort(-1).values == torch.arange(4)).all())
    assert len({tuple(o.tolist()) for o in params.order}) == 24  # every order of the four operations occurs


def test_views_depend_on_the_generator_not_on_the_batch(cifar: torch.Tensor) -> None:
    views = SimCLRViews()
    index = torch.tensor([5, 9, 11])
    together = views(cifar[:3], views.sample(view_generators(1, index, ViewPurpose.CRITERION), 2, (3, 32, 32)))
    alone = views(
        cifar[1:2],
        views.sample(view_generators(1, index[1:2], ViewPurpose.CRITERION), 2, (3, 32, 32)),
    )
    torch.testing.assert_close(together[1:2], alone, atol=1e-6, rtol=0)
    assert not torch.allclose(together[:, 0], together[:, 1])  # two different views of each image
    assert float(together.min()) >= 0.0 and float(together.max()) <= 1.0


def test_one_channel_images_and_bad_settings() -> None:
    x = torch.rand(2, 1, 8, 8)
    views = SimCLRViews()
    out = views(x, views.sample_random(2, 3, (1, 8, 8), torch.Generator().manual_seed(0)))
    assert out.shape == (2, 3, 1, 8, 8)
    with pytest.raises(ValueError, match="C = 1 or 3"):
        views.sample_random(2, 2, (2, 8, 8))
    with pytest.raises(ValueError, match="hf_prob"):
        SimCLRViews(hf_prob=1.5)
    with pytest.raises(ValueError, match="hue range"):
        SimCLRViews(cj_strength=4.0)
    with pytest.raises(ValueError, match="B = 2"):
        views(torch.rand(3, 1, 8, 8), views.sample_random(2, 1, (1, 8, 8)))


@pytest.mark.parametrize("channels", [1, 3])
def test_view_plan_replays_the_parameters_bitwise(channels):
    views = SimCLRViews(size=(12, 12), cj_prob=0.7, random_gray_scale=0.4)
    x = torch.rand(5, channels, 16, 16)
    params = views.sample(view_generators(3, range(5), ViewPurpose.TRAINING), 4, x.shape[1:])
    plan = views.plan(params, x.device)
    assert plan.jitter_rows.numel() not in (0, 20) and plan.gray_rows.numel() > 0
    assert torch.equal(views(x, plan), views(x, params))
