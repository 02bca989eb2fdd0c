"""recipes/autoencoders.py end to end on a tiny configuration of the embedded MNIST-5k."""

from __future__ import annotations

import contextlib
import io
import math
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
import yaml

import _config
import _protocol
import autoencoders as recipe
from _autoencoders_args import MODEL_KINDS, attack_steps
from uae_augment import MINEUAE, LpUAE, Reconstruction, UAECache, load_dataset
from uae_augment.models import build_model
from uae_augment.statistics import paired_difference

from .helpers import PYTHON, REPO, assert_png, finite, read_results, table_rows

TRAIN_ROWS, TEST_ROWS = 52, 40  # 52 rows: one batch of 100; the 104 augmented rows: two
TINY = [
    "--quick",
    "--train-rows",
    str(TRAIN_ROWS),
    "--test-rows",
    str(TEST_ROWS),
    "--epochs",
    "1",
    "--attack-steps",
    "2",
    "--dense-attack-steps",
    "3",
    "--projections",
    "8",
    "--probe",
    "2",
    "--no-progress",
    "--log-level",
    "WARNING",
]
MODELS = ["sparse", "dense"]  # random-projection MINE: cheap; the conv AE runs in `tiny_conv`
SEEDS = [0, 1]
CONV_METHODS = ["mine", "init-only", "ga-0.01"]


def _run(out: Path, *flags: str) -> str:
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        status = recipe.main([*TINY, "--out", str(out), *flags])
    assert status == 0
    return printed.getvalue()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """Two dense kinds, two seeds, every method."""
    out = tmp_path_factory.mktemp("autoencoders")
    return out, _run(out, "--models", *MODELS, "--seeds", *map(str, SEEDS))


@pytest.fixture(scope="module")
def tiny_conv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The conv AE (feature-map MINE), one seed, three methods."""
    out = tmp_path_factory.mktemp("autoencoders-conv")
    _run(out, "--models", "conv", "--seeds", "1", "--methods", *CONV_METHODS)
    return out


def _test_split() -> torch.Tensor:
    test = _protocol.subset_rows(load_dataset("mnist-5k", split="test"), TEST_ROWS)
    return torch.stack([test[i][0] for i in range(len(test))])


def _train_split() -> torch.utils.data.Dataset:
    return _protocol.subset_rows(load_dataset("mnist-5k", split="train"), TRAIN_ROWS)


def test_results_json_is_well_formed(tiny: tuple[Path, str]) -> None:
    out, _ = tiny
    results = read_results(out)
    assert results["recipe"] == "autoencoders"
    assert results["failed_uaes"] == "keep"
    assert {(r["model"], r["seed"]) for r in results["runs"]} == {(m, s) for m in MODELS for s in SEEDS}
    differing = probed = 0
    for run in results["runs"]:
        assert run["train_size"] == TRAIN_ROWS and run["test_size"] == TEST_ROWS
        # batch 100: the clean set is one step per epoch, the 2N augmented set two
        assert run["original"]["steps"] == 1
        assert run["same_steps"]["steps"] == 2
        assert set(run["methods"]) == set(recipe.METHODS)
        for key, entry in run["methods"].items():
            assert 0.0 < entry["test_mse"] < 1.0, key
            assert 0.0 <= entry["asr_pct"] <= 100.0
            assert 0.0 <= entry["criterion_zero_pct"] <= 100.0
            assert entry["asr_pct"] <= entry["criterion_zero_pct"] + 1e-9  # success needs f_x = 0
            assert entry["steps"] == 2 and entry["augmented_size"] == 2 * TRAIN_ROWS
            assert entry["kept_uaes"] == TRAIN_ROWS
            differing += entry["probe"]["probe_rows_differing_from_cache"]
            probed += entry["probe"]["probe_rows"]
            if key.startswith("ga-") or key == "init-only":  # no choice among iterates: no ties to flip
                assert entry["probe"]["max_abs_diff_to_cache"] == 0.0, key
    # the in-memory probe reproduces the cached rows (a float near-tie may flip the odd one)
    assert differing <= 0.1 * probed
    summary = results["summary"]
    assert [(row["model"], row["seeds"]) for row in summary] == [(m, SEEDS) for m in MODELS]
    for row in summary:
        assert row["original"]["n"] == 2 and finite(row["original"]["std"])
        for entry in row["methods"].values():
            expected = 100 * (row["original"]["mean"] - entry["test_mse"]["mean"]) / row["original"]["mean"]
            assert entry["change_vs_original_pct"] == pytest.approx(expected)
    stages = {record["stage"] for record in results["wall_time"]["stages"]}
    assert "mnist-5k/sparse/seed1/attack/mine-strong" in stages
    assert "mnist-5k/dense/seed0/same-steps-control" in stages


def test_metrics_match_an_independent_recomputation(tiny_conv: Path) -> None:
    out = tiny_conv
    (run,) = read_results(out)["runs"]
    assert set(run["methods"]) == set(CONV_METHODS)
    model = build_model("conv-ae", (1, 28, 28))
    model.load_state_dict(torch.load(out / "models" / "mnist-5k-conv-seed1.pt", weights_only=False)["state_dict"])
    x = _test_split()
    with torch.no_grad():
        mse = float(((model.eval()(x) - x) ** 2).mean())
    assert run["original"]["test_mse"] == pytest.approx(mse, rel=1e-5)
    for key, entry in run["methods"].items():
        cache = UAECache(out / "cache" / f"mnist-5k-conv-seed1-{key}.h5")
        assert len(cache) == TRAIN_ROWS
        assert entry["asr_pct"] == pytest.approx(100 * float(cache.success.double().mean()))
        assert entry["probe"]["probe_rows_differing_from_cache"] == 0
    assert run["methods"]["init-only"]["probe"]["moved_linf"] == 0.0
    # Both start from the same delta_0; MINE-UAE rows whose start already has f_x = 0 keep it (the
    # two-row probe may hold only such rows), but over the whole cache the optimisation moves some.
    rows = list(range(TRAIN_ROWS))
    mine_rows, _ = UAECache(out / "cache" / "mnist-5k-conv-seed1-mine.h5").rows(rows)
    init_rows, _ = UAECache(out / "cache" / "mnist-5k-conv-seed1-init-only.h5").rows(rows)
    moved = (mine_rows - init_rows).flatten(1).abs().amax(dim=1)
    assert 0 < int((moved > 0).sum()) < TRAIN_ROWS
    assert_png(out / "grid-mnist-5k-conv.png", min_side=200)


def test_init_only_returns_the_attacks_starting_point(tiny: tuple[Path, str]) -> None:
    """steps=1: one evaluation of clip(x + delta_0), no step; delta_0 is the same glorot draw for
    any similarity term, so an L2-UAE with steps=1 must return the same images."""
    out, _ = tiny
    results = read_results(out)
    run = next(r for r in results["runs"] if r["model"] == "dense" and r["seed"] == 0)
    assert run["methods"]["init-only"]["probe"]["moved_linf"] == 0.0
    assert run["methods"]["mine"]["attack"]["steps"] == 3  # --dense-attack-steps (no convolution)
    cached, _ = UAECache(out / "cache" / "mnist-5k-dense-seed0-init-only.h5").rows(range(TRAIN_ROWS))
    model = build_model("dense-ae", (1, 28, 28))
    model.load_state_dict(torch.load(out / "models" / "mnist-5k-dense-seed0.pt", weights_only=False)["state_dict"])
    train = _train_split()
    x = torch.stack([train[i][0] for i in range(TRAIN_ROWS)])
    start = LpUAE(Reconstruction(model.eval()), preset="fast", steps=1, seed=0)(x).adversarial
    assert torch.allclose(cached, start, atol=1e-6)
    glorot = math.sqrt(6.0 / (28 * 28 + 28))  # Keras' limit for a (1, 28, 28, 1) variable
    assert float((cached - x).abs().max()) <= glorot + 1e-6
    # and the MINE-UAE with two iterations starts there but is a different attack
    two = MINEUAE(Reconstruction(model), preset="fast", steps=2, projections=8, seed=0)(x[:4])
    assert float(two.moved_linf.max()) > 0.0


def test_markdown_table_has_our_rows_beside_the_published_ones(tiny: tuple[Path, str]) -> None:
    out, printed = tiny
    table = (out / "results.md").read_text()
    assert table in printed  # the recipe prints the table
    rows = table_rows(table)
    main_rows = [row for row in rows if row[2].startswith(("ours", "paper"))]
    assert [row[2] for row in main_rows] == ["ours (2 seeds, 52 train rows)", "paper (MNIST)"] * 2
    assert all(len(row) == 5 + len(recipe.METHODS) + 1 for row in main_rows)
    sparse_paper = main_rows[1]
    assert sparse_paper[1] == "" and sparse_paper[3] == "0.00561" and sparse_paper[5] == "0.00243 (+56.7%)"
    assert sparse_paper[-1] == "100 / 99.18 / 54.1 / 63.95 / — / —"
    ours = main_rows[0]
    assert ours[:2] == ["mnist-5k (4,000-digit subset)", "sparse"]
    assert "±" in ours[3] and "(" in ours[4]  # mean ± std and the change in %
    detail = [row for row in rows if len(row) == 8 and row[2] in {m.label for m in recipe.METHODS.values()}]
    assert len(detail) == len(MODELS) * len(recipe.METHODS)


def test_grid_config_and_wall_time_files(tiny: tuple[Path, str]) -> None:
    out, _ = tiny
    for kind in MODELS:
        assert_png(out / f"grid-mnist-5k-{kind}.png", min_side=200)
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["epochs"] == 1  # the flag overrides the quick preset's 6
    assert config["preset"] == "fast" and config["datasets"] == ["mnist-5k"]  # from the quick preset
    log = (out / "wall_time.log").read_text().splitlines()
    assert any(line.startswith("mnist-5k/dense/seed0/train-clean\t") for line in log)
    assert log[-1].startswith("total\t")


def test_rerun_reuses_models_and_caches(tiny_conv: Path, tmp_path: Path) -> None:
    out = tiny_conv
    again = tmp_path / "again"
    shutil.copytree(out, again)
    cache = again / "cache" / "mnist-5k-conv-seed1-mine.h5"
    written = cache.stat().st_mtime_ns
    status = recipe.main([*TINY, "--out", str(again), "--models", "conv", "--seeds", "1", "--methods", "mine"])
    assert status == 0
    results = read_results(again)
    (run,) = results["runs"]
    assert run["original"]["reused_checkpoint"] is True
    assert cache.stat().st_mtime_ns == written
    (first,) = read_results(out)["runs"]
    assert run["methods"]["mine"]["asr_pct"] == first["methods"]["mine"]["asr_pct"]
    assert run["methods"]["mine"]["test_mse"] == pytest.approx(first["methods"]["mine"]["test_mse"], rel=1e-6)


def test_rerun_with_other_settings_rebuilds_the_caches(tiny_conv: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    shutil.copytree(tiny_conv, again)
    status = recipe.main(
        [
            *TINY,
            "--out",
            str(again),
            "--models",
            "conv",
            "--seeds",
            "1",
            "--methods",
            "ga-0.01",
            "--train-rows",
            "56",
        ]
    )
    assert status == 0
    (run,) = read_results(again)["runs"]
    assert run["train_size"] == 56 and run["original"]["reused_checkpoint"] is False
    assert len(UAECache(again / "cache" / "mnist-5k-conv-seed1-ga-0.01.h5")) == 56


def test_failed_uaes_can_be_dropped(tmp_path: Path) -> None:
    status = recipe.main(
        [
            *TINY,
            "--out",
            str(tmp_path),
            "--models",
            "dense",
            "--seeds",
            "0",
            "--methods",
            "ga-0.01",
            "--failed",
            "drop",
        ]
    )
    assert status == 0
    results = read_results(tmp_path)
    entry = results["runs"][0]["methods"]["ga-0.01"]
    successful = int(UAECache(tmp_path / "cache" / "mnist-5k-dense-seed0-ga-0.01.h5").success.sum())
    assert entry["kept_uaes"] == successful
    assert entry["augmented_size"] == TRAIN_ROWS + successful
    assert entry["steps"] == math.ceil((TRAIN_ROWS + successful) / 100)
    assert "Failed UAEs: drop" in (tmp_path / "results.md").read_text()


def test_dense_models_get_their_own_attack_steps() -> None:
    parser = recipe.build_parser()
    quick = _config.parse_config(parser, ["--quick"], recipe.QUICK)
    dense = Reconstruction(build_model("dense-ae", (1, 28, 28)))
    conv = Reconstruction(build_model("conv-ae", (1, 28, 28)))
    assert attack_steps(dense, quick) == 40 and attack_steps(conv, quick) == 5
    mine = recipe.METHODS["mine"].build(dense, quick, 0)
    assert mine.settings.steps == 40 and mine.projection_dim == 32 and mine.projections == 100
    assert recipe.METHODS["mine-strong"].build(conv, quick, 0).settings.steps == 5
    assert recipe.METHODS["l2"].build(dense, quick, 0).settings.steps == 40
    plain = _config.parse_config(parser, ["--attack-steps", "7", "--strong-steps", "9"], recipe.QUICK)
    assert attack_steps(dense, plain) == 7 and attack_steps(dense, plain, strong=True) == 9


def test_yaml_config_sits_between_the_quick_preset_and_the_flags(tmp_path: Path) -> None:
    config = tmp_path / "run.yaml"
    config.write_text("epochs: 7\nattack-steps: 3\nmodels: [conv]\n")
    parser = recipe.build_parser()
    args = _config.parse_config(parser, ["--quick", "--config", str(config), "--epochs", "2"], recipe.QUICK)
    assert args.epochs == 2  # flag > YAML
    assert args.attack_steps == 3 and args.models == ["conv"]  # YAML > quick
    assert args.train_rows == recipe.QUICK["train_rows"]  # quick > defaults
    defaults = _config.parse_config(parser, [], recipe.QUICK)
    assert defaults.preset == "paper" and defaults.epochs is None and defaults.models == list(MODEL_KINDS)
    config.write_text("epoch: 7\n")
    with pytest.raises(SystemExit):
        _config.parse_config(recipe.build_parser(), ["--config", str(config)], recipe.QUICK)
    config.write_text("- just\n- a list\n")
    with pytest.raises(SystemExit):
        _config.parse_config(recipe.build_parser(), ["--config", str(config)], recipe.QUICK)


def test_svhn_falls_back_to_cifar10_and_missing_sets_are_listed(data_root: Path, tmp_path: Path) -> None:
    if (data_root / "svhn.npz").exists():
        pytest.skip("SVHN is present: no stand-in needed")
    usable, skipped = recipe.resolve_datasets(["svhn", "mnist-5k"], data_root)
    assert [(d.name, d.published) for d in usable] == [("cifar10", "SVHN"), ("mnist-5k", "MNIST")]
    assert "stand-in for SVHN" in usable[0].label
    usable, skipped = recipe.resolve_datasets(["svhn", "fashion-mnist"], tmp_path)
    assert usable == [] and [s["dataset"] for s in skipped] == ["svhn", "fashion-mnist"]


def test_help_runs_as_a_script() -> None:
    done = subprocess.run(
        [PYTHON, str(REPO / "recipes" / "autoencoders.py"), "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO.parent,
    )
    assert done.returncode == 0, done.stderr
    for flag in ("--quick", "--config", "--out", "--failed", "--methods", "--seeds"):
        assert flag in done.stdout


@pytest.mark.slow
def test_quick_mode_end_to_end(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            PYTHON,
            str(REPO / "recipes" / "autoencoders.py"),
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
    assert len(results["summary"]) == len(MODEL_KINDS)
    assert len(results["runs"]) == len(MODEL_KINDS) * len(recipe.QUICK["seeds"])
    assert "| mnist-5k (4,000-digit subset) | conv | ours (2 seeds, 400 train rows) |" in done.stdout
    for kind in MODEL_KINDS:
        assert_png(tmp_path / f"grid-mnist-5k-{kind}.png", min_side=200)


def test_paired_table_against_the_same_steps_control(tiny: tuple[Path, str]) -> None:
    out, _ = tiny
    results = read_results(out)
    for row in results["summary"]:
        runs = [r for r in results["runs"] if r["model"] == row["model"]]
        for key in recipe.METHODS:
            expected = paired_difference(
                [r["methods"][key]["test_mse"] for r in runs],
                [r["same_steps"]["test_mse"] for r in runs],
            )
            found = row["methods"][key]["paired_vs_same_steps"]
            assert found["mean"] == pytest.approx(expected.mean) and found["mde"] == pytest.approx(expected.mde)
            assert found["verdict"] == expected.verdict
    table = (out / "results.md").read_text()
    assert "### Paired difference of the test error, method − same-steps control, over seeds" in table
    paired = [row for row in table_rows(table) if len(row) == 2 + len(recipe.METHODS) and "MDE" in row[2]]
    assert [row[1] for row in paired] == MODELS
    assert all(cell.endswith(("helps", "hurts", "no detectable effect")) for row in paired for cell in row[2:])
