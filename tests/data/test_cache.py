"""The HDF5 cache: rows equal direct generation, workers, kill -9 and resume, provenance,
damaged files, locks, and the sharded (torchrun) path.

Everything runs for real: HDF5 files in tmp_path, DataLoader worker processes,
writer subprocesses killed with SIGKILL, and 2-process torchrun groups (gloo).
Expected rows are recomputed independently by calling the attack directly.
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from tests.data._precompute_worker import digits_rows, make_attack
from uae_augment import UAEAugmented, _progress
from uae_augment._names import PRECOMPUTE_BATCH_SIZE
from uae_augment.attacks.base import padding_rows
from uae_augment.data import _distributed
from uae_augment.data._cache_writer import GridBatches, whole_batches
from uae_augment.data.cache import (
    CHUNK_BYTES,
    CacheError,
    CacheLockedError,
    ProvenanceMismatchError,
    UAECache,
    cache_provenance,
    precompute,
    provenance_hash,
    shard_path,
)

REPO = Path(__file__).resolve().parents[2]
WORKER = REPO / "tests" / "data" / "_precompute_worker.py"
DONE_MARKER = "written and marked done"
# Scripts run with their own folder first on sys.path: make them import this checkout's uae_augment.
WORKER_ENV = {
    **os.environ,
    "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
}


def stacked(dataset) -> tuple[torch.Tensor, torch.Tensor]:
    items = [dataset[i] for i in range(len(dataset))]
    return torch.stack([x for x, _ in items]), torch.tensor([y for _, y in items])


def file_arrays(path: Path) -> dict[str, np.ndarray]:
    with h5py.File(path, "r") as handle:
        return {name: handle[name][...] for name in handle}


def assert_same_rows(first: Path, second: Path) -> None:
    a, b = file_arrays(first), file_arrays(second)
    assert sorted(a) == sorted(b)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def fresh_attack_counter(attack) -> list[int]:
    """Records the global indices the attack is asked for (the attack config stays the same).

    A chunk padded to a multiple of the evaluation block repeats its last index; the repeats
    are padding, not rows asked for, and are not recorded.
    """
    seen: list[int] = []
    original = attack._attack_batch

    def recording(x, y, index):
        seen.extend(index[~padding_rows(index)].tolist())
        return original(x, y, index)

    attack._attack_batch = recording
    return seen


def run_script(args: list[str], timeout_s: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args],
        cwd=REPO,
        env=WORKER_ENV,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )


def torchrun(args: list[str], timeout_s: float = 180) -> subprocess.CompletedProcess:
    return run_script(["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *args], timeout_s)


@pytest.fixture(scope="module")
def rows300():
    return digits_rows(300)


@pytest.fixture(scope="module")
def gaussian_cache(tmp_path_factory, rows300) -> Path:
    path = tmp_path_factory.mktemp("cache") / "gaussian.h5"
    return precompute(rows300, make_attack("gaussian"), path, batch_size=50, chunk_rows=16, progress=False)


# --------------------------------------------------------------------------- contents


@pytest.mark.parametrize("num_workers", [0, 2])
def test_rows_equal_direct_generation(gaussian_cache, rows300, tmp_path, num_workers):
    x, y = stacked(rows300)
    expected = make_attack("gaussian")(x, index=torch.arange(len(x)))
    path = gaussian_cache
    if num_workers:
        path = precompute(
            rows300,
            make_attack("gaussian"),
            tmp_path / "w.h5",
            batch_size=37,
            num_workers=num_workers,
            progress=False,
        )
    arrays = file_arrays(path)
    torch.testing.assert_close(torch.from_numpy(arrays["adversarial"]), expected.adversarial, rtol=0, atol=0)
    np.testing.assert_array_equal(arrays["success"], expected.success.numpy())
    np.testing.assert_array_equal(arrays["criterion"], expected.criterion.numpy())
    assert np.isnan(arrays["mi"]).all()
    np.testing.assert_array_equal(arrays["label"], y.numpy())
    np.testing.assert_array_equal(arrays["index"], np.arange(300))
    assert arrays["done"].all()

    cache = UAECache(path, return_flags=True)
    assert len(cache) == cache.done == 300 and cache.complete
    assert cache.asr == pytest.approx(expected.asr)
    uae, label, success, mi = cache[7]
    assert torch.equal(uae, expected.adversarial[7]) and label == int(y[7])
    assert success == bool(expected.success[7]) and np.isnan(mi)


def test_precompute_creates_missing_parent_folders(rows300, tmp_path):
    path = tmp_path / "not" / "yet" / "there.h5"
    assert precompute(digits_rows(8), make_attack("gaussian"), path, progress=False) == path
    assert UAECache(path).complete


def test_batches_sit_on_one_global_grid():
    # Rows still to do (global indices) are batched by index // batch_size, whatever is done.
    batches = GridBatches(np.array([0, 1, 5, 6, 7, 9]), 4)
    assert len(batches) == 3 and list(batches) == [[0, 1], [2, 3, 4], [5]]
    assert _distributed.split(300, 0, 2, unit=64) == (0, 192)
    assert _distributed.split(300, 1, 2, unit=64) == (192, 300)
    assert _distributed.split(5, 3, 4) == (4, 5) and _distributed.split(2, 3, 4) == (2, 2)


def test_mine_uae_rows_do_not_depend_on_batching(tmp_path):
    rows = digits_rows(24)
    x, _ = stacked(rows)
    expected = make_attack("mine")(x, index=torch.arange(24))
    path = precompute(rows, make_attack("mine"), tmp_path / "mine.h5", batch_size=10, chunk_rows=4, progress=False)
    cache = UAECache(path)
    adversarial, _ = cache.rows(range(24))
    torch.testing.assert_close(adversarial, expected.adversarial, rtol=0, atol=0)
    np.testing.assert_array_equal(cache.mi.numpy(), expected.mi.numpy())
    np.testing.assert_array_equal(cache.success.numpy(), expected.success.numpy())
    assert cache.mi_summary["count"] == 24
    assert cache.mi_summary["mean"] == pytest.approx(float(expected.mi.double().mean()))


@pytest.mark.parametrize(("dtype", "compression"), [("float16", "gzip"), ("float32", None)])
def test_dtype_and_compression(tmp_path, rows300, dtype, compression):
    path = precompute(
        rows300,
        make_attack("gaussian"),
        tmp_path / "c.h5",
        dtype=dtype,
        compression=compression,
        progress=False,
    )
    x, _ = stacked(rows300)
    expected = make_attack("gaussian")(x, index=torch.arange(300)).adversarial
    with h5py.File(path, "r") as handle:
        stored = handle["adversarial"]
        assert stored.dtype == np.dtype(dtype) and stored.compression == compression
        assert stored.shuffle == (compression == "gzip")
        assert stored.chunks[1:] == (1, 8, 8)
        # about CHUNK_BYTES, at most one batch (default PRECOMPUTE_BATCH_SIZE rows): every batch saves its rows
        assert stored.chunks[0] == min(300, CHUNK_BYTES // (64 * np.dtype(dtype).itemsize), PRECOMPUTE_BATCH_SIZE)
    cache = UAECache(path)
    assert cache.dtype == dtype
    uae, _ = cache.rows(range(300))
    assert uae.dtype == torch.float32
    torch.testing.assert_close(uae, expected.to(getattr(torch, dtype)).float(), rtol=0, atol=0)
    assert json.loads(h5py.File(path, "r").attrs["provenance"])["dtype"] == dtype


# Default: all rows preloaded; preload=False: filled as rows are touched; 4 KiB: an LRU of
# chunks (the file does not fit); 0: every read goes to the file.
@pytest.mark.parametrize(
    "options",
    [{}, {"preload": False}, {"cache_bytes": 4096}, {"cache_bytes": 0}],
    ids=["preloaded", "lazy", "lru", "uncached"],
)
def test_batched_reads_match_item_reads(gaussian_cache, rows300, options):
    cache = UAECache(gaussian_cache, return_flags=True, **options)
    x, _ = stacked(rows300)
    expected = make_attack("gaussian")(x, index=torch.arange(300)).adversarial
    every, _ = cache.rows(torch.randperm(300, generator=torch.Generator().manual_seed(0)))
    assert torch.equal(torch.sort(every.flatten(1), dim=0).values, torch.sort(expected.flatten(1), dim=0).values)
    order = [299, 5, 17, 5, 0, 16, 15, -1]
    items = cache.__getitems__(order)
    for index, item in zip(order, items):
        single = cache[index]
        assert torch.equal(item[0], single[0])
        np.testing.assert_equal(item[1:], single[1:])  # (label, success, mi); mi is NaN here
    adversarial, labels = cache.rows(torch.tensor(order))
    assert torch.equal(adversarial, torch.stack([it[0] for it in items]))
    assert torch.equal(adversarial, expected[order])
    assert labels.tolist() == [it[1] for it in items]
    with pytest.raises(IndexError):
        cache[300]
    with pytest.raises(IndexError):
        cache.rows([0, 301])


def test_transforms_repr_and_summary(gaussian_cache):
    cache = UAECache(gaussian_cache, transform=lambda t: t * 2, target_transform=lambda y: y + 100)
    uae, label = cache[3]
    raw, raw_labels = UAECache(gaussian_cache).rows([3])
    assert torch.equal(uae, raw[0] * 2) and label == int(raw_labels[0]) + 100
    text = repr(cache)
    assert str(gaussian_cache) in text and "rows=300" in text and "done=300" in text
    assert "GaussianNoise" in text
    summary = cache.summary(bins=5)
    assert summary["done"] == 300 and summary["coverage"] == 1.0
    assert summary["asr"] == pytest.approx(float(cache.success.double().mean()))
    criterion = cache.criterion
    assert summary["criterion"]["zero_fraction"] == pytest.approx(float((criterion == 0).double().mean()))
    assert sum(summary["criterion"]["histogram_of_positive"]["counts"]) == int((criterion > 0).sum())
    assert summary["mi"]["count"] == 0  # Gaussian noise has no MINE estimate
    assert cache.provenance["attack"]["attack"] == "GaussianNoise"
    json.dumps(summary)


def test_dataloader_workers_read_the_same_data(gaussian_cache):
    cache = UAECache(gaussian_cache, return_flags=True, preload=False)
    cache.rows([0])  # the parent has an open handle and some rows before the workers fork
    restored = pickle.loads(pickle.dumps(cache))
    assert torch.equal(restored[11][0], cache[11][0])

    def collect(num_workers: int, shuffle: bool) -> list[torch.Tensor]:
        generator = torch.Generator().manual_seed(3)
        loader = DataLoader(cache, batch_size=32, num_workers=num_workers, shuffle=shuffle, generator=generator)
        batches = list(loader)
        return [torch.cat([b[k].reshape(len(b[k]), -1).double() for b in batches]) for k in range(4)]

    for shuffle in (False, True):
        serial, parallel = collect(0, shuffle), collect(2, shuffle)
        for a, b in zip(serial, parallel):
            torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True)
    cache.preload()  # forked workers now share the parent's rows
    for a, b in zip(collect(0, True), collect(2, True)):
        torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True)
    labels = collect(2, False)[1].long().flatten()
    assert torch.equal(labels, cache.labels)


# --------------------------------------------------------------------------- resume and reuse


def test_kill_minus_nine_then_resume_equals_uninterrupted_run(tmp_path, caplog):
    path = tmp_path / "killed.h5"
    writer = subprocess.Popen(
        [
            sys.executable,
            str(WORKER),
            "--out",
            str(path),
            "--limit",
            "600",
            "--batch-size",
            "8",
            "--chunk-rows",
            "8",
            "--delay",
            "0.005",
        ],
        cwd=REPO,
        env=WORKER_ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        marks = 0
        deadline = time.monotonic() + 60
        while marks < 4 and time.monotonic() < deadline:
            line = writer.stderr.readline()
            assert line or writer.poll() is None, "the writer ended before it wrote anything"
            marks += DONE_MARKER in line
        assert marks >= 4 and writer.poll() is None
        # A second writer is refused while the first one is alive.
        with pytest.raises(CacheLockedError, match=f"pid {writer.pid}"):
            precompute(digits_rows(600), make_attack("gaussian"), path, progress=False)
        writer.send_signal(signal.SIGKILL)
        writer.wait(timeout=30)
    finally:
        writer.kill()
        writer.stderr.close()
    assert writer.returncode == -signal.SIGKILL

    lock = path.with_name(path.name + ".lock")
    assert json.loads(lock.read_text())["pid"] == writer.pid  # left behind by the killed writer
    with h5py.File(path, "r") as handle:
        done_before = handle["done"][...]
    assert 0 < done_before.sum() < 600

    with pytest.raises(CacheError, match="unfinished"):
        UAECache(path)
    partial = UAECache(path, allow_partial=True)
    first_done, first_todo = (
        int(np.flatnonzero(done_before)[0]),
        int(np.flatnonzero(~done_before)[0]),
    )
    assert partial.done == int(done_before.sum())
    partial[first_done]
    with pytest.raises(CacheError, match="not done"):
        partial[first_todo]
    partial.close()  # HDF5 refuses to open a file for writing that this process has open

    attack = make_attack("gaussian")
    attacked = fresh_attack_counter(attack)
    with caplog.at_level("WARNING", logger="uae_augment"):
        precompute(digits_rows(600), attack, path, batch_size=64, progress=False)
    assert "took over the stale lock" in caplog.text
    assert "started with batch_size=8, resumed with batch_size=64" in caplog.text
    assert not lock.exists()
    # The rows not done, with the done rows of their (64-row) grid batches.
    assert sorted(attacked) == whole_batches(np.flatnonzero(~done_before), 0, 600, 64).tolist()
    assert set(np.flatnonzero(~done_before)) <= set(attacked)

    uninterrupted = precompute(digits_rows(600), make_attack("gaussian"), tmp_path / "straight.h5", progress=False)
    assert_same_rows(path, uninterrupted)


def run_until_killed(path: Path, *args: str) -> np.ndarray:
    """Runs the worker script until it SIGKILLs itself (``--kill-at``); returns the file's done mask."""
    writer = run_script([str(WORKER), "--out", str(path), *args])
    assert writer.returncode == -signal.SIGKILL, writer.stderr[-3000:]
    with h5py.File(path, "r") as handle:
        return handle["done"][...]


def test_resume_after_a_kill_mid_batch_is_bitwise_the_uninterrupted_run(tmp_path):
    # Batches of 12 rows, chunks of 8: killed while reading row 40 (batch 36..47), batches 0..2 were
    # attacked but only chunks 0..3 (rows 0..31) saved, so batch 24..35 was cut at row 32. Every row of
    # BatchMeanNoise depends on its whole batch: attacking rows 32..35 alone would change them.
    path = tmp_path / "cut.h5"
    options = ["--attack", "batchmean", "--limit", "120", "--batch-size", "12", "--chunk-rows", "8"]
    done = run_until_killed(path, *options, "--kill-at", "40")
    assert np.flatnonzero(done).tolist() == list(range(32))
    attack = make_attack("batchmean")
    attacked = fresh_attack_counter(attack)
    precompute(digits_rows(120), attack, path, batch_size=12, chunk_rows=8, progress=False)
    straight = precompute(
        digits_rows(120),
        make_attack("batchmean"),
        tmp_path / "straight.h5",
        batch_size=12,
        chunk_rows=8,
        progress=False,
    )
    assert_same_rows(path, straight)
    assert attacked == list(range(24, 120))  # the cut batch from its start; rows 24..31 are not rewritten


def test_whole_batches_extends_rows_to_their_grid_batches():
    assert whole_batches(np.array([5, 6, 13]), 0, 20, 4).tolist() == [4, 5, 6, 7, 12, 13, 14, 15]
    assert whole_batches(np.array([17, 18]), 10, 18 + 1, 8).tolist() == [
        16,
        17,
        18,
    ]  # clipped to [start, stop)
    assert whole_batches(np.array([], dtype=np.int64), 0, 20, 4).size == 0


def test_progress_counts_rows_saved_not_rows_attacked(tmp_path, monkeypatch):
    positions: list[int] = []

    class RecordingBar:
        def __init__(self, *, initial: int = 0, desc: str = "", **_: object):
            self.n = initial
            self.mine = desc.startswith("precompute")  # not the attack's own (disabled) bar

        def update(self, n: int) -> None:
            self.n += n
            if self.mine:
                positions.append(self.n)

        def close(self) -> None:
            pass

    monkeypatch.setattr(_progress, "tqdm", RecordingBar)
    precompute(digits_rows(48), make_attack(), tmp_path / "bar.h5", batch_size=12, chunk_rows=8)
    # After batch k (rows up to 12k+11) the saved rows are the complete 8-row chunks, not 12(k+1).
    assert positions == [8, 24, 32, 48]


def test_finished_file_is_reused_without_attacking(gaussian_cache, rows300):
    before = gaussian_cache.stat().st_mtime_ns
    attack = make_attack("gaussian")
    attacked = fresh_attack_counter(attack)
    assert precompute(rows300, attack, gaussian_cache, progress=False) == gaussian_cache
    assert attacked == [] and gaussian_cache.stat().st_mtime_ns == before


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"seed": 1}, "seed"),
        ({"sigma": 0.02}, "attack.sigma"),
        ({"model_seed": 1}, "model_state_hash"),
        ({"dtype": "float16"}, "dtype"),
        ({"limit": 299}, "dataset.length"),
    ],
)
def test_stale_provenance_is_refused(tmp_path, rows300, change, field):
    path = precompute(rows300, make_attack("gaussian"), tmp_path / "p.h5", progress=False)
    limit = change.pop("limit", 300)
    dtype = change.pop("dtype", "float32")
    other = make_attack("gaussian", **change)
    with pytest.raises(ProvenanceMismatchError, match=field.replace(".", r"\.")) as raised:
        precompute(digits_rows(limit), other, path, dtype=dtype, progress=False)
    assert str(path) in str(raised.value) and "resume=False" in str(raised.value)
    # resume=False overwrites the file with the new configuration.
    precompute(digits_rows(limit), other, path, dtype=dtype, resume=False, progress=False)
    cache = UAECache(path)
    assert provenance_hash(cache.provenance) == provenance_hash(cache_provenance(digits_rows(limit), other, dtype))


def test_same_rows_in_another_dataset_order_is_refused(tmp_path, rows300):
    path = precompute(rows300, make_attack("gaussian"), tmp_path / "p.h5", progress=False)
    shuffled = torch.utils.data.Subset(digits_rows(), list(range(299, -1, -1)))
    with pytest.raises(ProvenanceMismatchError, match=r"dataset\.sha256"):
        precompute(shuffled, make_attack("gaussian"), path, progress=False)


class ChangedRows(torch.utils.data.Dataset):
    """``base`` with some rows' sample, label or extra changed; items (x, y, extra) with ``extra=True``."""

    def __init__(self, base, rows=(), *, sample=False, label=False, extra=False, with_extra=False):
        self.base, self.rows = base, set(rows)
        self.sample, self.label, self.extra, self.with_extra = sample, label, extra, with_extra

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int):
        x, y = self.base[index]
        changed = index in self.rows
        if changed and self.sample:
            x = x.flip(-1)
        if changed and self.label:
            y = (y + 1) % 10
        if not self.with_extra:
            return x, y
        return x, y, {"weight": torch.tensor([0.5 if changed and self.extra else 1.0])}


# The rows the former 64-row sample never hashed: 12 rows hashed 0..2, 40 rows 0..24, 100 rows skipped row 1.
@pytest.mark.parametrize(("rows", "changed"), [(12, 11), (40, 35), (100, 1)])
@pytest.mark.parametrize("field", ["sample", "label", "extra"])
def test_a_change_to_any_row_is_refused_naming_the_field_and_row(tmp_path, rows, changed, field):
    path = tmp_path / "f.h5"
    precompute(ChangedRows(digits_rows(rows), with_extra=True), make_attack(), path, progress=False)
    other = ChangedRows(digits_rows(rows), [changed], with_extra=True, **{field: True})
    name = {"sample": "sample", "label": "label", "extra": "extra[0]"}[field]
    with pytest.raises(ProvenanceMismatchError) as raised:
        precompute(other, make_attack(), path, progress=False)
    message = str(raised.value)
    assert f"dataset.sha256.{name} (the data set's {name} changed, first at row {changed})" in message
    assert message.count("dataset.sha256.") == 1  # only the changed field is named


def test_changed_rows_are_refused_by_uae_augmented_and_located_in_large_sets(tmp_path):
    # The reported case: 40 digits cached, rows 30..39 replaced (images and labels), reopened.
    path = tmp_path / "fp.h5"
    UAEAugmented(digits_rows(40), make_attack(), cache=path, progress=False)
    replaced = ChangedRows(digits_rows(40), range(30, 40), sample=True, label=True)
    with pytest.raises(
        ProvenanceMismatchError,
        match=r"label changed, first at row 30\).*sample changed, first at row 30",
    ):
        UAEAugmented(replaced, make_attack(), cache=path, progress=False)
    # 1437 rows: blocks of 12 rows, the first differing block is named.
    fingerprint = cache_provenance(digits_rows(), make_attack())["dataset"]
    assert fingerprint["block_rows"] == 12 and len(fingerprint["blocks"]["sample"]) == 120
    large = tmp_path / "large.h5"
    precompute(digits_rows(), make_attack(), large, progress=False)
    with pytest.raises(ProvenanceMismatchError, match=r"sample changed, first at rows 996\.\.1007\)"):
        precompute(
            ChangedRows(digits_rows(), [1000, 1400], sample=True),
            make_attack(),
            large,
            progress=False,
        )


def test_dataset_name_and_split_are_recorded_but_not_compared(tmp_path, rows300, gaussian_cache):
    provenance = UAECache(gaussian_cache).provenance
    assert provenance["dataset_origin"] == {"name": "digits", "split": "train", "subset": True}
    assert provenance["dataset"]["rows_hashed"] == 300
    # The same rows without a name (a plain wrapper) are the same data: the file is reused as it is.
    attack = make_attack("gaussian")
    attacked = fresh_attack_counter(attack)
    assert precompute(ChangedRows(rows300), attack, gaussian_cache, progress=False) == gaussian_cache
    assert attacked == []
    assert "dataset_origin" not in cache_provenance(ChangedRows(rows300), attack)


# --------------------------------------------------------------------------- damaged files


def test_truncated_file_gives_cache_error_naming_the_path(tmp_path, rows300):
    path = precompute(rows300, make_attack("gaussian"), tmp_path / "t.h5", progress=False)
    with open(path, "r+b") as handle:
        handle.truncate(path.stat().st_size // 2)
    with pytest.raises(CacheError, match=str(path)):
        UAECache(path)
    with pytest.raises(CacheError, match="resume=False"):
        precompute(rows300, make_attack("gaussian"), path, progress=False)
    precompute(rows300, make_attack("gaussian"), path, resume=False, progress=False)
    assert UAECache(path).complete


def test_garbage_and_foreign_files_give_cache_errors(tmp_path, gaussian_cache):
    garbage = tmp_path / "garbage.h5"
    garbage.write_bytes(os.urandom(4096))
    with pytest.raises(CacheError, match=str(garbage)):
        UAECache(garbage)
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as handle:
        handle["x"] = np.zeros(3)
    with pytest.raises(CacheError, match="not a uae-augment cache"):
        UAECache(foreign)
    gutted = tmp_path / "gutted.h5"
    gutted.write_bytes(gaussian_cache.read_bytes())
    with h5py.File(gutted, "r+") as handle:
        del handle["mi"]
    with pytest.raises(CacheError, match=r"missing datasets \['mi'\]"):
        UAECache(gutted)
    with pytest.raises(FileNotFoundError, match="precompute"):
        UAECache(tmp_path / "absent.h5")


def test_bad_arguments(tmp_path, rows300):
    with pytest.raises(TypeError, match="Attack"):
        precompute(rows300, object(), tmp_path / "a.h5")
    with pytest.raises(ValueError, match="never uint8"):
        precompute(rows300, make_attack(), tmp_path / "a.h5", dtype="uint8")
    with pytest.raises(ValueError, match="compression"):
        precompute(rows300, make_attack(), tmp_path / "a.h5", compression="zstd")
    with pytest.raises(ValueError, match="empty"):
        precompute(torch.utils.data.Subset(rows300, []), make_attack(), tmp_path / "a.h5")
    keyed = [{"image": torch.rand(1, 8, 8)}] * 4  # dict items need sample_key (tests/data/test_unlabelled.py)
    with pytest.raises(TypeError, match="pass sample_key"):
        precompute(keyed, make_attack(), tmp_path / "a.h5")


# --------------------------------------------------------------------------- locks


def write_lock(path: Path, pid: int, host: str | None = None) -> Path:
    lock = path.with_name(path.name + ".lock")
    lock.write_text(json.dumps({"pid": pid, "host": host or socket.gethostname(), "token": "t"}))
    return lock


def test_lock_of_a_live_process_stops_a_second_writer(tmp_path, rows300):
    path = tmp_path / "l.h5"
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lock = write_lock(path, sleeper.pid)
        with pytest.raises(CacheLockedError, match=f"pid {sleeper.pid}") as raised:
            precompute(rows300, make_attack(), path, progress=False)
        assert str(lock) in str(raised.value)
        assert lock.exists() and not path.exists()
    finally:
        sleeper.kill()
        sleeper.wait()
    write_lock(path, 1234, host="another-host.example")
    with pytest.raises(CacheLockedError, match="another-host.example"):
        precompute(rows300, make_attack(), path, progress=False)


def test_stale_lock_of_a_dead_process_is_taken_over(tmp_path, rows300, caplog):
    path = tmp_path / "s.h5"
    finished = subprocess.Popen([sys.executable, "-c", "pass"])
    finished.wait()
    lock = write_lock(path, finished.pid)
    with caplog.at_level("WARNING", logger="uae_augment"):
        precompute(rows300, make_attack(), path, progress=False)
    assert f"pid {finished.pid}" in caplog.text
    assert not lock.exists() and UAECache(path).complete


# --------------------------------------------------------------------------- torchrun


@pytest.mark.slow  # two torchrun launches (~20-40 s); tests/test_cli.py runs one by default
def test_torchrun_shards_fail_together_resume_and_join_to_the_single_process_result(tmp_path, rows300):
    path = tmp_path / "dist.h5"
    common = [
        str(WORKER),
        "--distributed",
        "--out",
        str(path),
        "--limit",
        "300",
        "--chunk-rows",
        "16",
    ]
    # Ranks take whole batches of 64 rows: rank 0 rows 0..191, rank 1 rows 192..299.
    # Rank 1 fails at row 291 (its second batch; the failure is injected into the read for attacking,
    # after the fingerprint's read): every rank stops with an error, none hangs.
    failed = torchrun([*common, "--fail-at", "291"])
    assert failed.returncode != 0
    assert "ERROR RuntimeError: injected failure at row 291" in failed.stdout  # rank 1
    assert "ERROR RankFailedError: attacking the rows of the shards" in failed.stdout  # rank 0
    assert "failed on rank 1: RuntimeError: injected failure at row 291" in failed.stdout
    shards = [shard_path(path, r, 2) for r in range(2)]
    assert all(s.exists() for s in shards) and not path.exists()
    assert UAECache(shards[0]).complete
    partial = UAECache(shards[1], allow_partial=True)
    assert 0 < partial.done < 108 and len(partial) == 108 and partial.indices[0] == 192

    resumed = torchrun(common)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert resumed.stdout.count(f"RESULT {path}") == 2  # every rank returns the final path
    assert "rank0-of-2.h5 is finished and matches: reusing it" in resumed.stderr
    assert f"resuming {shards[1]}: {partial.done} of 108 rows done" in resumed.stderr
    assert not any(s.exists() for s in shards)
    assert not list(tmp_path.glob("*.lock")) and not list(tmp_path.glob(".*"))

    single = precompute(rows300, make_attack("gaussian"), tmp_path / "single.h5", chunk_rows=16, progress=False)
    assert_same_rows(path, single)
    assert UAECache(path).provenance["dataset"] == UAECache(single).provenance["dataset"]
    assert "shard" not in UAECache(path).provenance


def test_throughput_benchmark_runs_and_reports_consistent_json(tmp_path):
    out = tmp_path / "bench.json"
    done = run_script(
        [
            str(REPO / "benchmarks" / "cache_throughput.py"),
            "--rows",
            "600",
            "--epochs",
            "1",
            "--workers",
            "0",
            "--no-extras",
            "--out",
            str(out),
        ]
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert json.loads(done.stdout) == result
    assert {(s["dtype"], s["compression"]) for s in result["storage"]} == {
        (d, c) for d in ("float32", "float16") for c in ("lzf", "gzip", "none")
    }
    sizes = {(s["dtype"], s["compression"]): s["bytes_per_sample"] for s in result["storage"]}
    assert sizes[("float16", "none")] < sizes[("float32", "none")]
    assert sizes[("float32", "lzf")] < sizes[("float32", "none")]
    names = [(r["name"], r["num_workers"]) for r in result["reads"]]
    assert names == [("in_memory_TensorDataset", 0), ("UAECache_float32_lzf", 0)]
    cache_row = result["reads"][1]
    assert cache_row["ratio_vs_in_memory"] == pytest.approx(
        cache_row["median_samples_per_s"] / result["reads"][0]["median_samples_per_s"], rel=1e-2
    )
    assert result["goal"]["ratio"] is None  # no 2-worker row in this run
