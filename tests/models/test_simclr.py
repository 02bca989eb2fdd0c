"""The CIFAR ResNet-18 backbone and the SimCLR model (lightly head, NT-Xent, LARS, views)."""

from __future__ import annotations

import copy

import pytest
import torch
import torchvision
from lightly.loss import NTXentLoss
from lightly.models.modules import SimCLRProjectionHead
from lightly.utils.lars import LARS
from torch import nn

from uae_augment import Contrastive, fit, load_dataset
from uae_augment.models import CIFARResNet18, SimCLR, build_model
from uae_augment.views import ViewPurpose, view_generators


@pytest.fixture(scope="module")
def cifar(data_root) -> torch.Tensor:
    """96 real CIFAR-10 training images."""
    return load_dataset("cifar10", root=data_root).data[:96].clone()


def test_full_width_backbone_is_torchvisions_resnet18_with_the_cifar_stem() -> None:
    net = CIFARResNet18()
    reference = torchvision.models.resnet18()
    stem = net.first_layer
    assert stem is net.conv1 and (stem.kernel_size, stem.stride, stem.padding) == (
        (3, 3),
        (1, 1),
        (1, 1),
    )
    assert isinstance(net.maxpool, nn.Identity) and isinstance(net.fc, nn.Identity)
    # same blocks as torchvision's: only the stem (7x7 -> 3x3) and the classifier differ
    ours = {k: v.shape for k, v in net.state_dict().items()}
    theirs = {k: v.shape for k, v in reference.state_dict().items() if not k.startswith("fc.")}
    assert ours.keys() == theirs.keys()
    assert [k for k in ours if ours[k] != theirs[k]] == ["conv1.weight"]
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert net.eval()(x).shape == (2, 512)
        assert stem(x).shape == (
            2,
            64,
            32,
            32,
        )  # the release's K = 64 maps of 32 x 32, before BatchNorm


def test_width_scales_every_stage() -> None:
    net = CIFARResNet18(width=8, in_channels=1)
    assert net.feature_dim == 64
    assert [
        net.layer1[0].conv1.out_channels,
        net.layer2[0].conv1.out_channels,
        net.layer3[0].conv1.out_channels,
        net.layer4[0].conv1.out_channels,
    ] == [8, 16, 32, 64]
    assert net.eval()(torch.rand(1, 1, 28, 28)).shape == (1, 64)


def test_model_parts_and_registry_round_trip(tmp_path) -> None:
    torch.manual_seed(0)
    model = build_model("simclr-resnet18", (3, 32, 32), width=4)
    assert isinstance(model, SimCLR) and isinstance(model.head, SimCLRProjectionHead)
    assert isinstance(model.loss_fn, NTXentLoss) and model.loss_fn.temperature == 0.5
    assert model.first_layer is model.backbone.conv1
    criterion = model.criterion(n_views=4)
    assert isinstance(criterion, Contrastive) and criterion.transform is model.augment
    torch.save(model.state_dict(), tmp_path / "simclr.pt")
    torch.manual_seed(1)
    loaded = build_model("simclr-resnet18", [3, 32, 32], width=4)
    loaded.load_state_dict(torch.load(tmp_path / "simclr.pt", weights_only=True))
    x = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        assert loaded.eval()(x).equal(model.eval()(x))
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        build_model("simclr-resnet18", (784,))


def test_lars_groups_and_learning_rate_schedule() -> None:
    model = SimCLR(width=2, image_size=8, lr=1.0, weight_decay=1e-4, warmup_fraction=0.1)
    (optimizer,) = model.configure_optimizers()
    assert isinstance(optimizer, LARS)
    decayed, plain = optimizer.param_groups
    assert decayed["weight_decay"] == 1e-4 and plain["weight_decay"] == 0.0
    assert all(p.dim() > 1 for p in decayed["params"]) and all(p.dim() == 1 for p in plain["params"])
    norms = [m for m in model.modules() if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d))]
    biases = [m.bias for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d)) and m.bias is not None]
    expected = {id(p) for m in norms for p in m.parameters()} | {id(b) for b in biases}
    assert {id(p) for p in plain["params"]} == expected
    assert model.learning_rate(0) == 1.0  # no schedule before on_fit_start
    model.on_fit_start(100)
    rates = [model.learning_rate(step) for step in range(100)]
    assert rates[:3] == pytest.approx([0.1, 0.2, 0.3]) and rates[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(rates[9:], rates[10:])) and rates[-1] == 0.0


def test_views_from_generators_are_a_function_of_the_index(cifar: torch.Tensor) -> None:
    model = SimCLR(width=2)
    index = torch.tensor([10, 11, 12, 13])
    together = model.make_views(cifar[:4], view_generators(0, index, ViewPurpose.TRAINING, 3))
    part = model.make_views(cifar[2:4], view_generators(0, index[2:], ViewPurpose.TRAINING, 3))
    torch.testing.assert_close(together[2:], part, atol=1e-6, rtol=0)
    other_epoch = model.make_views(cifar[:4], view_generators(0, index, ViewPurpose.TRAINING, 4))
    assert together.shape == (4, 2, 3, 32, 32) and not torch.allclose(together, other_epoch)
    with pytest.raises(ValueError, match="expected 4 generators"):
        model.make_views(cifar[:4], view_generators(0, index[:2], ViewPurpose.TRAINING))


def test_training_step_minimises_lightlys_ntxent_on_both_views(cifar: torch.Tensor) -> None:
    torch.manual_seed(0)
    model = SimCLR(width=4).train()
    twin = copy.deepcopy(model)
    x, index = cifar[:32], torch.arange(32)
    (optimizer,) = model.configure_optimizers()
    values = model.training_step(x, None, [optimizer], generators=view_generators(0, index, ViewPurpose.TRAINING))
    # the same step by hand: lightly's loss on the two views, LARS update
    views = twin.make_views(x, view_generators(0, index, ViewPurpose.TRAINING))
    z = twin(views.flatten(0, 1)).unflatten(0, (32, 2))
    loss = NTXentLoss(temperature=0.5)(z[:, 0], z[:, 1])
    (twin_optimizer,) = twin.configure_optimizers()
    loss.backward()
    twin_optimizer.step()
    assert values["loss"] == pytest.approx(float(loss.detach()), abs=1e-6) and values["lr"] == 1.0
    for ours, theirs in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=1e-5)


def test_fit_trains_simclr_and_lowers_the_contrastive_loss(cifar: torch.Tensor) -> None:
    torch.manual_seed(0)
    model = SimCLR(width=4, lr=0.5, warmup_fraction=0.0)
    history = fit(model, cifar, epochs=6, batch_size=48, progress=False, seed=0)
    assert history.steps == 12 and not model.training
    assert history.losses[-1] < history.losses[0]
