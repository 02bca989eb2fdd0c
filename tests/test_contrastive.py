"""Per-sample NT-Xent (against lightly), the Contrastive criterion, and the views' old import path."""

from __future__ import annotations

import importlib

import pytest
import torch
from lightly.loss import NTXentLoss
from torch import nn

from uae_augment import MINEUAE, Contrastive, SimCLRViews, views
from uae_augment.contrastive import ntxent_per_sample
from uae_augment.models import CIFARResNet18
from uae_augment.views import ViewPurpose, view_generators


def _net(width: int = 4, dtype: torch.dtype = torch.float32) -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    backbone = CIFARResNet18(width=width)
    head = nn.Sequential(nn.Linear(backbone.feature_dim, 16), nn.ReLU(), nn.Linear(16, 8))
    return backbone.to(dtype).eval(), head.to(dtype).eval()


# --------------------------------------------------------------------------- NT-Xent


def test_ntxent_per_sample_equals_lightly_without_a_bank() -> None:
    z = torch.randn(5, 6, 16)
    lightly = NTXentLoss(temperature=0.5)
    expected = torch.stack([lightly(sample[0::2], sample[1::2]) for sample in z])
    torch.testing.assert_close(ntxent_per_sample(z, None, 0.5), expected)


def test_ntxent_per_sample_equals_lightlys_memory_bank_form_with_two_views() -> None:
    z, bank = torch.randn(4, 2, 16), torch.randn(30, 16)
    lightly = NTXentLoss(temperature=0.5, memory_bank_size=(30, 16))
    lightly.memory_bank.bank = nn.functional.normalize(bank, dim=1)
    with torch.no_grad():  # no gradient: the bank stays as it is
        expected = torch.stack([0.5 * (lightly(s[:1], s[1:]) + lightly(s[1:], s[:1])) for s in z])
    torch.testing.assert_close(ntxent_per_sample(z, bank, 0.5), expected)
    with pytest.raises(ValueError, match="identically zero"):
        ntxent_per_sample(z)
    with pytest.raises(ValueError, match="even"):
        ntxent_per_sample(torch.randn(2, 3, 4), bank)


# --------------------------------------------------------------------------- the criterion


def _criterion(images: torch.Tensor, width: int = 4, dtype: torch.dtype = torch.float32, **kwargs) -> Contrastive:
    backbone, head = _net(width, dtype)
    kwargs.setdefault("negatives", images)
    return Contrastive(backbone, head, SimCLRViews(), **kwargs)


def test_zero_at_delta_zero_and_positive_for_a_worse_input(cifar: torch.Tensor) -> None:
    crit = _criterion(cifar[16:24])
    x = cifar[:8]
    reference = crit.prepare(x, None, torch.arange(8))
    assert crit(x, reference).equal(torch.zeros(8))
    noisy = (x + 0.3 * torch.randn_like(x)).clamp(0, 1)
    assert float(crit(noisy, reference).detach().max()) > 0  # noise changes L: for some images it gets worse


def test_views_are_replayed_for_x_and_x_plus_delta(cifar: torch.Tensor) -> None:
    """f recomputed independently: lightly's memory-bank NT-Xent on views from fresh generators."""
    negatives, x, index = cifar[16:24], cifar[:4], torch.tensor([3, 7, 8, 20])
    crit = _criterion(negatives, seed=5)
    reference = crit.prepare(x, None, index)
    x_adv = (x + 0.05 * torch.randn(x.shape, generator=torch.Generator().manual_seed(1))).clamp(0, 1)
    views = SimCLRViews()
    params = views.sample(view_generators(5, index, ViewPurpose.CRITERION), 2, (3, 32, 32))
    bank_params = views.sample(view_generators(5, range(8), ViewPurpose.NEGATIVES), 1, (3, 32, 32))

    def project(images):
        return crit.head(crit.backbone(images))

    with torch.no_grad():
        bank = project(views(negatives, bank_params)[:, 0])
        lightly = NTXentLoss(temperature=0.5, memory_bank_size=tuple(bank.shape))
        lightly.memory_bank.bank = nn.functional.normalize(bank, dim=1)

        def loss(images):
            z = project(views(images, params).flatten(0, 1)).unflatten(0, (4, 2))
            return torch.stack([0.5 * (lightly(s[:1], s[1:]) + lightly(s[1:], s[:1])) for s in z])

        expected = (loss(x_adv) - loss(x)).clamp(min=0)
        torch.testing.assert_close(crit(x_adv, reference), expected, atol=1e-5, rtol=1e-4)
    # other indices draw other views, hence another clean loss
    other = crit.prepare(x, None, index + 100)
    assert not torch.allclose(other.clean_loss, reference.clean_loss)


def test_gradient_with_respect_to_the_input_is_finite_and_nonzero(cifar: torch.Tensor) -> None:
    crit = _criterion(cifar[16:24])
    x = cifar[:6]
    reference = crit.prepare(x, None, torch.arange(6))
    x_adv = (x + 0.2 * torch.randn_like(x)).clamp(0, 1).requires_grad_(True)
    f = crit(x_adv, reference)
    (grad,) = torch.autograd.grad(f.sum(), x_adv)
    assert bool(torch.isfinite(grad).all())
    positive = f > 0
    assert bool(positive.any())
    assert bool((grad[positive].flatten(1).abs().sum(1) > 0).all())
    assert bool((grad[~positive] == 0).all())  # f clipped at 0: no gradient there


def test_gradcheck_of_the_contrastive_loss_in_float64() -> None:
    torch.manual_seed(3)
    negatives = torch.rand(3, 3, 8, 8, dtype=torch.float64)
    crit = _criterion(negatives, width=2, dtype=torch.float64, n_views=2)
    x = (0.1 + 0.8 * torch.rand(1, 3, 8, 8, dtype=torch.float64)).requires_grad_(True)
    params = crit.view_parameters(torch.tensor([4]), (3, 8, 8))
    params.jitter[:] = True  # exercise every colour operation
    with torch.no_grad():
        bank = crit.negative_bank("cpu")
    assert torch.autograd.gradcheck(lambda images: crit.loss(images, params, bank), (x,), eps=1e-6, atol=1e-5)


def test_per_sample_values_do_not_depend_on_the_batch(cifar: torch.Tensor) -> None:
    crit = _criterion(cifar[16:24], n_views=4)
    x, index = cifar[:6], torch.arange(10, 16)
    x_adv = (x + 0.1 * torch.randn(x.shape, generator=torch.Generator().manual_seed(2))).clamp(0, 1)
    batch = crit(x_adv, crit.prepare(x, None, index))
    order = torch.tensor([4, 0, 5, 2, 1, 3])
    shuffled = crit(x_adv[order], crit.prepare(x[order], None, index[order]))
    torch.testing.assert_close(shuffled, batch[order], atol=1e-5, rtol=1e-5)
    for i in (0, 3):
        alone = crit(x_adv[i : i + 1], crit.prepare(x[i : i + 1], None, index[i : i + 1]))
        torch.testing.assert_close(alone, batch[i : i + 1], atol=1e-5, rtol=1e-5)


def test_mineuae_uses_the_stem_and_reports_the_criterion_it_returns(cifar: torch.Tensor) -> None:
    crit = _criterion(cifar[16:24])
    assert crit.feature_layer() is crit.backbone.conv1
    attack = MINEUAE(crit, preset="strong", steps=3, mine_steps=1, gamma_power=0.5, seed=1)
    x = cifar[:3]
    result = attack(x, index=torch.tensor([0, 1, 2]))
    assert attack.sampler_for((3, 32, 32))(x).shape == (
        3,
        4,
        32,
        32,
    )  # the stem's maps, before BatchNorm
    with torch.no_grad():
        again = crit(result.adversarial, crit.prepare(x, None, torch.arange(3)))
    torch.testing.assert_close(again, result.criterion, atol=1e-5, rtol=1e-4)
    assert bool(torch.isfinite(result.moved_linf).all())
    assert attack.config()["n_views"] == 2 and attack.config()["negatives"]["count"] == 8


def test_contrastive_rejects_bad_configurations(cifar: torch.Tensor) -> None:
    backbone, head = _net()
    with pytest.raises(ValueError, match="n_views=2 needs negatives"):
        Contrastive(backbone, head)
    with pytest.raises(ValueError, match="even"):
        Contrastive(backbone, head, n_views=3)
    with pytest.raises(ValueError, match=r"negatives must lie in \[0, 1\]"):
        Contrastive(backbone, head, negatives=cifar[:2] * 2)
    with pytest.raises(TypeError, match="SimCLRTransform"):
        from lightly.transforms import SimCLRTransform

        Contrastive(backbone, head, SimCLRTransform(input_size=32), negatives=cifar[:2])
    crit = Contrastive(backbone, head, n_views=4)  # views-only NT-Xent: no bank needed
    assert crit.config()["negatives"] is None and "n_views=4" in repr(crit)


@pytest.mark.parametrize("name", ["SimCLRViews", "ViewParameters", "ViewPurpose", "view_generators"])
def test_moved_view_names_still_import_from_contrastive_with_a_warning(name: str) -> None:
    contrastive = importlib.import_module("uae_augment.contrastive")
    with pytest.warns(DeprecationWarning, match=f"uae_augment.views.{name}"):
        moved = getattr(contrastive, name)
    assert moved is getattr(views, name)


def test_unknown_names_of_contrastive_raise_attribute_error() -> None:
    contrastive = importlib.import_module("uae_augment.contrastive")
    with pytest.raises(AttributeError, match="no attribute 'NoSuchName'"):
        contrastive.NoSuchName  # noqa: B018
