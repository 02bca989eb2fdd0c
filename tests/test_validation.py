"""Input checks: a missing batch axis is named by the library before any model runs."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from uae_augment import (
    BIM,
    FGSM,
    LBFGS,
    MINEUAE,
    PGD,
    ClassifierMargin,
    GaussianNoise,
    LpUAE,
    MinMaxAttack,
    PenaltyAttack,
    Reconstruction,
    UAEAugmented,
    UAETransform,
    precompute,
)
from uae_augment._validation import (
    check_batch_rank,
    expected_sample_shape,
)
from uae_augment.attacks.base import Attack as _AttackBase
from uae_augment.attacks.base import check_attack
from uae_augment.data._cache_format import cache_provenance
from uae_augment.models import (
    CIFARResNet18,
    ConvAutoencoder,
    CWClassifier,
    DenseAutoencoder,
    MLPClassifier,
)

MISSING_BATCH_AXIS = r"missing its batch axis: got shape \(1, 8, 8\).*x\[None\] / x\.unsqueeze\(0\)"


def _conv_classifier() -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))


def _conv_autoencoder() -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 1, 3, padding=1), nn.Sigmoid())


def _count_forward_calls(model: nn.Module) -> list[int]:
    calls = [0]

    def hook(module: nn.Module, args: tuple) -> None:
        calls[0] += 1

    for module in model.modules():
        module.register_forward_pre_hook(hook)
    return calls


UNSUPERVISED = {
    "MINEUAE feature maps": lambda ae: MINEUAE(Reconstruction(ae), preset="fast", steps=2, sampler="feature_maps"),
    "MINEUAE random projection": lambda ae: MINEUAE(
        Reconstruction(ae),
        preset="fast",
        steps=2,
        sampler="random_projection",
        projections=4,
        projection_dim=8,
    ),
    "LpUAE": lambda ae: LpUAE(Reconstruction(ae), steps=2),
    "GaussianNoise": lambda ae: GaussianNoise(Reconstruction(ae), sigma=0.01),
}
SUPERVISED = {
    "MinMaxAttack": lambda net: MinMaxAttack(ClassifierMargin(net), preset="fast", steps=2),
    "PenaltyAttack": lambda net: PenaltyAttack(ClassifierMargin(net), preset="fast", steps=2),
    "GaussianNoise": lambda net: GaussianNoise(ClassifierMargin(net), sigma=0.01),
    "FGSM": lambda net: FGSM(net, epsilon=0.1),
    "PGD": lambda net: PGD(net, epsilon=0.1, steps=2),
    "BIM": lambda net: BIM(net, epsilon=0.1, steps=2),
    "LBFGS": lambda net: LBFGS(net),
}


@pytest.mark.parametrize("name", sorted(UNSUPERVISED))
def test_unsupervised_attacks_name_a_missing_batch_axis_before_the_model_runs(name):
    model = _conv_autoencoder()
    calls = _count_forward_calls(model)
    attack = UNSUPERVISED[name](model)
    with pytest.raises(ValueError, match=MISSING_BATCH_AXIS):
        attack(torch.rand(1, 8, 8))
    assert calls[0] == 0
    assert attack(torch.rand(2, 1, 8, 8)).adversarial.shape == (2, 1, 8, 8)  # a batch still works


@pytest.mark.parametrize("name", sorted(SUPERVISED))
def test_supervised_attacks_name_a_missing_batch_axis_before_the_model_runs(name):
    model = _conv_classifier()
    calls = _count_forward_calls(model)
    attack = SUPERVISED[name](model)
    with pytest.raises(ValueError, match=MISSING_BATCH_AXIS):
        attack(torch.rand(1, 8, 8), torch.tensor([0]))
    assert calls[0] == 0


def test_select_targets_names_a_missing_batch_axis():
    attack = PGD(_conv_classifier(), target="least_likely", targeted=True)
    with pytest.raises(ValueError, match=MISSING_BATCH_AXIS):
        attack.select_targets(torch.rand(1, 8, 8), torch.tensor([0]))


@pytest.mark.parametrize("p", [0.0, 1.0])
def test_uae_transform_names_a_missing_batch_axis_whether_or_not_the_sample_is_drawn(p):
    transform = UAETransform(GaussianNoise(Reconstruction(_conv_autoencoder()), sigma=0.01), p=p)
    with pytest.raises(ValueError, match=MISSING_BATCH_AXIS):
        transform(torch.rand(1, 8, 8))


@pytest.mark.parametrize(
    "model",
    [ConvAutoencoder(), CWClassifier(), MLPClassifier((1, 28, 28)), DenseAutoencoder((1, 28, 28))],
    ids=lambda model: type(model).__name__,
)
def test_library_models_name_a_missing_batch_axis(model):
    attack = GaussianNoise(Reconstruction(model) if hasattr(model, "encode") else ClassifierMargin(model))
    with pytest.raises(ValueError, match=r"missing its batch axis: got shape \(1, 28, 28\).*samples \(1, 28, 28\)"):
        attack(torch.rand(1, 28, 28), torch.tensor([0]))


@pytest.mark.parametrize(
    "model,expected",
    [
        (_conv_classifier(), ("(C, H, W) (its first layer is a Conv2d)", 3)),
        (
            nn.Sequential(nn.Conv1d(2, 3, 3), nn.Flatten()),
            ("(C, L) (its first layer is a Conv1d)", 2),
        ),
        (nn.Sequential(nn.Conv3d(1, 2, 3)), ("(C, D, H, W) (its first layer is a Conv3d)", 4)),
        (CIFARResNet18(), ("(C, H, W) (its first layer is a Conv2d)", 3)),
        (MLPClassifier((617,)), ("(617,)", 1)),
        (
            nn.Sequential(nn.Flatten(), nn.Linear(64, 3), nn.Unflatten(1, (3, 1, 1)), nn.Conv2d(3, 1, 1)),
            None,
        ),
        (nn.Sequential(nn.Linear(64, 3)), None),
        (nn.Identity(), None),
    ],
    ids=[
        "conv2d",
        "conv1d",
        "conv3d",
        "resnet18",
        "declared-input-shape",
        "flatten-first",
        "linear",
        "identity",
    ],
)
def test_expected_sample_shape(model, expected):
    assert expected_sample_shape(model) == expected


def test_check_batch_rank_accepts_batches_and_names_other_ranks():
    model = _conv_classifier()
    for rows in (1, 3):  # one-row and odd batches are fine
        check_batch_rank(torch.rand(rows, 1, 8, 8), model)
    with pytest.raises(ValueError, match=r"rank 4 for Sequential.*got shape \(2, 1, 1, 8, 8\)"):
        check_batch_rank(torch.rand(2, 1, 1, 8, 8), model)
    check_batch_rank(torch.rand(5, 64), nn.Sequential(nn.Linear(64, 3)))  # dense: nothing to check


# --------------------------------------------------------------------------- check_attack, Attack.device


class _ModelFreeAttack(_AttackBase):
    """An attack without models (identity), as a user might write one."""

    def models(self) -> list[nn.Module]:
        return []

    def _attack_batch(self, x, y, index):  # pragma: no cover - never run here
        raise AssertionError("not attacked in these tests")

    def _config(self) -> dict:
        return {}


class Attack:  # a look-alike with the base's name from another module
    pass


def test_check_attack_accepts_every_attack_subclass_and_names_the_caller_otherwise():
    from uae_augment.attacks.base import Attack as RealAttack

    noise = GaussianNoise(Reconstruction(_conv_autoencoder()), sigma=0.01)
    for attack in (noise, _ModelFreeAttack()):
        assert check_attack(attack, "test") is attack
    for wrong in (object(), Attack(), RealAttack, "attack"):
        with pytest.raises(TypeError, match=r"^here: attack must be a uae_augment Attack, got"):
            check_attack(wrong, "here")


def test_the_data_entry_points_refuse_a_non_attack_naming_themselves(tmp_path):
    dataset = [(torch.zeros(1, 8, 8), 0)]
    with pytest.raises(TypeError, match="^UAETransform: attack must be"):
        UAETransform(nn.Identity())
    with pytest.raises(TypeError, match="^UAEAugmented: attack must be"):
        UAEAugmented(dataset, nn.Identity())
    with pytest.raises(TypeError, match="^precompute: attack must be"):
        precompute(dataset, nn.Identity(), tmp_path / "cache.h5")
    with pytest.raises(TypeError, match="^cache_provenance: attack must be"):
        cache_provenance(dataset, nn.Identity())


def test_attack_device_is_its_first_models_device_and_cpu_without_models():
    assert _ModelFreeAttack().device() == torch.device("cpu")
    on_cpu = GaussianNoise(Reconstruction(_conv_autoencoder()), sigma=0.01)
    assert on_cpu.device() == torch.device("cpu")
    on_meta = GaussianNoise(Reconstruction(nn.Linear(4, 4, device="meta")), sigma=0.01)
    assert on_meta.device() == torch.device("meta")
