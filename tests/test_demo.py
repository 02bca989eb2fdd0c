"""The demos end to end in a tiny configuration (real MNIST-5k digits, real training, real attack):
`uae-augment demo` (``make demo-attack``) and recipes/example.py (``make demo``)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch

import example
from uae_augment import UAECache
from uae_augment.demo import demo, format_summary

REPO = Path(__file__).resolve().parents[1]


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


# --------------------------------------------------------------------------- recipes/example.py (`make demo`)

EXAMPLE_TINY = [
    "--train-rows",
    "52",
    "--test-rows",
    "40",
    "--epochs",
    "1",
    "--attack-steps",
    "2",
]  # 52 rows: 1 batch; 104: 2


def _run_example(out: Path) -> int:
    """``main`` at the tiny size with its default one thread; this process's thread count is restored."""
    threads = torch.get_num_threads()
    try:
        return example.main([*EXAMPLE_TINY, "--out", str(out)])
    finally:
        torch.set_num_threads(threads)


def _example_table(printed: str) -> dict[str, list[str]]:
    """The arms of the example's table: name -> [steps, test MSE, vs control, ASR]."""
    rows = [line.strip("|").split("|") for line in printed.splitlines() if line.startswith("| ") and "---" not in line]
    return {cells[0].strip(): [cell.strip() for cell in cells[1:]] for cells in rows[1:]}


def test_example_runs_end_to_end_and_a_rerun_reuses_its_cache(tmp_path, capsys, caplog):
    caplog.set_level(logging.INFO, logger="uae_augment")
    assert _run_example(tmp_path) == 0
    first = capsys.readouterr().out
    cache = tmp_path / "mine-uae.h5"
    with UAECache(cache) as rows:
        assert len(rows) == 52 and 0.0 <= rows.asr <= 1.0
        asr = rows.asr
    assert "all 52 rows done" in caplog.text  # attacked once, by precompute; UAEAugmented reads the file

    table = _example_table(first)
    assert list(table) == ["original", "same-steps control", "MINE-UAE"]
    assert [table[arm][0] for arm in table] == [
        "1",
        "2",
        "2",
    ]  # the control runs the augmented arm's steps
    assert all(0.0 < float(table[arm][1]) < 1.0 for arm in table)
    assert table["same-steps control"][2] == "+0.0%" and table["original"][3] == "—"
    assert table["MINE-UAE"][3] == f"{asr:.1%}"
    assert 'README.md, section "Results"' in first and "## Results" in (REPO / "README.md").read_text()

    caplog.clear()
    assert _run_example(tmp_path) == 0
    assert "reusing it without attacking" in caplog.text and "rows done" not in caplog.text
    assert capsys.readouterr().out == first  # seeded: the same table twice


def test_example_rejects_an_empty_training_set(tmp_path):
    with pytest.raises(ValueError, match="rows"):
        example.main(["--train-rows", "0", "--out", str(tmp_path)])
