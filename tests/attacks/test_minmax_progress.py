"""The MinMax attacks' progress bar: one update per iteration, automatic for direct calls,
silent under precompute / UAEAugmented, and without effect on the results."""

from __future__ import annotations

import dataclasses
import logging
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from torch.utils.data import TensorDataset

from tests.helpers import digits, digits_classifier, digits_conv_autoencoder
from uae_augment import (
    MINEUAE,
    ClassifierMargin,
    LpUAE,
    PenaltyAttack,
    Reconstruction,
    _progress,
    precompute,
)
from uae_augment.data.augmented import UAEAugmented


class RecordingBar:
    """Stands in for tqdm: records its options and every update."""

    bars: list[RecordingBar] = []

    def __init__(self, *, total: int, desc: str = "", disable: bool = False, **options: Any):
        self.total, self.desc, self.disable, self.options = total, desc, disable, options
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


def attack_bars(bars: list[RecordingBar], name: str = "MINEUAE") -> list[RecordingBar]:
    return [bar for bar in bars if bar.desc.startswith(f"{name} (")]


def estimates(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "uae_augment.attacks.base" and "in total" in r.getMessage()]


def mine_uae(**kwargs: Any) -> MINEUAE:
    return MINEUAE(Reconstruction(digits_conv_autoencoder()), preset="fast", steps=3, mine_steps=1, **kwargs)


def test_direct_call_bar_moves_once_per_iteration_of_every_chunk(bars, caplog):
    caplog.set_level(logging.INFO)
    mine_uae(batch_size=4, progress=True)(digits()[0][:9])  # chunks of 4, 4 and 1 rows
    (bar,) = attack_bars(bars)
    assert (bar.desc, bar.options["unit"], bar.disable) == (
        "MINEUAE (9 samples)",
        "iteration",
        False,
    )
    assert (bar.total, bar.updates) == (9, [1] * 9)
    (record,) = estimates(caplog)
    assert record.getMessage().startswith("MINEUAE (9 samples): about")
    assert record.getMessage().endswith("for the first 1 of 9 iterations)")


@pytest.mark.parametrize(
    "make, per_chunk",
    [
        (lambda: LpUAE(Reconstruction(digits_conv_autoencoder()), steps=4, progress=True), 4),
        (
            lambda: PenaltyAttack(
                ClassifierMargin(digits_classifier()),
                search_steps=2,
                steps=3,
                mine_steps=1,
                preset="fast",
                progress=True,
            ),
            6,
        ),
    ],
)
def test_lp_uae_and_penalty_rounds_count_their_iterations(bars, make, per_chunk):
    x, y = digits()
    attack = make()
    attack(x[:3], y[:3])
    (bar,) = attack_bars(bars, type(attack).__name__)
    assert (bar.total, bar.updates) == (per_chunk, [1] * per_chunk)


def test_automatic_bar_is_delayed_and_short_calls_log_no_estimate(bars, caplog):
    caplog.set_level(logging.INFO)
    mine_uae()(digits()[0][:2])  # progress=None: a direct call, well under a second
    (bar,) = attack_bars(bars)
    assert not bar.disable and bar.options["delay"] == _progress.AUTO_DELAY_SECONDS
    assert bar.updates == [1, 1, 1] and not estimates(caplog)


def test_automatic_estimate_is_logged_when_the_call_will_run_long(bars, caplog, monkeypatch):
    clock = iter([0.0, 10.0])  # the bar's start, then its first update: 10 s for 1 of 3 iterations
    monkeypatch.setattr(_progress, "time", SimpleNamespace(perf_counter=lambda: next(clock)))
    caplog.set_level(logging.INFO)
    mine_uae()(digits()[0][:2])
    (record,) = estimates(caplog)
    assert "about 30 s in total (10 s for the first 1 of 3 iterations)" in record.getMessage()


def test_real_bar_is_written_to_stderr_for_a_direct_call(capsys, monkeypatch):
    monkeypatch.setattr(_progress, "AUTO_DELAY_SECONDS", 0.0)
    mine_uae()(digits()[0][:2])
    err = capsys.readouterr().err
    # tqdm redraws at most every 0.1 s, so which counts show depends on the machine's speed: the
    # bar, its total and its unit do not
    assert "MINEUAE (2 samples)" in err and "/3 [" in err and "iteration/s" in err


@pytest.mark.parametrize("outer_progress", [True, False])
def test_precompute_shows_only_its_own_bar(bars, caplog, tmp_path, outer_progress):
    caplog.set_level(logging.INFO)
    x, y = digits()
    precompute(
        TensorDataset(x[:8], y[:8]),
        mine_uae(),
        tmp_path / "c.h5",
        batch_size=4,
        chunk_rows=4,
        progress=outer_progress,
    )
    (outer,) = [bar for bar in bars if bar.desc.startswith("precompute")]
    assert outer.disable is not outer_progress
    inner = attack_bars(bars)
    assert len(inner) == 2 and all(bar.disable for bar in inner)  # one per batch, hidden
    assert not estimates(caplog)


def test_uae_augmented_generation_shows_only_its_own_bar(bars, caplog):
    caplog.set_level(logging.INFO)
    x, y = digits()
    UAEAugmented(TensorDataset(x[:8], y[:8]), mine_uae(), batch_size=4).materialize()
    assert [bar.disable for bar in bars if bar.desc == "UAEAugmented"] == [False]
    assert [bar.disable for bar in attack_bars(bars)] == [True, True]
    assert not estimates(caplog)


def test_an_explicit_progress_true_still_shows_inside_precompute(bars, tmp_path):
    x, y = digits()
    precompute(
        TensorDataset(x[:4], y[:4]),
        mine_uae(progress=True),
        tmp_path / "c.h5",
        batch_size=4,
        chunk_rows=4,
        progress=False,
    )
    assert [bar.disable for bar in attack_bars(bars)] == [False]


@pytest.mark.parametrize("threads", [1, pytest.param(2, marks=pytest.mark.slow)])  # 2 threads: 60-80 s at load 13
@pytest.mark.parametrize(
    "make",
    [
        lambda progress: mine_uae(batch_size=4, progress=progress),
        lambda progress: PenaltyAttack(
            ClassifierMargin(digits_classifier()),
            search_steps=2,
            steps=3,
            mine_steps=1,
            preset="fast",
            batch_size=4,
            progress=progress,
        ),
    ],
)
def test_results_are_bitwise_equal_with_and_without_the_bar(make, threads):
    x, y = digits()
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        results = [make(progress)(x[:9], y[:9]) for progress in (True, False, None)]  # chunks of 4, 4, 1
    finally:
        torch.set_num_threads(previous)
    for other in results[1:]:
        for field in dataclasses.fields(results[0]):
            a, b = getattr(results[0], field.name), getattr(other, field.name)
            assert (a is None) == (b is None), field.name
            if a is not None:
                torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True, msg=field.name)
