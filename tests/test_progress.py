"""Progress bars move once per batch and the total-time estimate is logged after the first batch."""

from __future__ import annotations

import logging
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from torch.utils.data import Subset

from uae_augment import Attack, AttackResult, _progress, fit, load_dataset, precompute
from uae_augment.data import transforms
from uae_augment.data.augmented import UAEAugmented
from uae_augment.data.transforms import UAETransform
from uae_augment.models.autoencoders import DenseAutoencoder
from uae_augment.models.concrete import ConcreteAutoencoder
from uae_augment.training import fit_concrete


class RecordingBar:
    """Stands in for tqdm: records the total and every update."""

    bars: list[RecordingBar] = []

    def __init__(self, *, total: int, initial: int = 0, desc: str = "", disable: bool = False, **_: Any):
        self.total, self.initial, self.desc, self.disable = total, initial, desc, disable
        self.updates: list[int] = []
        RecordingBar.bars.append(self)

    def update(self, count: int) -> None:
        self.updates.append(count)

    def set_postfix(self, **_: Any) -> None:
        pass

    def close(self) -> None:
        pass


@pytest.fixture
def bars(monkeypatch) -> list[RecordingBar]:
    RecordingBar.bars = []
    monkeypatch.setattr(_progress, "tqdm", RecordingBar)
    return RecordingBar.bars


class Flip(Attack):
    """Adversarial = 1 - x, every sample succeeds; counts its chunks."""

    def models(self) -> list[torch.nn.Module]:
        return []

    def _config(self) -> dict[str, Any]:
        return {}

    def _attack_batch(self, x, y, index):
        n = len(x)
        return AttackResult(
            adversarial=1.0 - x,
            success=torch.ones(n, dtype=torch.bool),
            mi=torch.zeros(n),
            criterion=torch.zeros(n),
        )


def estimates(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if "in total" in r.getMessage()]


def test_estimate_is_logged_once_after_the_first_batch(bars, caplog):
    caplog.set_level(logging.INFO)
    with _progress.Progress(10, "job", unit="row") as bar:
        assert not estimates(caplog)
        bar.update(4)
        assert len(estimates(caplog)) == 1 and estimates(caplog)[0].levelno == logging.INFO
        assert "for the first 4 of 10 rows" in estimates(caplog)[0].getMessage()
        bar.update(4)
        bar.update(2)
    assert len(estimates(caplog)) == 1
    assert bars[0].total == 10 and bars[0].updates == [4, 4, 2]


def test_no_estimate_when_one_batch_does_all_or_progress_is_off(bars, caplog):
    caplog.set_level(logging.INFO)
    with _progress.Progress(10, "job", unit="row") as bar:
        bar.update(10)
    with _progress.Progress(10, "job", unit="row", enabled=False) as bar:
        bar.update(1)
    assert not estimates(caplog) and bars[1].disable


@pytest.mark.parametrize("preset", ["paper", "fast"])
def test_long_estimates_warn_and_the_paper_preset_gets_a_hint(bars, caplog, monkeypatch, preset):
    clock = iter([0.0, 100.0])  # construction, then the first batch: 100 s for 1 of 100 rows
    monkeypatch.setattr(_progress, "time", SimpleNamespace(perf_counter=lambda: next(clock)))
    caplog.set_level(logging.INFO)
    with _progress.Progress(100, "precompute", unit="row", preset=preset) as bar:
        bar.update(1)
    (record,) = estimates(caplog)
    assert record.levelno == logging.WARNING
    assert "about 2 h 47 min in total" in record.getMessage()
    assert ("preset='fast'" in record.getMessage()) is (preset == "paper")


def test_estimate_resumes_count_only_the_rows_this_run_does(bars, caplog, monkeypatch):
    clock = iter([0.0, 10.0])
    monkeypatch.setattr(_progress, "time", SimpleNamespace(perf_counter=lambda: next(clock)))
    caplog.set_level(logging.INFO)
    with _progress.Progress(100, "job", unit="row", initial=90) as bar:
        bar.update(5)
    assert "about 20 s in total (10 s for the first 5 of 10 rows)" in estimates(caplog)[0].getMessage()


def test_format_seconds():
    assert [_progress.format_seconds(s) for s in (3.21, 42, 125, 3900)] == [
        "3.2 s",
        "42 s",
        "2 min",
        "1 h 05 min",
    ]


def test_attack_bar_moves_per_chunk_and_logs_the_estimate(bars, caplog):
    caplog.set_level(logging.INFO)
    Flip(batch_size=4, progress=True)(torch.rand(10, 1, 2, 2))
    assert (bars[0].total, bars[0].updates) == (10, [4, 4, 2])
    assert [r.name for r in estimates(caplog)] == ["uae_augment.attacks.base"]


def test_precompute_bar_counts_saved_rows_per_batch(bars, caplog, tmp_path):
    caplog.set_level(logging.INFO)
    rows = Subset(load_dataset("digits"), range(12))
    precompute(rows, Flip(), tmp_path / "c.h5", batch_size=4, chunk_rows=4, progress=True)
    (bar,) = [b for b in bars if b.desc.startswith("precompute")]
    assert (bar.total, bar.updates) == (12, [4, 4, 4])
    assert any(r.getMessage().startswith("precompute c.h5 (rows saved): about") for r in estimates(caplog))


def test_uae_augmented_cache_build_shows_the_precompute_bar(bars, tmp_path):
    rows = Subset(load_dataset("digits"), range(12))
    UAEAugmented(rows, Flip(), cache=tmp_path / "c.h5", batch_size=4)
    (bar,) = [b for b in bars if b.desc.startswith("precompute")]
    assert (bar.total, bar.updates, bar.disable) == (12, [4, 4, 4], False)


def test_uae_augmented_generation_bar_moves_per_batch(bars, caplog):
    caplog.set_level(logging.INFO)
    rows = Subset(load_dataset("digits"), range(10))
    UAEAugmented(rows, Flip(), batch_size=4).materialize()
    (bar,) = [b for b in bars if b.desc == "UAEAugmented"]
    assert (bar.total, bar.updates) == (10, [4, 4, 2])
    assert any(r.getMessage().startswith("UAEAugmented: about") for r in estimates(caplog))


def test_fit_bar_moves_per_step_and_logs_the_estimate(bars, caplog):
    caplog.set_level(logging.INFO)
    torch.manual_seed(0)
    fit(DenseAutoencoder((1, 4, 4), hidden=8), torch.rand(20, 1, 4, 4), epochs=2, batch_size=8)
    (bar,) = [b for b in bars if b.desc.startswith("fit")]
    assert (bar.total, bar.updates) == (6, [1] * 6)
    assert len([r for r in estimates(caplog) if r.getMessage().startswith("fit")]) == 1


def test_fit_concrete_logs_every_retry_with_its_reason_and_epochs(bars, caplog):
    caplog.set_level(logging.INFO)
    fitted = fit_concrete(
        lambda: ConcreteAutoencoder((1, 4, 4), k=2, hidden=(8,)),
        torch.rand(16, 1, 4, 4),
        epochs=1,
        tries=3,
        target=1.0,
        batch_size=8,
    )
    assert fitted.epochs == [1, 2, 4]
    retries = [r.getMessage() for r in caplog.records if "did not converge" in r.getMessage()]
    assert len(retries) == 2
    assert "try 1/3 did not converge" in retries[0] and "with 2 epochs" in retries[0]
    assert "try 2/3 did not converge" in retries[1] and "with 4 epochs" in retries[1]


@pytest.mark.parametrize("seconds, level", [(1.0, logging.DEBUG), (21.0, logging.INFO)])
def test_uae_transform_logs_the_time_of_a_slow_call(monkeypatch, caplog, seconds, level):
    clock = iter([0.0, seconds])
    monkeypatch.setattr(transforms, "time", SimpleNamespace(perf_counter=lambda: next(clock)))
    caplog.set_level(logging.DEBUG, logger="uae_augment.data.transforms")
    UAETransform(Flip(), p=1.0)(torch.rand(4, 1, 2, 2))
    (record,) = [r for r in caplog.records if r.name == "uae_augment.data.transforms"]
    assert record.levelno == level
    assert record.getMessage().endswith(f"attacked 4 of 4 samples, ASR 1.0000, in {_progress.format_seconds(seconds)}")
