"""The demo end to end in a tiny configuration: real MNIST-5k digits, real training, real attack."""

from __future__ import annotations

import json

import pytest

from uae_augment.demo import demo, format_summary


def test_demo_writes_grid_and_summary(tmp_path):
    summary = demo(out=tmp_path, epochs=1, train_rows=200, samples=3, steps=2, progress=False)
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert saved["samples"] == 3 and saved["attack"]["preset"] == "fast" and saved["attack"]["steps"] == 2
    assert 0.0 <= saved["asr"] <= 1.0
    # the fast preset keeps the release's epsilon = 1, so only the box binds; delta is glorot-sized
    assert 0.0 < saved["max_linf"] <= 1.0
    assert saved["mean_abs_delta"] <= saved["mean_linf"] <= saved["max_linf"]
    png = (tmp_path / "uae_grid.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 1000
    report = format_summary(summary)
    assert "ASR" in report and "moved from delta_0" in report


def test_demo_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="samples"):
        demo(out=tmp_path, samples=0)
