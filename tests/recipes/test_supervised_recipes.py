"""The supervised recipes end to end on tiny configurations of the embedded MNIST-5k.

supervised_attacks.py, adversarial_training.py and transferability.py each run once
per module (a few images, one epoch, a few iterations); the tests check the
files they wrote and recompute numbers from the saved weights.
"""

from __future__ import annotations

import contextlib
import io
import math
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml

import _protocol
import adversarial_training
import supervised_attacks
import transferability
from _adversarial_training_report import COLUMN_LABELS
from _supervised_args import ATTACKS
from _transferability_models import CROSS_TRAINING, WeightDecayMLP, split_halves
from uae_augment import FGSM, load_dataset, per_sample_mi
from uae_augment.evaluation import distortion
from uae_augment.models import LeNet, cw_mnist
from uae_augment.training import InputNormalization

from .helpers import PYTHON, REPO, assert_png, finite, read_results, table_rows

QUIET = ["--no-progress", "--log-level", "WARNING"]


def _run(main, out: Path, *flags: str) -> str:
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main([*flags, "--out", str(out), *QUIET]) == 0
    return printed.getvalue()


def _mnist_test() -> tuple[torch.Tensor, torch.Tensor]:
    return _protocol.stack(load_dataset("mnist-5k", split="test"))


# --------------------------------------------------------------------------- supervised_attacks.py

ATTACK_FLAGS = [
    "--quick",
    "--datasets",
    "mnist-5k",
    "--train-rows",
    "300",
    "--epochs",
    "2",
    "--images",
    "6",
    "--steps",
    "4",
    "--penalty-search-steps",
    "2",
    "--penalty-steps",
    "3",
    "--pgd-steps",
    "3",
    "--lbfgs-search-steps",
    "2",
    "--lbfgs-max-iter",
    "5",
    "--mi-steps",
    "30",
]


@pytest.fixture(scope="module")
def attacks_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("supervised_attacks")
    return out, _run(supervised_attacks.main, out, *ATTACK_FLAGS)


def test_supervised_attacks_json_matches_a_recomputation(attacks_run: tuple[Path, str]) -> None:
    out, _ = attacks_run
    results = read_results(out)
    (run,) = results["runs"]
    assert run["dataset"] == "mnist-5k" and run["train_size"] == 300 and run["images"] == 6
    assert set(run["attacks"]) == set(ATTACKS)
    budget = {"minmax": 4, "penalty": 2 * 3, "pgd": 3, "fgsm": 1, "lbfgs": 2 * 5}
    for name, entry in run["attacks"].items():
        assert entry["iterations"] == budget[name] and entry["n"] == 6
        assert 0.0 <= entry["asr_pct"] <= 100.0 and finite(entry["seconds_per_example"])
        assert (
            entry["config"]["attack"]
            == {
                "minmax": "MinMaxAttack",
                "penalty": "PenaltyAttack",
                "pgd": "PGD",
                "fgsm": "FGSM",
                "lbfgs": "LBFGS",
            }[name]
        )
        assert finite(entry["mi_evaluator_all"]) and finite(entry["mi_evaluator_change_2x"])
    assert finite(run["attacks"]["minmax"]["mi_attack"]) or run["attacks"]["minmax"]["asr_pct"] == 0
    assert run["attacks"]["pgd"]["mi_attack"] is None  # gradient attacks have no MINE: NaN -> null
    assert run["attacks"]["pgd"]["linf"] <= 0.3 + 1e-6 and run["attacks"]["fgsm"]["linf"] <= 0.3 + 1e-6

    # recompute from the saved weights: the attacked rows, their accuracy, FGSM and the evaluator
    model = cw_mnist()
    model.load_state_dict(torch.load(out / "models" / "mnist-5k-cw-seed0.pt", weights_only=False)["state_dict"])
    model.eval()
    x_test, y_test = _mnist_test()
    with torch.no_grad():
        predicted = model(x_test).argmax(1)
    assert run["test_accuracy"] == pytest.approx(float((predicted == y_test).double().mean()))
    rows = torch.tensor(run["image_index"])
    assert bool((predicted[rows] == y_test[rows]).all())
    x, y = x_test[rows], y_test[rows]
    fgsm = FGSM(model, epsilon=0.3)(x, y, index=rows)
    assert run["attacks"]["fgsm"]["asr_pct"] == pytest.approx(100 * fgsm.asr)
    assert run["attacks"]["fgsm"]["l2"] == pytest.approx(float(distortion(x, fgsm.adversarial)["l2"].mean()), rel=1e-5)
    identical = per_sample_mi(x, x.clone(), steps=30, lr=1e-2, seed=0, index=rows)
    assert run["mi_references"]["identical copy"] == pytest.approx(float(identical.mean()), rel=1e-4)


def test_supervised_attacks_tables_and_figures(attacks_run: tuple[Path, str]) -> None:
    out, printed = attacks_run
    table = (out / "results.md").read_text()
    assert table in printed
    rows = table_rows(table)
    paper = [row for row in rows if row[1] == "paper"]
    assert [row[0] for row in paper] == ["MinMax", "penalty-based"]
    assert paper[0][2:] == ["100%", "51.29"] and paper[1][2:] == ["100%", "28.28"]
    assert [row[1] for row in rows[:8]] == [
        "paper",
        "ours, attack's own MINE",
        "ours, evaluator",
        "ours, evaluator, images both fooled",
    ] * 2
    detail = [row for row in rows if len(row) == 11]
    assert [row[0] for row in detail] == [
        *(supervised_attacks.LABELS[a] for a in ATTACKS),
        "reference: x' = x",
        "reference: x' = another test image",
    ]
    assert "Evaluator ranking of the attacks" in table and "How to read the MI columns" in table
    assert "the same at both budgets in" in table
    assert_png(out / "mi_curves-mnist-5k.png")
    assert_png(out / "grid-mnist-5k.png", min_side=150)
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["epochs"] == 2 and config["preset"] == "strong" and config["optimizer"] == "adam"
    log = (out / "wall_time.log").read_text()
    assert "mnist-5k/seed0/attack/minmax\t" in log and "mnist-5k/seed0/mi-evaluator-2x\t" in log


def test_supervised_attacks_rerun_reuses_the_classifier(attacks_run: tuple[Path, str], tmp_path: Path) -> None:
    out, _ = attacks_run
    again = tmp_path / "again"
    shutil.copytree(out, again)
    _run(supervised_attacks.main, again, *ATTACK_FLAGS, "--attacks", "fgsm", "--no-mi-check")
    (run,) = read_results(again)["runs"]
    (first,) = read_results(out)["runs"]
    assert run["training"]["reused_checkpoint"] is True and set(run["attacks"]) == {"fgsm"}
    assert run["attacks"]["fgsm"]["asr_pct"] == first["attacks"]["fgsm"]["asr_pct"]
    assert run["attacks"]["fgsm"]["mi_evaluator"] == pytest.approx(first["attacks"]["fgsm"]["mi_evaluator"])
    assert "mi_evaluator_change_2x" not in run["attacks"]["fgsm"]


def test_supervised_attacks_on_cifar10(data_root: Path, tmp_path: Path) -> None:
    _run(
        supervised_attacks.main,
        tmp_path,
        "--quick",
        "--datasets",
        "cifar10",
        "--train-rows",
        "100",
        "--epochs",
        "1",
        "--cifar-epochs",
        "1",
        "--test-rows",
        "100",
        "--images",
        "3",
        "--attacks",
        "minmax",
        "pgd",
        "--steps",
        "2",
        "--pgd-steps",
        "2",
        "--mi-steps",
        "10",
        "--no-mi-check",
        "--data-root",
        str(data_root),
    )
    (run,) = read_results(tmp_path)["runs"]
    assert run["published_as"] == "CIFAR-10" and run["attacks"]["pgd"]["linf"] <= 8 / 255 + 1e-6
    assert "| CIFAR-10 ASR | CIFAR-10 MI |" in (tmp_path / "results.md").read_text()


# --------------------------------------------------------------------------- adversarial_training.py

TRAINING_FLAGS = [
    "--quick",
    "--train-rows",
    "200",
    "--test-rows",
    "100",
    "--epochs",
    "1",
    "--madry-steps",
    "2",
    "--pgd-steps",
    "2",
    "--epsilon-sweep",
    "0.1",
    "0.3",
]


@pytest.fixture(scope="module")
def training_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("adversarial_training")
    return out, _run(adversarial_training.main, out, *TRAINING_FLAGS)


def test_adversarial_training_json_matches_a_recomputation(training_run: tuple[Path, str]) -> None:
    out, _ = training_run
    results = read_results(out)
    assert [r["method"] for r in results["runs"]] == list(adversarial_training.METHODS)
    steps = {r["method"]: r["train"]["steps"] for r in results["runs"]}
    # batch 100: 200 rows are 2 steps per epoch; the per-epoch FGSM copies double them
    assert steps == {"standard": 2, "fgsm-augment": 4, "goodfellow": 2, "kurakin": 2, "madry": 2}
    for run in results["runs"]:
        for split in ("clean", "fgsm", "pgd"):
            table = run["eval"][split]
            assert table["n"] == 100 and table["correct"] + table["error"] == pytest.approx(1.0)
        assert set(run["eval"]["fgsm_accuracy_vs_epsilon"]) == {"0.1", "0.3"}
        assert finite(run["eval"]["lipschitz_product"]) and run["eval"]["lipschitz_product"] > 0

    # the standard model's clean row, recomputed by hand from the checkpoint
    train = _protocol.subset_rows(load_dataset("mnist-5k"), 200)
    x_train, _ = _protocol.stack(train)
    model = InputNormalization(LeNet(), x_train.mean(dim=0))
    model.load_state_dict(torch.load(out / "models" / "standard-seed0.pt", weights_only=False)["state_dict"])
    test = _protocol.subset_rows(load_dataset("mnist-5k", split="test"), 100)
    x, y = _protocol.stack(test)
    with torch.no_grad():
        probabilities = F.softmax(model.eval()(x), dim=1)
    confidence, predicted = probabilities.max(dim=1)
    hit = predicted == y
    clean = results["runs"][0]["eval"]["clean"]
    assert clean["correct"] == pytest.approx(float(hit.double().mean()))
    assert clean["confidence"] == pytest.approx(float(confidence.mean()), rel=1e-5)
    if hit.any():
        assert clean["confidence_correct"] == pytest.approx(float(confidence[hit].mean()), rel=1e-5)
    fgsm = FGSM(model, epsilon=0.25)(x, y).adversarial
    with torch.no_grad():
        fgsm_correct = float((model(fgsm).argmax(1) == y).double().mean())
    assert results["runs"][0]["eval"]["fgsm"]["correct"] == pytest.approx(fgsm_correct)


def test_adversarial_training_tables_and_figures(training_run: tuple[Path, str]) -> None:
    out, printed = training_run
    table = (out / "results.md").read_text()
    assert table in printed
    rows = table_rows(table)
    main = [row for row in rows if len(row) == 14]
    assert [row[1] for row in main if row[1] == "reference"] == ["reference", "reference"]
    standard_paper = main[1]
    assert standard_paper[2:7] == ["0.9858", "0.0142", "0.9858", "0.9899", "0.7029"]
    assert standard_paper[7:12] == ["0.0496", "0.9504", "0.9305", "0.8869", "0.9328"]
    layout = [row for row in rows if len(row) == 5]
    assert [row[0] for row in layout[:5]] == list(COLUMN_LABELS)
    assert layout[5][2] == "0.9840" and layout[5][4] == "0.8328"  # adversarial training, reference
    for name in ("training_curves.png", "fgsm_vs_epsilon.png"):
        assert_png(out / name)
    assert_png(out / "examples.png", min_side=150)


def test_adversarial_training_rerun_loads_the_weights(training_run: tuple[Path, str], tmp_path: Path) -> None:
    out, _ = training_run
    again = tmp_path / "again"
    shutil.copytree(out, again)
    _run(adversarial_training.main, again, *TRAINING_FLAGS, "--methods", "madry")
    (run,) = read_results(again)["runs"]
    first = next(r for r in read_results(out)["runs"] if r["method"] == "madry")
    assert run["train"]["reused"] is True
    assert run["eval"]["clean"] == first["eval"]["clean"] and run["eval"]["pgd"] == first["eval"]["pgd"]


# --------------------------------------------------------------------------- transferability.py

TRANSFER_MODELS = ["FC10(1e-4)", "FC100-100-10", "AE400-10"]
TRANSFER_FLAGS = [
    "--quick",
    "--train-rows",
    "300",
    "--epochs",
    "2",
    "--cross-epochs",
    "40",
    "--ae-epochs",
    "1",
    "--images",
    "8",
    "--search-steps",
    "2",
    "--max-iter",
    "10",
    "--models",
    *TRANSFER_MODELS,
]


@pytest.fixture(scope="module")
def transfer_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("transferability")
    return out, _run(transferability.main, out, *TRANSFER_FLAGS)


def test_transferability_json_is_consistent(transfer_run: tuple[Path, str]) -> None:
    out, _ = transfer_run
    (run,) = read_results(out)["runs"]
    matrix = run["transfer"]
    assert matrix["targets"] == TRANSFER_MODELS
    assert matrix["rows"] == [
        *TRANSFER_MODELS,
        *(f"noise matched to {m}" for m in TRANSFER_MODELS),
        "noise rms=0.1",
        "noise rms=0.3",
    ]
    for name in TRANSFER_MODELS:
        assert matrix["error"][name][name] == pytest.approx(matrix["attack_success"][name])
        assert matrix["distortion_rms"][f"noise matched to {name}"] == pytest.approx(
            matrix["distortion_rms"][name], rel=1e-3
        )
        assert matrix["clean_error"][name] == 0.0  # attacked digits: right for every model
        layers = run["lipschitz"][name]["layers"]
        assert run["lipschitz"][name]["product"] == pytest.approx(math.prod(layer["norm"] for layer in layers))
    assert [layer["kind"] for layer in run["lipschitz"]["AE400-10"]["layers"]] == [
        "Flatten",
        "Linear",
        "Sigmoid",
        "Linear",
    ]

    # FC100-100-10's accuracy and first layer bound from its checkpoint
    model = WeightDecayMLP((1, 28, 28), (100, 100), 1e-5, epochs=2)
    model.load_state_dict(torch.load(out / "models" / "FC100-100-10-seed0.pt", weights_only=False)["state_dict"])
    x_test, y_test = _mnist_test()
    with torch.no_grad():
        correct = float((model.eval()(x_test).argmax(1) == y_test).double().mean())
    assert run["test_accuracy"]["FC100-100-10"] == pytest.approx(correct)
    first = torch.linalg.matrix_norm(model.layers[1].weight.detach().double(), ord=2)
    assert run["lipschitz"]["FC100-100-10"]["layers"][1]["norm"] == pytest.approx(float(first), rel=1e-9)


def test_transferability_cross_training(transfer_run: tuple[Path, str]) -> None:
    out, _ = transfer_run
    (run,) = read_results(out)["runs"]
    cross = run["cross_training"]
    names = [spec.name for spec in CROSS_TRAINING]
    assert cross["transfer"]["targets"] == names
    assert [cross["training"][n]["part"] for n in names] == ["P1", "P1", "P2"]
    assert cross["training"][names[0]]["rows"] == cross["training"][names[2]]["rows"] == 150
    for name in names:
        assert cross["transfer"]["error"][name][name] == pytest.approx(cross["transfer"]["attack_success"][name])
        assert cross["transfer"]["clean_error"][name] == 0.0
    assert "noise rms=0.06" in cross["transfer"]["rows"]
    # the halves are disjoint and the P2 net's accuracy is recomputed from its checkpoint
    train = _protocol.subset_rows(load_dataset("mnist-5k", split="train"), 300)
    halves = split_halves(train)
    assert not set(halves["P1"].indices) & set(halves["P2"].indices)
    model = WeightDecayMLP((1, 28, 28), (100, 100), 1e-5, epochs=40, activation="sigmoid")
    state = torch.load(out / "models" / "cross-FC100-100-10_-seed0.pt", weights_only=False)["state_dict"]
    model.load_state_dict(state)
    x_test, y_test = _mnist_test()
    with torch.no_grad():
        correct = float((model.eval()(x_test).argmax(1) == y_test).double().mean())
    assert cross["test_accuracy"][names[2]] == pytest.approx(correct)
    table = (out / "results.md").read_text()
    assert "### Cross-training generalisation" in table
    published = [row for row in table_rows(table) if row[0] == "Gaussian noise, stddev=0.06"]
    assert published == [["Gaussian noise, stddev=0.06", "2.2%", "2.6%", "2.4%"]]


def test_transferability_tables_and_figure(transfer_run: tuple[Path, str]) -> None:
    out, printed = transfer_run
    table = (out / "results.md").read_text()
    assert table in printed
    assert "### Published (Szegedy et al. 2014, MNIST)" in table
    rows = table_rows(table)
    ours = [row for row in rows if len(row) == len(TRANSFER_MODELS) + 3]
    assert [row[0] for row in ours][:3] == TRANSFER_MODELS
    assert ours[0][1] == "100.0%" or ours[0][1].endswith("%")
    published = [row for row in rows if row[0] == "FC10(1e-2)" and len(row) == 8]
    assert published == [["FC10(1e-2)", "87.1%", "100%", "35.2%", "35.9%", "27.3%", "9.8%", "0.1"]]
    assert any(row[1] == "**product**" for row in rows)
    assert_png(out / "examples.png", min_side=150)


# --------------------------------------------------------------------------- scripts


@pytest.mark.parametrize("script", ["supervised_attacks.py", "adversarial_training.py", "transferability.py"])
def test_help_runs_as_a_script(script: str) -> None:
    done = subprocess.run(
        [PYTHON, str(REPO / "recipes" / script), "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO.parent,
    )
    assert done.returncode == 0, done.stderr
    for flag in ("--quick", "--config", "--out", "--seeds"):
        assert flag in done.stdout


@pytest.mark.slow
@pytest.mark.parametrize("script", ["supervised_attacks.py", "adversarial_training.py", "transferability.py"])
def test_quick_mode_end_to_end(script: str, tmp_path: Path) -> None:
    done = subprocess.run(
        [
            PYTHON,
            str(REPO / "recipes" / script),
            "--quick",
            "--out",
            str(tmp_path),
            "--no-progress",
        ],
        capture_output=True,
        text=True,
        timeout=3600,
        cwd=REPO,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = read_results(tmp_path)
    assert results["runs"] and (tmp_path / "results.md").read_text() in done.stdout
