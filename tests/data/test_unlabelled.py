"""Unlabelled data: bare-sample, ``(x,)`` and dict items in UAEAugmented (every mode),
precompute/UAECache and UAETransform, on real digits with real attacks, real HDF5
files and real DataLoader worker processes.

Expected items are built here from the documented structure and from the attack
called directly on the stacked samples with their indices.
"""

from __future__ import annotations

from typing import Any

import h5py
import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset, default_collate

from tests.data._precompute_worker import tiny_autoencoder
from uae_augment import (
    MINEUAE,
    ClassifierMargin,
    Contrastive,
    GaussianNoise,
    LpUAE,
    MinMaxAttack,
    Reconstruction,
    SimCLRViews,
    load_dataset,
)
from uae_augment.data._items import parse_item
from uae_augment.data.augmented import UAEAugmented
from uae_augment.data.cache import UAECache, precompute
from uae_augment.data.transforms import UAETransform, replacement_mask

N = 40
CLOSE = {"atol": 1e-6, "rtol": 0.0}
STRUCTURES = ("bare", "tuple1", "dict")
KEY = "image"


class Unlabelled(Dataset):
    """The digits samples without labels, as bare tensors, ``(x,)`` tuples or dicts."""

    def __init__(self, base: Dataset, structure: str):
        self.base = base
        self.structure = structure

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> Any:
        x = self.base[i][0]
        if self.structure == "bare":
            return x
        if self.structure == "tuple1":
            return (x,)
        return {KEY: x, "id": i, "name": f"digit-{i}"}


class ListDataset(Dataset):
    def __init__(self, items: list[Any]):
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> Any:
        return self.items[i]


def sample_key(structure: str) -> str | None:
    return KEY if structure == "dict" else None


def documented_item(structure: str, i: int, sample: Any, flag: bool | None) -> Any:
    """The item the README and docstrings promise for base item ``i`` with ``sample``."""
    flag_part = () if flag is None else (flag,)
    if structure == "bare":
        return (sample, *flag_part) if flag_part else sample
    if structure == "tuple1":
        return (sample, *flag_part)
    item = {KEY: sample, "id": i, "name": f"digit-{i}"}
    if flag is not None:
        item["is_uae"] = flag
    return item


def assert_same(found: Any, expected: Any) -> None:
    if isinstance(expected, torch.Tensor):
        assert isinstance(found, torch.Tensor)
        torch.testing.assert_close(found, expected, **CLOSE)
    elif isinstance(expected, dict):
        assert isinstance(found, dict) and list(found) == list(expected)
        for key in expected:
            assert_same(found[key], expected[key])
    elif isinstance(expected, (list, tuple)):
        assert isinstance(found, (list, tuple)) and len(found) == len(expected)
        for a, b in zip(found, expected):
            assert_same(a, b)
    else:
        assert found == expected


@pytest.fixture(scope="module")
def base() -> Subset:
    return Subset(load_dataset("digits"), range(N))


@pytest.fixture(scope="module")
def x(base: Subset) -> torch.Tensor:
    return torch.stack([base[i][0] for i in range(N)])


@pytest.fixture(scope="module")
def noise() -> GaussianNoise:
    return GaussianNoise(Reconstruction(tiny_autoencoder()), sigma=0.05, seed=2)


@pytest.fixture(scope="module")
def expected(noise: GaussianNoise, x: torch.Tensor) -> torch.Tensor:
    return noise(x, index=torch.arange(N)).adversarial


@pytest.fixture(scope="module")
def caches(tmp_path_factory, base, noise) -> dict[str, UAEAugmented]:
    """A concat UAEAugmented over a real HDF5 cache for each unlabelled structure."""
    folder = tmp_path_factory.mktemp("unlabelled")
    return {
        structure: UAEAugmented(
            Unlabelled(base, structure),
            noise,
            cache=folder / f"{structure}.h5",
            batch_size=16,
            progress=False,
            sample_key=sample_key(structure),
        )
        for structure in STRUCTURES
    }


# ---------------------------------------------------------------------------- UAEAugmented


def supervised() -> MinMaxAttack:
    """A supervised attack (its classifier is untrained: the label checks come first)."""
    classifier = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    return MinMaxAttack(ClassifierMargin(classifier), mode="supervised", preset="fast", steps=1)


def contrastive_mine() -> MINEUAE:
    torch.manual_seed(0)
    backbone = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    criterion = Contrastive(backbone, nn.Linear(4, 8), SimCLRViews(size=8), n_views=4)
    return MINEUAE(criterion, preset="fast", steps=2, mine_steps=1, seed=1)


UNSUPERVISED = {
    "gaussian": lambda: GaussianNoise(Reconstruction(tiny_autoencoder()), sigma=0.05, seed=2),
    "lp-uae": lambda: LpUAE(Reconstruction(tiny_autoencoder()), preset="fast", steps=2),
    "mine-reconstruction": lambda: MINEUAE(Reconstruction(tiny_autoencoder()), preset="fast", steps=2),
    "mine-contrastive": contrastive_mine,
}


@pytest.mark.parametrize("kind", sorted(UNSUPERVISED))
def test_unsupervised_attacks_augment_bare_samples(kind, base, x):
    attack = UNSUPERVISED[kind]()
    ds = UAEAugmented(Unlabelled(base, "bare"), attack, batch_size=16, progress=False).materialize()
    direct = attack(x, index=torch.arange(N)).adversarial
    assert len(ds) == 2 * N
    for i in (0, 17, N - 1):
        assert isinstance(ds[i], torch.Tensor) and torch.equal(ds[i], x[i])
        assert isinstance(ds[N + i], torch.Tensor)
        torch.testing.assert_close(ds[N + i], direct[i], **CLOSE)


@pytest.mark.parametrize("structure", STRUCTURES)
def test_every_mode_in_dataloader_workers_reads_the_hdf5_cache(structure, caches, base, x, expected, noise):
    cached = caches[structure]
    assert cached.generated and not UAECache(cached.cache_path).labelled
    dataset = cached.dataset
    key = sample_key(structure)
    configs = [
        ("concat", {"return_flag": True}),
        ("concat", {}),
        ("replace", {"p": 0.5, "seed": 3, "return_flag": True}),
        ("pair", {}),
    ]
    for mode, options in configs:
        ds = UAEAugmented(
            dataset,
            noise,
            mode=mode,
            cache=cached.cache_path,
            progress=False,
            sample_key=key,
            **options,
        )
        ds.set_epoch(1)
        n = len(ds)
        if mode == "replace":
            flags = replacement_mask(0.5, 3, range(N), epoch=1).tolist()
        else:
            flags = [i >= N for i in range(n)]
        items = []
        for i in range(n):
            b = i % N
            if mode == "pair":
                sample: Any = (x[b], expected[b])
            else:
                sample = expected[b] if flags[i] else x[b]
            items.append(documented_item(structure, b, sample, flags[i] if options.get("return_flag") else None))
        loader = DataLoader(ds, batch_size=8, num_workers=2)
        batches = list(loader)
        assert len(batches) == n // 8
        for k, batch in enumerate(batches):
            assert_same(batch, default_collate(items[8 * k : 8 * k + 8]))
        assert_same(ds[n - 1], items[n - 1])


def test_target_transform_return_flag_key_and_supervised_attacks_need_what_they_use(base, noise):
    with pytest.raises(ValueError, match="target_transform needs labels.*a bare sample"):
        UAEAugmented(Unlabelled(base, "bare"), noise, target_transform=int, progress=False)
    flagged = ListDataset([{KEY: base[0][0], "is_uae": 1}])
    with pytest.raises(ValueError, match="'is_uae'"):
        UAEAugmented(flagged, noise, return_flag=True, sample_key=KEY, progress=False)
    for structure in STRUCTURES:
        with pytest.raises(ValueError, match="MinMaxAttack needs labels, but item 0 of the base dataset has none"):
            UAEAugmented(Unlabelled(base, structure), supervised(), sample_key=sample_key(structure))


def test_malformed_items_and_sample_keys_raise_clear_errors(base, noise):
    x = base[0][0]
    cases = [
        (ListDataset([{KEY: x}]), None, r"is a dict \(keys \['image'\]\): pass sample_key"),
        (ListDataset([{"img": x}]), KEY, r"has no sample key 'image': its keys are \['img'\]"),
        (ListDataset([(x, 1)]), KEY, "sample_key='image' expects dicts, but item 0.* is a tuple"),
        (ListDataset([()]), None, "empty tuple"),
        (ListDataset(["x"]), None, "float tensor sample, a tuple .* got str"),
        (ListDataset([{KEY: x.numpy()}]), KEY, "sample of item 0 .*float tensor.*ndarray"),
    ]
    for dataset, key, message in cases:
        with pytest.raises(TypeError, match=message):
            UAEAugmented(dataset, noise, sample_key=key)


# ---------------------------------------------------------------------------- precompute / UAECache


def test_precompute_stores_no_labels_and_uae_cache_serves_bare_samples(tmp_path, base, noise, expected):
    path = precompute(
        Unlabelled(base, "bare"),
        noise,
        tmp_path / "bare.h5",
        batch_size=16,
        num_workers=2,
        chunk_rows=8,
        progress=False,
    )
    with h5py.File(path, "r") as handle:
        assert sorted(handle) == ["adversarial", "criterion", "done", "index", "mi", "success"]
    cache = UAECache(path)
    assert not cache.labelled and cache.labels is None and cache.complete
    uaes, labels = cache.rows([3, 0, 3])
    assert labels is None
    torch.testing.assert_close(uaes, expected[[3, 0, 3]], **CLOSE)
    assert isinstance(cache[5], torch.Tensor)
    torch.testing.assert_close(cache[5], expected[5], **CLOSE)
    uae, success, mi = UAECache(path, return_flags=True)[5]
    assert success == bool(cache.success[5]) and (mi == float(cache.mi[5]) or mi != mi)
    read = torch.cat(list(DataLoader(cache, batch_size=8, num_workers=2)))
    torch.testing.assert_close(read, expected, **CLOSE)
    with pytest.raises(ValueError, match="holds no labels"):
        UAECache(path, target_transform=int)

    for structure in ("tuple1", "dict"):
        other = precompute(
            Unlabelled(base, structure),
            noise,
            tmp_path / f"{structure}.h5",
            batch_size=16,
            chunk_rows=8,
            progress=False,
            sample_key=sample_key(structure),
        )
        with h5py.File(other, "r") as handle, h5py.File(path, "r") as reference:
            assert sorted(handle) == sorted(reference)
            assert (handle["adversarial"][...] == reference["adversarial"][...]).all()


def test_labelled_files_keep_their_label_dataset_and_items(tmp_path, base, noise, expected):
    path = precompute(base, noise, tmp_path / "labelled.h5", batch_size=16, progress=False)
    with h5py.File(path, "r") as handle:
        assert sorted(handle) == [
            "adversarial",
            "criterion",
            "done",
            "index",
            "label",
            "mi",
            "success",
        ]
    cache = UAECache(path)
    assert cache.labelled and cache.labels.tolist() == [base[i][1] for i in range(N)]
    uae, label = cache[7]
    torch.testing.assert_close(uae, expected[7], **CLOSE)
    assert label == base[7][1]


def test_precompute_refuses_supervised_attacks_and_mixed_labels(tmp_path, base, noise):
    with pytest.raises(ValueError, match="MinMaxAttack needs labels, but item 0 of the dataset has none"):
        precompute(Unlabelled(base, "bare"), supervised(), tmp_path / "s.h5", progress=False)
    assert not (tmp_path / "s.h5").exists()
    x = base[0][0]
    mixed = ListDataset([(x, 1), (x, 2), (x,), (x,)])
    with pytest.raises(ValueError, match="item 2 of the dataset has no label but item 0 has one"):
        precompute(mixed, noise, tmp_path / "m.h5", batch_size=4, progress=False)
    # Across batches: the file stores labels (from row 0), the second batch has none.
    with pytest.raises(ValueError, match="item 2 of the dataset has no label, but .*m2.h5 stores labels"):
        precompute(mixed, noise, tmp_path / "m2.h5", batch_size=2, progress=False)


# ---------------------------------------------------------------------------- UAETransform


def test_uae_transform_on_unlabelled_and_dict_batches_from_worker_loaders(base, noise, x):
    bare = next(iter(DataLoader(Unlabelled(base, "bare"), batch_size=16, num_workers=2)))
    index = torch.arange(16)
    expected = UAETransform(noise, p=0.5, seed=1)(x[:16], index=index)
    out = UAETransform(noise, p=0.5, seed=1)(bare, index=index)
    assert isinstance(out, torch.Tensor)
    torch.testing.assert_close(out, expected, **CLOSE)

    batch = next(iter(DataLoader(Unlabelled(base, "dict"), batch_size=16, num_workers=2)))
    replaced = UAETransform(noise, p=0.5, seed=1, sample_key=KEY)(batch, index=index)
    assert list(replaced) == [KEY, "id", "name"]
    torch.testing.assert_close(replaced[KEY], expected, **CLOSE)
    assert torch.equal(replaced["id"], index) and replaced["name"] == batch["name"]

    append = UAETransform(noise, p=0.5, seed=1, mode="append", sample_key=KEY)
    appended = append(batch, index=index)
    mask = append.last_mask
    assert mask is not None and 0 < int(mask.sum()) < 16
    rows = mask.nonzero().squeeze(1).tolist()
    torch.testing.assert_close(
        appended[KEY],
        UAETransform(noise, p=0.5, seed=1, mode="append")(x[:16], index=index),
        **CLOSE,
    )
    assert appended["id"].tolist() == list(range(16)) + rows
    assert appended["name"] == batch["name"] + [f"digit-{r}" for r in rows]


def test_uae_transform_dict_batch_errors(base, noise, x):
    batch = {KEY: x[:4], "id": torch.arange(4), "scale": 0.5}
    with pytest.raises(TypeError, match="pass sample_key"):
        UAETransform(noise)(batch)
    with pytest.raises(TypeError, match="no separate labels"):
        UAETransform(noise, sample_key=KEY)(batch, torch.arange(4))
    with pytest.raises(ValueError, match="entry 'scale' must be a tensor, list or tuple with 4 rows, got float"):
        UAETransform(noise, mode="append", sample_key=KEY)(batch)
    with pytest.raises(ValueError, match="MinMaxAttack needs labels, but the batch has none"):
        UAETransform(supervised(), sample_key=KEY)(batch)


def test_item_parser_round_trips_every_structure(x):
    sample, other = x[0], x[1]
    cases = [
        (sample, None, other, (other, True)),
        ((sample,), None, (other,), (other, True)),
        ((sample, 3), 3, (other, 3), (other, 3, True)),
        ((sample, 3, "a", 0.5), 3, (other, 3, "a", 0.5), (other, 3, "a", 0.5, True)),
        ([sample, 3], 3, (other, 3), (other, 3, True)),
    ]
    for item, label, rebuilt, flagged in cases:
        parsed = parse_item(item, 0)
        assert parsed.sample is sample and parsed.label == label
        assert_same(parsed.with_sample(other), rebuilt)
        assert_same(parsed.with_sample(other, True), flagged)
    parsed = parse_item({"id": 1, KEY: sample}, 0, sample_key=KEY)
    assert parsed.label is None
    assert_same(parsed.with_sample(other), {"id": 1, KEY: other})
    assert_same(parsed.with_sample(other, False), {"id": 1, KEY: other, "is_uae": False})
    assert parse_item(TensorDataset(x)[0], 0).kind == "tuple"


def test_unlabelled_shards_join_to_the_single_process_file(tmp_path, base, noise):
    """The sharded writer and the join (as rank 0 runs them after the barrier), in one process."""
    from uae_augment.data._cache_format import SHARD_KEY, cache_provenance, shard_path
    from uae_augment.data._cache_writer import WriteOptions, _join, write_file

    dataset = Unlabelled(base, "bare")
    path = tmp_path / "joined.h5"
    options = WriteOptions(16, True, "float32", "lzf", 0, False, 8)
    provenance = cache_provenance(dataset, noise)
    shards = [(shard_path(path, rank, 2), start, stop) for rank, (start, stop) in enumerate([(0, 16), (16, N)])]
    for rank, (shard, start, stop) in enumerate(shards):
        shard_record = {
            **provenance,
            SHARD_KEY: {"rank": rank, "world_size": 2, "start": start, "stop": stop},
        }
        write_file(dataset, noise, shard, start, stop, shard_record, options)
    _join(path, shards, provenance, options)
    single = precompute(dataset, noise, tmp_path / "single.h5", batch_size=16, chunk_rows=8, progress=False)
    with h5py.File(path, "r") as joined, h5py.File(single, "r") as reference:
        assert sorted(joined) == sorted(reference) and "label" not in joined
        for name in reference:
            np.testing.assert_array_equal(joined[name][...], reference[name][...], err_msg=name)
