"""UAEAugmented on real digits with a real conv autoencoder / classifier and real attacks."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset

from tests.helpers import digits_classifier, digits_conv_autoencoder
from uae_augment import (
    MINEUAE,
    Attack,
    AttackResult,
    ClassifierMargin,
    GaussianNoise,
    MinMaxAttack,
    Reconstruction,
    load_dataset,
)
from uae_augment._seeding import Stream, sample_generator
from uae_augment.data.augmented import UAEAugmented
from uae_augment.data.cache import ProvenanceMismatchError

N = 60
CLOSE = {"atol": 1e-6, "rtol": 0.0}


@pytest.fixture(scope="module")
def train_set() -> Dataset:
    """The real digits training split (1,437 images 8x8 in [0, 1])."""
    return load_dataset("digits")


@pytest.fixture(scope="module")
def base(train_set: Dataset) -> Subset:
    return Subset(train_set, range(N))


@pytest.fixture(scope="module")
def attack() -> MINEUAE:
    return MINEUAE(Reconstruction(digits_conv_autoencoder()), preset="fast", steps=2, seed=3)


@pytest.fixture(scope="module")
def stacked(base: Subset) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.stack([base[i][0] for i in range(N)])
    y = torch.tensor([base[i][1] for i in range(N)])
    return x, y


@pytest.fixture(scope="module")
def expected(attack: MINEUAE, stacked: tuple[torch.Tensor, torch.Tensor]) -> AttackResult:
    """The attack run directly on all N base samples in one batch, with their indices."""
    return attack(stacked[0], index=torch.arange(N))


@pytest.fixture(scope="module")
def materialized(base: Subset, attack: MINEUAE) -> UAEAugmented:
    return UAEAugmented(base, attack, batch_size=16, progress=False).materialize()


class CountingAttack(Attack):
    """Wraps a real attack and records the global indices of every call."""

    def __init__(self, inner: Attack):
        super().__init__(seed=inner.seed)
        self.inner = inner
        self.requires_labels = inner.requires_labels
        self.calls: list[list[int]] = []

    def models(self) -> list[torch.nn.Module]:
        return self.inner.models()

    def _config(self) -> dict[str, Any]:
        return self.inner.config()

    def _attack_batch(self, x, y, index):  # pragma: no cover - __call__ delegates
        raise AssertionError("not used")

    def __call__(self, x, y=None, *, index=None):
        self.calls.append(torch.as_tensor(index).tolist())
        return self.inner(x, y, index=index)


class WithExtras(Dataset):
    """A real base dataset whose items are (x, y, name, weight)."""

    def __init__(self, base: Dataset):
        self.base = base

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int):
        x, y = self.base[i]
        return x, y, f"digit-{i}", float(i) / 10


class ListDataset(Dataset):
    """Items given explicitly (for the validation tests)."""

    def __init__(self, items: list[Any]):
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        return self.items[i]


def replace_draw(seed: int, index: int, epoch: int, p: float) -> bool:
    """Independent recomputation of the documented replace-mode draw."""
    generator = sample_generator(seed, index, Stream.REPLACE, epoch)
    return bool(torch.empty((), dtype=torch.float64).uniform_(0.0, 1.0, generator=generator) < p)


# ---------------------------------------------------------------------------- concat


def test_concat_serves_clean_items_then_their_uaes(materialized, base, expected):
    assert len(materialized) == 2 * N
    for i in (0, 7, N - 1):
        x, y = materialized[i]
        assert torch.equal(x, base[i][0]) and y == base[i][1]
        uae, uae_label = materialized[N + i]
        assert uae_label == base[i][1]
        torch.testing.assert_close(uae, expected.adversarial[i], **CLOSE)
        assert not torch.equal(uae, base[i][0])
    assert torch.equal(materialized[-1][0], materialized[2 * N - 1][0])


def test_uae_rows_equal_the_attack_called_on_each_sample_with_its_index(materialized, attack, stacked):
    x, _ = stacked
    for i in (3, 41):
        direct = attack(x[i : i + 1], index=torch.tensor([i]))
        torch.testing.assert_close(materialized[N + i][0], direct.adversarial[0], **CLOSE)


def test_success_mi_and_asr_come_from_the_generated_attack(base, attack, expected, materialized):
    fresh = UAEAugmented(base, attack, progress=False)
    assert fresh.uae_success is None and fresh.uae_mi is None and fresh.asr is None
    assert torch.equal(materialized.uae_success, expected.success)
    torch.testing.assert_close(materialized.uae_mi, expected.mi, atol=1e-5, rtol=1e-5)
    assert materialized.asr == pytest.approx(float(expected.success.float().mean()))


def test_supervised_attack_receives_the_labels(base, stacked):
    attack = MinMaxAttack(ClassifierMargin(digits_classifier()), mode="supervised", preset="fast", steps=3)
    x, y = stacked
    ds = UAEAugmented(Subset(base, range(20)), attack, batch_size=8, progress=False)
    direct = attack(x[:20], y[:20], index=torch.arange(20))
    for i in range(20):
        torch.testing.assert_close(ds[20 + i][0], direct.adversarial[i], **CLOSE)
    assert torch.equal(ds.uae_success, direct.success)


# ---------------------------------------------------------------------------- structure


def test_extras_are_kept_and_the_flag_is_appended(base, attack, expected):
    extras = WithExtras(base)
    concat = UAEAugmented(extras, attack, return_flag=True, progress=False)
    x, y, name, weight, is_uae = concat[N + 5]
    torch.testing.assert_close(x, expected.adversarial[5], **CLOSE)
    assert (y, name, weight, is_uae) == (base[5][1], "digit-5", 0.5, True)
    assert concat[5][1:] == (base[5][1], "digit-5", 0.5, False)

    pair = UAEAugmented(extras, attack, mode="pair", progress=False)
    (clean, uae), y, name, weight = pair[9]
    assert torch.equal(clean, base[9][0])
    torch.testing.assert_close(uae, expected.adversarial[9], **CLOSE)
    assert (y, name, weight) == (base[9][1], "digit-9", 0.9)
    assert len(pair) == N


def test_transforms_run_after_the_uae_is_chosen(base, attack, expected):
    def invert(sample: torch.Tensor) -> torch.Tensor:
        return 1.0 - sample

    def shift(label: int) -> int:
        return label + 100

    ds = UAEAugmented(base, attack, transform=invert, target_transform=shift, progress=False)
    x, y = ds[4]
    assert torch.equal(x, 1.0 - base[4][0]) and y == base[4][1] + 100
    uae, y = ds[N + 4]
    # The UAE was computed from the untransformed sample, then transformed.
    torch.testing.assert_close(uae, 1.0 - expected.adversarial[4], **CLOSE)
    assert y == base[4][1] + 100

    pair = UAEAugmented(base, attack, mode="pair", transform=invert, progress=False)
    (clean, uae), _ = pair[4]
    assert torch.equal(clean, 1.0 - base[4][0])
    torch.testing.assert_close(uae, 1.0 - expected.adversarial[4], **CLOSE)


def test_getitems_matches_getitem(materialized):
    indices = [N + 3, 2, N + 59, 0, N + 3]
    batch = materialized.__getitems__(indices)
    for index, item in zip(indices, batch):
        single = materialized[index]
        assert torch.equal(item[0], single[0]) and item[1] == single[1]


# ---------------------------------------------------------------------------- replace


def test_replace_draws_follow_seed_index_and_epoch(train_set):
    noise = GaussianNoise(Reconstruction(digits_conv_autoencoder()), sigma=0.01, seed=1)
    p = 0.3
    ds = UAEAugmented(train_set, noise, mode="replace", p=p, seed=5, return_flag=True, progress=False)
    n = len(train_set)
    assert len(ds) == n
    flags = {}
    for epoch in (0, 1, 2):
        ds.set_epoch(epoch)
        items = ds.__getitems__(list(range(n)))
        flags[epoch] = torch.tensor([item[-1] for item in items])
        assert abs(float(flags[epoch].float().mean()) - p) < 4 * math.sqrt(p * (1 - p) / n)
        for i in (0, 1, 2, 100, 1000):
            assert bool(flags[epoch][i]) == replace_draw(5, i, epoch, p)
        for i in range(0, n, 97):
            x, y, flag = items[i]
            assert y == train_set[i][1]
            if flag:
                assert torch.equal(x, ds.attack_result.adversarial[i])
            else:
                assert torch.equal(x, train_set[i][0])
    changed = float((flags[0] != flags[1]).float().mean())
    assert abs(changed - 2 * p * (1 - p)) < 0.06

    ds.set_epoch(1)
    again = UAEAugmented(train_set, noise, mode="replace", p=p, seed=5, return_flag=True, progress=False)
    again.set_epoch(1)
    assert [again[i][-1] for i in range(200)] == flags[1][:200].tolist()
    other_seed = UAEAugmented(train_set, noise, mode="replace", p=p, seed=6, return_flag=True, progress=False)
    other_seed.set_epoch(1)
    assert [other_seed[i][-1] for i in range(200)] != flags[1][:200].tolist()


def test_replace_with_p0_and_p1_is_exact(base, attack, expected):
    counting = CountingAttack(attack)
    never = UAEAugmented(base, counting, mode="replace", p=0.0, return_flag=True, progress=False)
    for epoch in range(3):
        never.set_epoch(epoch)
        items = never.__getitems__(list(range(N)))
        assert not any(item[-1] for item in items)
        assert all(torch.equal(item[0], base[i][0]) for i, item in enumerate(items))
    assert counting.calls == [] and not never.generated

    always = UAEAugmented(base, attack, mode="replace", p=1.0, return_flag=True, progress=False)
    always.set_epoch(7)
    for i, (x, _, flag) in enumerate(always.__getitems__(list(range(N)))):
        assert flag
        torch.testing.assert_close(x, expected.adversarial[i], **CLOSE)


def test_set_epoch_reaches_persistent_workers(base, attack):
    ds = UAEAugmented(base, attack, mode="replace", p=0.5, return_flag=True, progress=False)
    ds.materialize()
    loader = DataLoader(ds, batch_size=15, num_workers=1, persistent_workers=True)
    for epoch in (0, 1):
        ds.set_epoch(epoch)
        flags = torch.cat([batch[-1] for batch in loader]).tolist()
        assert flags == [replace_draw(0, i, epoch, 0.5) for i in range(N)]


# ---------------------------------------------------------------------------- lazy generation


def test_generation_is_lazy_batched_and_happens_once(base, attack, expected):
    counting = CountingAttack(attack)
    ds = UAEAugmented(base, counting, batch_size=25, progress=False)
    assert counting.calls == [] and not ds.generated
    ds[0], ds[N - 1]  # clean items need no UAE
    assert counting.calls == []
    torch.testing.assert_close(ds[N + 2][0], expected.adversarial[2], **CLOSE)
    assert counting.calls == [list(range(0, 25)), list(range(25, 50)), list(range(50, 60))]
    for i in range(2 * N):
        ds[i]
    ds.materialize()
    assert len(counting.calls) == 3 and ds.generated


def test_workers_need_materialize_without_cache(base, attack, expected):
    ds = UAEAugmented(base, attack, progress=False)
    with pytest.raises(RuntimeError, match=r"materialize\(\).*cache=path"):
        list(DataLoader(ds, batch_size=16, num_workers=1))
    assert not ds.generated
    ds.materialize()
    with_workers = list(DataLoader(ds, batch_size=16, num_workers=2))
    in_process = list(DataLoader(ds, batch_size=16, num_workers=0))
    for (xw, yw), (x0, y0) in zip(with_workers, in_process):
        assert torch.equal(xw, x0) and torch.equal(yw, y0)
    uaes = torch.cat([x for x, _ in in_process])[N:]
    torch.testing.assert_close(uaes, expected.adversarial, **CLOSE)


# ---------------------------------------------------------------------------- cache


def test_cache_gives_the_same_items_in_workers(tmp_path, base, attack, expected):
    counting = CountingAttack(attack)
    path = tmp_path / "c.h5"
    ds = UAEAugmented(base, counting, cache=path, batch_size=32, progress=False)
    assert path.is_file() and ds.generated and len(counting.calls) > 0
    with_workers = list(DataLoader(ds, batch_size=16, num_workers=2))
    in_process = list(DataLoader(ds, batch_size=16, num_workers=0))
    assert len(with_workers) == len(in_process) == math.ceil(2 * N / 16)
    for (xw, yw), (x0, y0) in zip(with_workers, in_process):
        assert torch.equal(xw, x0) and torch.equal(yw, y0)
    samples = torch.cat([x for x, _ in in_process])
    assert torch.equal(samples[:N], torch.stack([base[i][0] for i in range(N)]))
    torch.testing.assert_close(samples[N:], expected.adversarial, **CLOSE)
    assert torch.equal(ds.uae_success, expected.success)
    assert str(path) in repr(ds)

    calls = len(counting.calls)
    reused = UAEAugmented(base, counting, mode="pair", cache=path, progress=False)
    assert len(counting.calls) == calls  # a finished file is reused as is
    (clean, uae), _ = reused[11]
    assert torch.equal(clean, base[11][0])
    torch.testing.assert_close(uae, expected.adversarial[11], **CLOSE)

    other_seed = MINEUAE(Reconstruction(digits_conv_autoencoder()), preset="fast", steps=2, seed=4)
    with pytest.raises(ProvenanceMismatchError, match="seed"):
        UAEAugmented(base, other_seed, cache=path, progress=False)


# ---------------------------------------------------------------------------- validation


def test_invalid_arguments_raise_clear_errors(base, attack):
    with pytest.raises(ValueError, match=r"p must lie in \[0, 1\], got 1.5"):
        UAEAugmented(base, attack, mode="replace", p=1.5)
    with pytest.raises(ValueError, match="p must lie"):
        UAEAugmented(base, attack, p=-0.1)
    with pytest.raises(TypeError, match="probability"):
        UAEAugmented(base, attack, p="half")
    with pytest.raises(ValueError, match="mode must be one of .*'mix'"):
        UAEAugmented(base, attack, mode="mix")
    with pytest.raises(ValueError, match="batch_size"):
        UAEAugmented(base, attack, batch_size=0)
    with pytest.raises(ValueError, match="return_flag"):
        UAEAugmented(base, attack, mode="pair", return_flag=True)
    with pytest.raises(TypeError, match="attack must be"):
        UAEAugmented(base, lambda x: x)
    with pytest.raises(TypeError, match="transform must be callable"):
        UAEAugmented(base, attack, transform="flip")
    with pytest.raises(ValueError, match="empty"):
        UAEAugmented(TensorDataset(torch.empty(0, 1, 8, 8), torch.empty(0)), attack)
    with pytest.raises(IndexError, match="out of range"):
        UAEAugmented(base, attack, progress=False)[2 * N]


def test_invalid_items_raise_clear_errors(base, attack):
    x, y = base[0]
    with pytest.raises(TypeError, match=r"a tuple \(x, y, \.\.\.\) or a dict with sample_key=\.\.\., got str"):
        UAEAugmented(ListDataset(["x"]), attack)
    with pytest.raises(TypeError, match="got an empty tuple"):
        UAEAugmented(ListDataset([()]), attack)
    with pytest.raises(TypeError, match="float tensor.*torch.uint8"):
        UAEAugmented(ListDataset([((x * 255).to(torch.uint8), y)]), attack)
    with pytest.raises(TypeError, match="float tensor.*ndarray"):
        UAEAugmented(ListDataset([(x.numpy(), y)]), attack)
    with pytest.raises(ValueError, match=r"sample 0 .*\[0, 1\]"):
        UAEAugmented(ListDataset([(x * 16, y)]), attack)

    late_bad = UAEAugmented(ListDataset([(x, y), (x * 16, y), (x, y)]), attack, progress=False)
    with pytest.raises(ValueError, match=r"samples 0\.\.2 of the base dataset must lie in \[0, 1\]"):
        late_bad.materialize()
    supervised = MinMaxAttack(ClassifierMargin(digits_classifier()), mode="supervised", steps=1)
    with pytest.raises(TypeError, match="integer class label, got 'seven'"):
        UAEAugmented(ListDataset([(x, "seven")]), supervised, progress=False).materialize()


def test_repr_describes_the_dataset(base, attack, materialized):
    fresh = UAEAugmented(base, attack, mode="replace", p=0.25, progress=False)
    text = repr(fresh)
    for part in ("mode='replace'", "p=0.25", "generated=False", "MINEUAE(", "samples=60", "Subset"):
        assert part in text
    assert "asr=" not in text
    assert f"asr={materialized.asr:.4f}" in repr(materialized)
