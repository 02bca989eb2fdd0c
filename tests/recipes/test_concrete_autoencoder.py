"""recipes/concrete_autoencoder.py end to end on tiny configurations (MNIST-5k, Mice Protein)."""

from __future__ import annotations

import contextlib
import io
import math
import subprocess
from pathlib import Path

import pytest
import torch
from sklearn.ensemble import ExtraTreesClassifier

import _protocol
import _report
import concrete_autoencoder as recipe
from uae_augment import UAECache, load_dataset
from uae_augment.models import build_model
from uae_augment.statistics import paired_difference

from .helpers import PYTHON, REPO, assert_png, finite, read_results, table_rows

TRAIN_ROWS, TEST_ROWS = 48, 60
TINY = [
    "--quick",
    "--train-rows",
    str(TRAIN_ROWS),
    "--test-rows",
    str(TEST_ROWS),
    "--epochs",
    "1",
    "--tries",
    "1",
    "--attack-steps",
    "2",
    "--projections",
    "8",
    "--probe",
    "3",
    "--no-progress",
    "--log-level",
    "WARNING",
]


def _run(out: Path, *flags: str) -> str:
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        status = recipe.main([*TINY, "--out", str(out), *flags])
    assert status == 0
    return printed.getvalue()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("concrete")
    return out, _run(out, "--seeds", "0", "1")


def _split(name: str, split: str, rows: int, **options: object) -> tuple[torch.Tensor, torch.Tensor]:
    return _protocol.stack(_protocol.subset_rows(load_dataset(name, split=split, **options), rows))


def test_results_json_is_well_formed(tiny: tuple[Path, str]) -> None:
    out, _ = tiny
    results = read_results(out)
    assert results["recipe"] == "concrete_autoencoder"
    assert [(r["dataset"], r["seed"], r["k"]) for r in results["runs"]] == [
        ("mnist-5k", 0, 50),
        ("mnist-5k", 1, 50),
    ]
    for run in results["runs"]:
        # the authors' batch max(N // 256, 16) = 16: 3 steps per epoch clean, 6 augmented
        assert run["original"]["steps"] == 3 and run["mine"]["steps"] == 6 and run["same_steps"]["steps"] == 6
        assert run["original"]["tries"] == 1 and len(run["original"]["mean_max_probabilities"]) == 1
        for arm in ("original", "mine", "same_steps"):
            entry = run[arm]
            assert 0.0 < entry["test_mse"] < 1.0
            assert 0.0 <= entry["accuracy_pct"] <= 100.0
            selected = entry["selected_features"]
            assert len(selected) == 50 and len(set(selected)) == 50 and 0 <= min(selected) and max(selected) < 784
        mine = run["mine"]
        assert 0.0 <= mine["asr_pct"] <= mine["criterion_zero_pct"] <= 100.0
        assert mine["augmented_size"] == 2 * TRAIN_ROWS and mine["kept_uaes"] == TRAIN_ROWS
        assert mine["attack"]["sampler"] == "random_projection" and mine["attack"]["projections"] == 8
        assert mine["probe"]["probe_rows_differing_from_cache"] <= 1
    (row,) = results["summary"]
    assert row["original"]["test_mse"]["n"] == 2 and finite(row["original"]["test_mse"]["std"])
    expected = (
        100
        * (row["original"]["test_mse"]["mean"] - row["mine"]["test_mse"]["mean"])
        / row["original"]["test_mse"]["mean"]
    )
    assert row["re_change_vs_original_pct"] == pytest.approx(expected)
    assert results["skipped"] == []


def test_metrics_match_an_independent_recomputation(tiny: tuple[Path, str]) -> None:
    out, _ = tiny
    run = read_results(out)["runs"][1]
    model = build_model("concrete-ae", (1, 28, 28), k=50)
    model.load_state_dict(torch.load(out / "models" / "mnist-5k-seed1.pt", weights_only=False)["state_dict"])
    model.eval()
    selected = model.selected_features()
    assert selected.tolist() == run["original"]["selected_features"]
    x_train, y_train = _split("mnist-5k", "train", TRAIN_ROWS)
    x_test, y_test = _split("mnist-5k", "test", TEST_ROWS)
    with torch.no_grad():
        mse = float(((model.decoder(x_test.flatten(1)[:, selected]) - x_test.flatten(1)) ** 2).mean())
    assert run["original"]["test_mse"] == pytest.approx(mse, rel=1e-5)
    forest = ExtraTreesClassifier(n_estimators=50, random_state=1, n_jobs=1)
    forest.fit(x_train.flatten(1)[:, selected].numpy(), y_train.numpy())
    accuracy = 100 * forest.score(x_test.flatten(1)[:, selected].numpy(), y_test.numpy())
    assert run["original"]["accuracy_pct"] == pytest.approx(accuracy)
    cache = UAECache(out / "cache" / "mnist-5k-seed1-mine.h5")
    assert run["mine"]["asr_pct"] == pytest.approx(100 * float(cache.success.double().mean()))


def test_table_grid_config_and_log(tiny: tuple[Path, str]) -> None:
    out, printed = tiny
    table = (out / "results.md").read_text()
    assert table in printed
    rows = table_rows(table)
    assert rows[0][:2] == ["mnist-5k (K=50)", "ours (2 seeds, 48 train rows)"]
    assert rows[1] == [
        "",
        "paper",
        "0.01170",
        "—",
        "0.01142 (+2.4%)",
        "94.97%",
        "—",
        "95.41%",
        "99.98%",
    ]
    assert rows[2][0] == "mnist-5k" and rows[2][1] == "3 / 6 / 6"
    assert_png(out / "grid-mnist-5k.png", min_side=150)
    assert "tries: 1" in (out / "config.yaml").read_text()
    log = (out / "wall_time.log").read_text()
    for stage in ("train-clean", "attack/mine", "retrain/mine", "same-steps-control"):
        assert f"mnist-5k/seed1/{stage}\t" in log


def test_tabular_set_uses_k10_for_mice_protein(data_root: Path, tmp_path: Path) -> None:
    _run(
        tmp_path,
        "--datasets",
        "mice-protein",
        "activity",
        "--data-root",
        str(data_root),
        "--seeds",
        "0",
        "--train-rows",
        "64",
    )
    results = read_results(tmp_path)
    (run,) = results["runs"]
    assert run["dataset"] == "mice-protein" and run["k"] == 10
    assert len(run["original"]["selected_features"]) == 10 and max(run["original"]["selected_features"]) < 77
    # 64 rows / batch 16 = 4 steps per epoch; the test rows come from the loader's stratified 20 % split
    assert run["original"]["steps"] == 4 and run["train_size"] == 64 and run["test_size"] == TEST_ROWS
    if not (data_root / "activity.npz").exists():
        assert results["skipped"] == [{"dataset": "activity", "reason": "file not found in the data root"}]
        assert "Skipped: activity" in (tmp_path / "results.md").read_text()
    assert not list(tmp_path.glob("grid-*.png"))  # no picture for tabular rows
    assert math.isfinite(results["summary"][0]["mine"]["accuracy_pct"]["mean"])


def test_help_runs_as_a_script() -> None:
    done = subprocess.run(
        [PYTHON, str(REPO / "recipes" / "concrete_autoencoder.py"), "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO.parent,
    )
    assert done.returncode == 0, done.stderr
    for flag in ("--quick", "--config", "--out", "--tries", "--k", "--failed"):
        assert flag in done.stdout


@pytest.mark.slow
def test_quick_mode_end_to_end(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            PYTHON,
            str(REPO / "recipes" / "concrete_autoencoder.py"),
            "--quick",
            "--out",
            str(tmp_path),
            "--no-progress",
        ],
        capture_output=True,
        text=True,
        timeout=1800,
        cwd=REPO,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = read_results(tmp_path)
    assert len(results["runs"]) == len(recipe.QUICK["seeds"])
    assert "| mnist-5k (K=50) | ours (2 seeds, 1,000 train rows) |" in done.stdout
    assert_png(tmp_path / "grid-mnist-5k.png", min_side=150)


def test_paired_comparison_against_the_same_steps_control(tiny: tuple[Path, str]) -> None:
    out, _ = tiny
    results = read_results(out)
    (row,) = results["summary"]
    runs = results["runs"]
    expected = paired_difference([r["mine"]["test_mse"] for r in runs], [r["same_steps"]["test_mse"] for r in runs])
    assert row["paired_vs_same_steps"]["test_mse"]["ci_low"] == pytest.approx(expected.ci_low)
    accuracy = row["paired_vs_same_steps"]["accuracy_pct"]
    assert accuracy is None or "error" in accuracy or accuracy["better"] == "higher"
    rows = table_rows((out / "results.md").read_text())
    assert rows[-1][0] == "mnist-5k" and rows[-1][1] == _report.format_paired(
        row["paired_vs_same_steps"]["test_mse"], 5
    )
