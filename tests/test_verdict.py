"""benchmarks/verdict.py: every arm of a tiny conv-AE verdict on MNIST-5k, and its paired summary."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from benchmarks import verdict
from uae_augment import UAECache
from uae_augment.statistics import paired_difference

SEEDS = (0, 1)
ARMS = [arm for arm in verdict.ARMS if arm != "mine-strong"]  # strong: the same path as mine-fast, another preset
TINY = [
    "--model",
    "conv",
    "--dataset",
    "mnist-5k",
    "--train-rows",
    "100",
    "--test-rows",
    "50",
    "--epochs",
    "1",
    "--attack-steps",
    "2",
    "--seeds",
    *map(str, SEEDS),
    "--arms",
    *ARMS,
]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    out, results = tmp_path_factory.mktemp("verdict"), tmp_path_factory.mktemp("results")
    assert verdict.main([*TINY, "--out", str(out)]) == 0
    assert verdict.main(["--summarise", "--out", str(out), "--results", str(results)]) == 0
    return out, results


@pytest.mark.slow
def test_every_arm_of_every_seed_is_recorded_with_the_control_steps(run):
    out, _ = run
    for seed in SEEDS:
        record = json.loads((out / "conv" / f"seed{seed}.json").read_text())
        assert set(record["arms"]) == set(ARMS)
        assert record["arms"]["original"]["steps"] == 1  # 100 rows, batch 100
        assert {entry["steps"] for arm, entry in record["arms"].items() if arm != "original"} == {2}
        assert record["arms"]["mine-fast"]["attack_steps"] == 2 and record["arms"]["init-only"]["attack_steps"] == 1


@pytest.mark.slow
@pytest.mark.parametrize("arm", ["l2-matched", "cos-matched"])
def test_matched_arms_match_that_seeds_mine_uaes(run, arm):
    out, _ = run
    cache = out / "conv" / "cache"
    for seed in SEEDS:
        reference, _ = UAECache(cache / f"seed{seed}-mine-fast.h5").rows(range(100))
        matched, _ = UAECache(cache / f"seed{seed}-{arm}.h5").rows(range(100))
        clean = verdict.AutoencoderTask(
            verdict.Settings("conv", "mnist-5k", 100, 50, 1, 2), None, torch.device("cpu")
        ).train
        x = torch.stack([clean[i][0] for i in range(100)])
        distance = (matched - x).flatten(1).norm(dim=1)
        assert torch.allclose(distance, (reference - x).flatten(1).norm(dim=1), rtol=1e-4)
        assert not torch.equal(matched, reference)


@pytest.mark.slow
def test_summary_is_the_paired_difference_against_the_control(run):
    out, results = run
    summary = json.loads((results / "verdict.json").read_text())["models"]["conv-100"]
    records = [json.loads((out / "conv" / f"seed{s}.json").read_text()) for s in SEEDS]
    assert summary["better"] == "lower" and summary["settings"]["train_rows"] == 100
    for arm in ARMS:
        entry = summary["arms"][arm]
        assert entry["seeds"] == list(SEEDS)
        if arm == verdict.CONTROL:
            assert "vs_control" not in entry
            continue
        expected = paired_difference(
            [r["arms"][arm]["test_mse"] for r in records],
            [r["arms"][verdict.CONTROL]["test_mse"] for r in records],
        )
        assert entry["vs_control"]["ci_low"] == pytest.approx(expected.ci_low)
        assert entry["vs_control"]["verdict"] == expected.verdict
    table = (results / "verdict.md").read_text()
    assert "### conv (mnist-5k, 100 train rows, 50 test rows, 1 epochs, attack T = 2" in table
    assert table.count("| MINE-UAE (fast) | 2 |") == 1


@pytest.mark.slow
def test_a_rerun_skips_finished_arms_and_refuses_other_settings(run):
    out, _ = run
    path = out / "conv" / "seed0.json"
    before = path.read_text()
    assert verdict.main([*TINY[: -len(ARMS) - 1], "--arms", "original", "l2-uae", "--out", str(out)]) == 0
    assert path.read_text() == before
    with pytest.raises(SystemExit, match="other settings"):
        verdict.main([*TINY, "--epochs", "2", "--out", str(out)])


def test_summary_of_written_records(tmp_path):
    """The paired summary of hand-written records: SimCLR accuracy (higher is better), ASR and T."""
    control = [20.0, 22.0, 21.0, 19.0, 23.0]
    arm = [c + d for c, d in zip(control, [1.0, 2.0, 1.5, 2.5, 1.0])]
    settings = {
        "dataset": "cifar10",
        "train_rows": 128,
        "test_rows": 500,
        "epochs": 6,
        "attack_steps": 3,
    }
    for seed in range(5):
        record = {
            "seed": seed,
            "settings": settings,
            "arms": {
                verdict.CONTROL: {"linear_test_acc": control[seed], "cpu_s": 10.0},
                "mine-fast": {
                    "linear_test_acc": arm[seed],
                    "asr_pct": 50.0 + seed,
                    "attack_steps": 3,
                    "cpu_s": 20.0,
                },
                "init-only": {"linear_test_acc": control[seed] + 0.5 * (seed % 2), "cpu_s": 0.0},
            },
        }
        (tmp_path / "simclr").mkdir(exist_ok=True)
        (tmp_path / "simclr" / f"seed{seed}.json").write_text(json.dumps(record))
    models = verdict.summarise(tmp_path)
    assert list(models) == ["simclr-128"] and models["simclr-128"]["better"] == "higher"
    entry = models["simclr-128"]["arms"]["mine-fast"]
    assert entry["vs_control"]["mean"] == pytest.approx(1.6) and entry["vs_control"]["verdict"] == "helps"
    assert entry["asr_pct"]["mean"] == pytest.approx(52.0) and entry["attack_steps"] == 3
    assert models["simclr-128"]["total_cpu_s"] == pytest.approx(150.0)
    (duel,) = models["simclr-128"]["head_to_head"].values()
    expected = verdict.paired_difference(arm, [c + 0.5 * (i % 2) for i, c in enumerate(control)], better="higher")
    assert (duel["arm"], duel["rival"]) == ("mine-fast", "init-only") and duel["mean"] == pytest.approx(expected.mean)
    assert duel["verdict"] == expected.verdict
    table = verdict.markdown(models)
    # init only: differences 0, .5, 0, .5, 0: mean 0.2, sd 0.274, half width 2.776 * 0.274 / sqrt 5 = 0.340
    # mine-fast: differences 1, 2, 1.5, 2.5, 1: mean 1.6, sd 0.652, half width t(0.975, 4) 2.776 * 0.652 / sqrt 5 = 0.809
    assert "| MINE-UAE (fast) | 5 | 22.60 ± 1.39 | +1.60 [+0.79, +2.41] | 0.005 |" in table
    assert "| helps | 52.0 | 3 |" in table
    assert (
        "| simclr: cifar10, 128 rows, 6 epochs, 5 seeds (linear acc. %) | **no detectable effect** +0.20 [-0.14, +0.54], MDE 0.46 | — | — | — | **helps** +1.60 [+0.79, +2.41], MDE 1.10 | — |"
        in table
    )


def test_records_of_one_seed_join_across_folders(tmp_path):
    settings = {
        "dataset": "mnist",
        "train_rows": 100,
        "test_rows": 50,
        "epochs": 1,
        "attack_steps": 2,
    }
    main, late = tmp_path / "main", tmp_path / "late"
    for folder, arms in (
        (main, {"original": 0.5, verdict.CONTROL: 0.4, "mine-fast": 0.39}),
        (late, {"original": 0.5, "mine-strong": 0.38}),
    ):
        (folder / "conv").mkdir(parents=True)
        record = {
            "seed": 0,
            "settings": settings,
            "arms": {a: {"test_mse": v} for a, v in arms.items()},
        }
        (folder / "conv" / "seed0.json").write_text(json.dumps(record))
    ((record,),) = verdict.merged_records(main, late).values()
    assert {a: e["test_mse"] for a, e in record["arms"].items()} == {
        "original": 0.5,
        verdict.CONTROL: 0.4,
        "mine-fast": 0.39,
        "mine-strong": 0.38,
    }
    conflicting = json.loads((late / "conv" / "seed0.json").read_text())
    conflicting["arms"]["original"]["test_mse"] = 0.51  # the clean model was not reproduced
    (late / "conv" / "seed0.json").write_text(json.dumps(conflicting))
    with pytest.raises(ValueError, match="original differs"):
        verdict.merged_records(main, late)
