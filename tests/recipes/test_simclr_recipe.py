"""recipes/simclr.py end to end on a tiny image folder of real CIFAR-10 images, in one and two processes."""

from __future__ import annotations

import contextlib
import copy
import io
import math
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import _protocol
import _report
import _simclr_data
import _simclr_report
import simclr as recipe
from uae_augment import UAECache, load_dataset
from uae_augment.models import SimCLR

from .helpers import PYTHON, REPO, assert_png, finite, read_results, table_rows

TRAIN_ROWS, TEST_ROWS, BATCH, EPOCHS, NEGATIVES = 96, 64, 32, 2, 8
PRESETS = [
    "fast",
    "strong",
]  # fast: the release's step sizes with rank-10 MINE branches (paper: 63 MB per image)
TINY = [
    "--width",
    "2",
    "--epochs",
    str(EPOCHS),
    "--batch-size",
    str(BATCH),
    "--lr",
    "0.1",
    "--presets",
    *PRESETS,
    "--attack-steps",
    "2",
    "--mine-steps",
    "1",
    "--negatives",
    str(NEGATIVES),
    "--attack-batch-size",
    "48",
    "--linear-epochs",
    "3",
    "--eval-batch-size",
    "32",
    "--pgd-rows",
    "16",
    "--pgd-steps",
    "3",
    "--pgd-epsilons",
    "4",
    "16",
    "--probe",
    "4",
    "--seeds",
    "0",
    "--device",
    "cpu",
    "--no-progress",
    "--log-level",
    "WARNING",
]


@pytest.fixture(scope="module")
def image_folder(data_root, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A torchvision ImageFolder tree (train/ and test/) of real CIFAR-10 PNGs."""
    root = tmp_path_factory.mktemp("cifar-folder")
    for split, rows in (("train", TRAIN_ROWS), ("test", TEST_ROWS)):
        data = _protocol.subset_rows(load_dataset("cifar10", root=data_root, split=split), rows)  # every class
        for i in range(rows):
            image, label = data[i]
            folder = root / split / f"class{label}"
            folder.mkdir(parents=True, exist_ok=True)
            pixels = (image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"{i:04d}.png")
    return root


@pytest.fixture(scope="module")
def single(image_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("simclr-1")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert recipe.main(["--image-folder", str(image_folder), *TINY, "--out", str(out)]) == 0
    return out, printed.getvalue()


@pytest.fixture(scope="module")
def two_processes(image_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("simclr-2")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [
        PYTHON,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        str(REPO / "recipes" / "simclr.py"),
        "--image-folder",
        str(image_folder),
        *TINY,
        "--out",
        str(out),
    ]
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    return out


def _trainings(run: dict) -> dict[str, dict]:
    return {"original": run["original"], "same_steps": run["same_steps"], **run["augmented"]}


def test_results_hold_every_model_and_attack(single: tuple[Path, str]) -> None:
    out, printed = single
    results = read_results(out)
    assert results["recipe"] == "simclr" and results["world_size"] == 1
    (run,) = results["runs"]
    assert run["train_size"] == TRAIN_ROWS and run["test_size"] == TEST_ROWS
    steps = TRAIN_ROWS // BATCH * EPOCHS
    assert run["original"]["steps"] == steps
    # clean + UAE has 2N images: twice the steps, and the control trains exactly as long
    assert run["same_steps"]["steps"] == 2 * steps
    assert set(run["augmented"]) == set(PRESETS)
    for name, entry in _trainings(run).items():
        assert len(entry["step_losses"]) == entry["steps"], name
        assert all(finite(v) and v > 0 for v in entry["step_losses"])
        assert 0 <= entry["linear"]["test_acc"] <= 100 and 0 <= entry["linear"]["train_acc"] <= 100
        assert finite(entry["test_ntxent"]) and entry["test_ntxent"] > 0
        assert set(entry["pgd_accuracy"]) == {"clean", "4", "16"} and entry["pgd_rows"] == 16
        assert entry["pgd_accuracy"]["16"] <= entry["pgd_accuracy"]["clean"]
    for preset in PRESETS:
        entry = run["augmented"][preset]
        assert entry["attack"]["preset"] == preset and entry["attack"]["gamma_power"] == 0.5
        assert entry["attack"]["steps"] == 2 and entry["attack"]["criterion"] == "Contrastive"
        assert entry["attack"]["negatives"]["count"] == NEGATIVES
        assert 0 <= entry["asr_pct"] <= 100 and entry["augmented_size"] == 2 * TRAIN_ROWS
        # the probe rows attacked again in memory equal the cached ones: per-sample determinism
        assert entry["probe"]["max_abs_diff_to_cache"] < 1e-5
        assert entry["probe"]["moved_linf"] >= 0
    # the release's step sizes barely move delta; the strong preset's sign steps do
    assert run["augmented"]["strong"]["probe"]["moved_linf"] > run["augmented"]["fast"]["probe"]["moved_linf"]
    assert "clean + MINE-UAE (strong)" in printed


def test_table_and_figures(single: tuple[Path, str]) -> None:
    out, _ = single
    rows = table_rows((out / "results.md").read_text())
    labels = [row[0] for row in rows]
    assert labels[:4] == [
        "original (clean)",
        "clean, same steps",
        "clean + MINE-UAE (fast)",
        "clean + MINE-UAE (strong)",
    ]
    summary = {row["key"]: row for row in read_results(out)["summary"]}
    assert rows[2][2] == _report.format_stat(summary["uae-fast"]["linear_test_acc"], 2)
    delta = summary["uae-strong"]["vs_same_steps"]["linear_test_acc_pp"]
    expected = summary["uae-strong"]["linear_test_acc"]["mean"] - summary["same-steps"]["linear_test_acc"]["mean"]
    assert math.isclose(delta, expected)
    assert PRESETS == [row[0] for row in rows if row[0] in PRESETS]
    assert_png(out / "grid.png")
    assert_png(out / "loss_curves.png")
    assert (out / "config.yaml").exists() and "total" in (out / "wall_time.log").read_text()


def test_cached_uaes_meet_the_criterion_recomputed_from_the_checkpoint(
    single: tuple[Path, str], image_folder: Path
) -> None:
    out, _ = single
    train, _ = _simclr_data.image_folder_splits(image_folder, 32)
    model = SimCLR(width=2)
    model.load_state_dict(torch.load(out / "models" / "simclr-seed0.pt", weights_only=False)["state_dict"])
    model.eval()
    bank, _ = _protocol.stack(_protocol.subset_rows(train, NEGATIVES))
    criterion = model.criterion(n_views=2, negatives=bank, seed=0)
    cache = UAECache(out / "cache" / "simclr-seed0-strong.h5")
    rows = torch.tensor([0, 17, 50, 95])
    uaes, _ = cache.rows(rows)
    x, _ = _protocol.stack(torch.utils.data.Subset(train, rows.tolist()))
    with torch.no_grad():
        f = criterion(uaes, criterion.prepare(x, None, rows))
    torch.testing.assert_close(f, cache.criterion[rows].float(), atol=1e-4, rtol=1e-3)
    assert bool(((uaes - x).abs().amax(dim=(1, 2, 3)) > 0).all())


def test_two_processes_follow_the_one_process_loss_curves(single: tuple[Path, str], two_processes: Path) -> None:
    one, two = read_results(single[0]), read_results(two_processes)
    assert two["world_size"] == 2
    for name, entry in _trainings(two["runs"][0]).items():
        reference = _trainings(one["runs"][0])[name]["step_losses"]
        losses = entry["step_losses"]
        assert len(losses) == len(reference), name
        # the same global batches and views; on CPU BatchNorm's batch statistics are per process,
        # which moves single steps by up to ~0.3 here but not the curve
        gaps = [a - b for a, b in zip(losses, reference)]
        assert abs(sum(gaps)) / len(gaps) < 0.1, (name, gaps)
        assert sum(abs(g) for g in gaps) / len(gaps) < 0.15, (name, gaps)
    # negatives gathered from both processes: the first loss is near log(2B - 1) = log 63, not log 31
    first = two["runs"][0]["original"]["step_losses"][0]
    assert first > math.log(BATCH - 1) + 0.4
    assert_png(two_processes / "grid.png")
    assert two["runs"][0]["augmented"]["strong"]["augmented_size"] == 2 * TRAIN_ROWS


def test_paired_comparison_over_seeds(single: tuple[Path, str]) -> None:
    out, _ = single
    first = read_results(out)["runs"][0]
    runs = [first]
    for seed, (shift, loss) in enumerate([(1.5, -0.01), (2.5, -0.03), (0.5, 0.02)], start=1):
        run = copy.deepcopy(first)
        run["seed"] = seed
        for entry in run["augmented"].values():
            entry["linear"]["test_acc"] += shift
            entry["test_ntxent"] += loss
        runs.append(run)
    summary = _simclr_report.summarise(runs, [4, 16])
    fast = next(row for row in summary if row["key"] == "uae-fast")
    acc = fast["paired_vs_same_steps"]["linear_test_acc"]
    differences = [r["augmented"]["fast"]["linear"]["test_acc"] - r["same_steps"]["linear"]["test_acc"] for r in runs]
    assert acc["n"] == 4 and acc["mean"] == pytest.approx(float(np.mean(differences)))
    assert acc["better"] == "higher" and fast["paired_vs_same_steps"]["test_ntxent"]["better"] == "lower"
    table = _simclr_report.markdown(summary, [4, 16], data="cifar", seeds=4, pgd_rows=16, pgd_steps=3)
    paired = [row for row in table_rows(table) if len(row) == 3 and "MDE" in row[1]]
    assert [row[0] for row in paired] == ["clean + MINE-UAE (fast)", "clean + MINE-UAE (strong)"]
    assert paired[0][1] == _report.format_paired(acc, 2)
    # one seed: no paired table
    assert "Paired over seeds" not in _simclr_report.markdown(
        _simclr_report.summarise(runs[:1], [4, 16]),
        [4, 16],
        data="cifar",
        seeds=1,
        pgd_rows=16,
        pgd_steps=3,
    )
