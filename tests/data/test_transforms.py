"""UAETransform on real digits batches with a real conv autoencoder and real attacks."""

from __future__ import annotations

import copy

import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from tests.helpers import digits, digits_classifier, digits_conv_autoencoder
from uae_augment import MINEUAE, ClassifierMargin, GaussianNoise, MinMaxAttack, Reconstruction
from uae_augment._seeding import Stream, sample_generator
from uae_augment.data.transforms import UAETransform, replacement_mask

CLOSE = {"atol": 1e-6, "rtol": 0.0}


@pytest.fixture(scope="module")
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    x, y = digits()
    return x[:32].clone(), y[:32].clone()


@pytest.fixture(scope="module")
def attack() -> MINEUAE:
    return MINEUAE(Reconstruction(digits_conv_autoencoder()), preset="fast", steps=2, seed=4)


def test_replace_with_p1_equals_the_attack_and_keeps_labels(attack, batch):
    x, y = batch
    uae = UAETransform(attack, p=1.0)
    out, labels = uae(x, y)
    expected = attack(x, index=torch.arange(32))
    torch.testing.assert_close(out, expected.adversarial, **CLOSE)
    assert torch.equal(labels, y)
    assert uae.last_mask.all() and torch.equal(uae.last_result.success, expected.success)
    # The running counter numbers the next batch 32..63.
    second = uae(x)
    torch.testing.assert_close(second, attack(x, index=torch.arange(32, 64)).adversarial, **CLOSE)
    assert not torch.allclose(second, out)
    assert uae.calls == 2 and uae.samples_seen == 64


def test_p0_is_the_identity_and_attacks_nothing(attack, batch):
    x, y = batch
    uae = UAETransform(attack, p=0.0)
    before = {k: v.clone() for k, v in digits_conv_autoencoder().state_dict().items()}
    out, labels = uae(x, y)
    assert out is x and labels is y
    assert uae.last_result is None and not uae.last_mask.any()
    appended, appended_labels = UAETransform(attack, p=0.0, mode="append")(x, y)
    assert torch.equal(appended, x) and torch.equal(appended_labels, y)
    for key, value in digits_conv_autoencoder().state_dict().items():
        assert torch.equal(value, before[key])


def test_replace_draws_per_sample_with_an_explicit_index(attack, batch):
    x, y = batch
    index = torch.arange(100, 132)
    uae = UAETransform(attack, p=0.5, seed=9)
    out, labels = uae(x, y, index=index)
    mask = uae.last_mask
    for i in range(32):
        generator = sample_generator(9, 100 + i, Stream.REPLACE, 0)
        draw = torch.empty((), dtype=torch.float64).uniform_(0.0, 1.0, generator=generator)
        assert bool(mask[i]) == bool(draw < 0.5)
    assert 0 < int(mask.sum()) < 32
    direct = attack(x[mask], index=index[mask])
    torch.testing.assert_close(out[mask], direct.adversarial, **CLOSE)
    assert torch.equal(out[~mask], x[~mask]) and torch.equal(labels, y)

    # Per-sample determinism: the same samples in another order give the same outputs.
    order = torch.randperm(32, generator=torch.Generator().manual_seed(1))
    shuffled, _ = UAETransform(attack, p=0.5, seed=9)(x[order], y[order], index=index[order])
    torch.testing.assert_close(shuffled, out[order], **CLOSE)

    uae.set_epoch(1)
    uae(x, y, index=index)
    assert not torch.equal(uae.last_mask, mask)
    assert torch.equal(uae.last_mask, replacement_mask(0.5, 9, index, epoch=1))


def test_replace_fraction_is_close_to_p():
    mask = replacement_mask(0.2, seed=0, indices=range(20000))
    assert abs(float(mask.float().mean()) - 0.2) < 0.012


def test_append_concatenates_the_attacked_samples_with_their_labels(attack, batch):
    x, y = batch
    out, labels = UAETransform(attack, p=1.0, mode="append")(x, y)
    assert out.shape == (64, *x.shape[1:])
    assert torch.equal(out[:32], x) and torch.equal(labels, torch.cat([y, y]))
    torch.testing.assert_close(out[32:], attack(x, index=torch.arange(32)).adversarial, **CLOSE)

    index = torch.arange(32)
    half = UAETransform(attack, p=0.5, mode="append", seed=2)
    out, labels = half(x, y, index=index)
    mask = half.last_mask
    k = int(mask.sum())
    assert out.shape[0] == 32 + k and torch.equal(labels, torch.cat([y, y[mask]]))
    torch.testing.assert_close(out[32:], attack(x[mask], index=index[mask]).adversarial, **CLOSE)
    assert len(half.last_result) == k


def test_unsupervised_call_without_labels_returns_only_x(attack, batch):
    x, _ = batch
    out = UAETransform(attack, p=1.0, mode="append")(x)
    assert isinstance(out, torch.Tensor) and out.shape[0] == 64


def test_supervised_attack_gets_the_labels(batch):
    x, y = batch
    supervised = MinMaxAttack(ClassifierMargin(digits_classifier()), mode="supervised", preset="fast", steps=3)
    out, labels = UAETransform(supervised, p=1.0)(x[:8], y[:8])
    torch.testing.assert_close(out, supervised(x[:8], y[:8], index=torch.arange(8)).adversarial, **CLOSE)
    assert torch.equal(labels, y[:8])
    with pytest.raises(ValueError, match="needs labels"):
        UAETransform(supervised)(x[:8])


def test_dtype_and_device_are_preserved(batch):
    x, _ = batch
    ae64 = copy.deepcopy(digits_conv_autoencoder()).double()
    noise = GaussianNoise(Reconstruction(ae64), sigma=0.01)
    out = UAETransform(noise, p=1.0)(x.double())
    assert out.dtype == torch.float64 and out.device == x.device
    assert not torch.equal(out, x.double())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_batches_stay_on_the_gpu(batch):
    x, y = batch
    ae = copy.deepcopy(digits_conv_autoencoder()).cuda()
    attack = MINEUAE(Reconstruction(ae), preset="fast", steps=2, seed=4)
    out, labels = UAETransform(attack, p=0.5, mode="append")(x.cuda(), y.cuda(), index=torch.arange(32))
    assert out.is_cuda and labels.is_cuda and out.dtype == torch.float32
    mask = replacement_mask(0.5, 0, torch.arange(32))
    reference = attack(x.cuda()[mask.cuda()], index=torch.arange(32)[mask]).adversarial
    torch.testing.assert_close(out[32:], reference, atol=1e-5, rtol=0)


class _TransformingDataset(Dataset):
    """Misuse: applies the batch transform per item inside __getitem__."""

    def __init__(self, transform: UAETransform, x: torch.Tensor):
        self.transform = transform
        self.x = x

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.transform(self.x[i : i + 1])[0]


def test_calling_inside_a_dataloader_worker_raises(batch):
    x, _ = batch
    noise = GaussianNoise(Reconstruction(digits_conv_autoencoder()), sigma=0.01)
    dataset = _TransformingDataset(UAETransform(noise), x[:4])
    assert dataset[0].shape == x.shape[1:]  # fine in the main process
    with pytest.raises(RuntimeError, match="DataLoader worker.*precompute.*UAEAugmented"):
        list(DataLoader(dataset, batch_size=2, num_workers=1))


def test_invalid_arguments_raise_clear_errors(attack, batch):
    x, y = batch
    with pytest.raises(ValueError, match=r"p must lie in \[0, 1\], got 2"):
        UAETransform(attack, p=2)
    with pytest.raises(ValueError, match="mode must be one of .*'mix'"):
        UAETransform(attack, mode="mix")
    with pytest.raises(TypeError, match="attack must be"):
        UAETransform(torch.nn.Identity())
    uae = UAETransform(attack)
    with pytest.raises(ValueError, match="32 rows"):
        uae(x, y[:5])
    with pytest.raises(TypeError, match="y must be a torch.Tensor"):
        uae(x, y.tolist())
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        uae(x * 16)
    with pytest.raises(ValueError, match="repeated"):
        uae(x[:2], index=[3, 3])


def test_repr_names_the_attack_and_settings(attack):
    text = repr(UAETransform(attack, p=0.3, mode="append", seed=5))
    for part in ("UAETransform(", "MINEUAE(", "p=0.3", "mode='append'", "seed=5", "calls=0"):
        assert part in text
