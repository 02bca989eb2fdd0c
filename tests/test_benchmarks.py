"""The benchmark scripts run end to end (tiny settings, real subprocesses) and write their JSON.

Timings are not checked (they depend on the machine); the JSON's structure, its
internal consistency and the cost model's parameter count are.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from uae_augment.mine import PerSampleMINE

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = REPO / "benchmarks"


def _run(script: str, *args: str, out: Path, env: dict[str, str] | None = None) -> dict:
    completed = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *args, "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env=env,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    written = json.loads(out.read_text())
    assert json.loads(completed.stdout) == written  # stdout carries the same JSON
    return written


@pytest.mark.parametrize(
    "script",
    [
        "attack_speed.py",
        "preset_tradeoff.py",
        "estimate_mi_accuracy.py",
        "draw_cost.py",
        "precompute_throughput.py",
        "fit_kernel.py",
        "conv_layout.py",
    ],
)
def test_help(script):
    completed = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0 and "--out" in completed.stdout


def test_draw_cost_end_to_end(tmp_path):
    result = _run(
        "draw_cost.py",
        "--batch",
        "2",
        "--size",
        "6",
        "--hidden",
        "8",
        "--maps",
        "4",
        "--repeats",
        "1",
        out=tmp_path / "draws.json",
    )
    one = sum(
        p.numel()
        for p in PerSampleMINE((6, 6), seed=0, index=torch.arange(1), count=4, lr=1e-3, hidden=8).network.parameters()
    )
    assert result["parameter_bytes_per_batch"] == 2 * 4 * one
    for kind in ("host_generators", "counter_streams"):
        assert result[kind]["init_cpu_s"] >= 0 and result[kind]["permutations_cpu_s_per_iteration"] >= 0


def test_attack_speed_end_to_end(tmp_path):
    result = _run(
        "attack_speed.py",
        "--iterations",
        "1",
        "--mine-steps",
        "1",
        "--batch-sizes",
        "1",
        "--reference-images",
        "1",
        "--preset-images",
        "2",
        "--presets",
        "fast",
        "--train-rows",
        "128",
        "--copy-mb",
        "8",
        "--matmul-size",
        "128",
        "--extrapolate-to",
        "5",
        "--threads",
        "1",
        out=tmp_path / "speed.json",
    )
    assert {"settings", "machine", "victim", "roofline", "configurations", "goals"} <= result.keys()
    assert result["settings"]["measured_iterations"] == 1 and result["settings"]["extrapolated_to"] == 5
    machine_keys = {"load_average_at_start", "torch_threads", "torch_cpu_capability", "high_load", "wall_s"}
    assert machine_keys <= result["machine"].keys()
    assert result["roofline"]["peaks"]["copy_GBps"] > 0 and result["roofline"]["peaks"]["matmul_GFLOPps"] > 0
    rows = {row["name"]: row for row in result["configurations"]}
    assert list(rows) == ["reference", "paper_B1", "fast"]
    for row in rows.values():
        assert row["s_per_image_extrapolated"] == pytest.approx(
            row["setup_and_one_evaluation_s_per_image"] + 4 * row["s_per_iteration_per_image"],
            abs=2e-3,
        )
        assert row["peak_rss_MB"] > 0 and row["mine_steps"] == 1
        assert {
            "achieved_GBps",
            "achieved_GFLOPps",
            "lower_bound_s_per_image",
            "bound",
            "peaks_in_this_process",
        } <= row["roofline"].keys()
    assert rows["reference"]["speedup_vs_reference"] == 1.0
    assert rows["fast"]["statistics_hidden"] is None and rows["paper_B1"]["statistics_hidden"] == 512
    assert {"paper_batched_at_least_2x_reference", "fast_at_least_30x_reference"} <= result["goals"].keys()


def _attack_speed_module():
    sys.path.insert(0, str(BENCHMARKS))  # attack_speed imports its sibling _common
    try:
        spec = importlib.util.spec_from_file_location("attack_speed", BENCHMARKS / "attack_speed.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(BENCHMARKS))
    return module


@pytest.mark.parametrize("hidden", [512, None])
def test_cost_model_matches_the_engine(hidden):
    """Parameters and FLOPs of the roofline model against the engine itself (torch's FLOP counter)."""
    iteration_cost = _attack_speed_module().iteration_cost
    mine = PerSampleMINE((28, 28), seed=0, index=torch.arange(1), count=16, lr=1e-3, hidden=hidden)
    network = mine.network
    u, v = torch.rand(1, 16, 28, 28), torch.rand(1, 16, 28, 28)
    permutation = mine.permutations(1)[0]
    with FlopCounterMode(display=False) as mine_step:
        network.ascent_gradients(u, v, permutation)
    delta = v.clone().requires_grad_(True)
    with FlopCounterMode(display=False) as delta_step:  # the attack's MI gradient w.r.t. v
        torch.autograd.grad(mine.attack_estimate(u, delta, permutation).sum(), delta)
    cost = iteration_cost(16, (28, 28), hidden, mine_steps=3)
    assert cost["params_per_sample"] == sum(p.numel() for p in network.parameters())
    assert cost["mine_step_flops"] == pytest.approx(mine_step.get_total_flops(), rel=1e-3)
    assert cost["flops"] == pytest.approx(3 * mine_step.get_total_flops() + delta_step.get_total_flops(), rel=1e-3)


def test_preset_tradeoff_end_to_end(tmp_path):
    result = _run(
        "preset_tradeoff.py",
        "--dataset",
        "mnist-5k",
        "--train-rows",
        "128",
        "--epochs",
        "1",
        "--images",
        "2",
        "--large-images",
        "4",
        "--steps",
        "2",
        "--mine-steps",
        "1",
        "--eval-steps",
        "3",
        out=tmp_path / "presets.json",
    )
    assert {
        "settings",
        "machine",
        "victim",
        "presets",
        "distances_between_presets",
        "asr_difference_points",
    } <= result.keys()
    presets = result["presets"]
    assert set(presets) == {"init", "paper", "fast", "strong"}
    assert presets["paper"]["images_attacked"] == 2 and presets["fast"]["images_attacked"] == 4
    for entry in presets.values():
        shared = entry["shared"]
        assert shared["n"] == 2 and 0.0 <= shared["asr"] <= 1.0 and entry["s_per_image"] > 0
        assert {
            "mean_attack_mi",
            "mean_evaluator_mi",
            "mean_linf",
            "mean_l2",
            "mean_moved_linf",
            "mean_moved_l2",
        } <= shared.keys()
    assert presets["init"]["shared"]["mean_moved_linf"] == 0.0  # the start is its own result
    distances = result["distances_between_presets"]
    for name in ("paper", "fast", "strong"):  # distance to the start == how far the attack moved
        assert distances[f"init_vs_{name}"]["mean_linf_per_image"] == pytest.approx(
            presets[name]["shared"]["mean_moved_linf"], abs=1e-5
        )
    asr = {name: presets[name]["shared"]["asr"] for name in presets}
    assert result["asr_difference_points"]["fast_minus_paper"] == pytest.approx(100 * (asr["fast"] - asr["paper"]))


def test_attack_speed_reports_kernel_time_and_runs_a_baseline_version(tmp_path):
    result = _run(
        "attack_speed.py",
        "--iterations",
        "1",
        "--mine-steps",
        "1",
        "--no-reference",
        "--batch-sizes",
        "",
        "--presets",
        "",
        "--fast-batch-sizes",
        "2",
        "--fast-images",
        "2",
        "--preset-images",
        "2",
        "--baseline-ref",
        "HEAD",
        "--pairs",
        "2",
        "--train-rows",
        "128",
        "--copy-mb",
        "8",
        "--matmul-size",
        "128",
        "--extrapolate-to",
        "5",
        "--threads",
        "1",
        out=tmp_path / "speed.json",
    )
    rows = {row["name"]: row for row in result["configurations"]}
    assert list(rows) == ["fast_B2_T1", "fast_B2_T1_baseline"] and result["baseline_ref"] == "HEAD"
    for row in rows.values():
        assert row["user_s_per_image"] > 0 and row["sys_s_per_image"] >= 0 and row["threads"] == 1
        assert 0 <= row["sys_fraction_of_cpu"] < 1
    assert rows["fast_B2_T1_baseline"]["speedup_cpu_s"] > 0 and rows["fast_B2_T1_baseline"]["kind"] == "baseline"
    pairs = rows["fast_B2_T1_baseline"]["pairs"]  # two alternating (this version, baseline) processes
    assert len(pairs) == 2 and all(pair["speedup_cpu_s"] > 0 and pair["cpu_s_per_image"] > 0 for pair in pairs)
    cpus = sorted(pair["cpu_s_per_image"] for pair in pairs)
    assert rows["fast_B2_T1"]["user_s_per_image"] + rows["fast_B2_T1"]["sys_s_per_image"] == pytest.approx(
        cpus[0], abs=2e-4
    )  # the median run of two: the lower one
    worktrees = subprocess.run(["git", "worktree", "list"], capture_output=True, text=True, check=True).stdout
    assert "attack_speed_" not in worktrees  # the baseline's worktree is removed again


def test_mi_shape_end_to_end(tmp_path, data_root):
    env = {**os.environ, "UAE_DATA_ROOT": str(data_root), "OMP_NUM_THREADS": "1"}
    completed = subprocess.run(
        [
            sys.executable,
            str(BENCHMARKS / "mi_shape.py"),
            "--quick",
            "--models",
            "dense",
            "--out",
            str(tmp_path / "m.json"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env=env,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    result = json.loads((tmp_path / "m.json").read_text())
    record = result["models"]["dense"]
    assert set(record["methods"]) == {"init", "fast", "strong", "l2", "gauss_l2", "cos_matched"}
    strong, gauss, cos = (record["methods"][m]["rows"] for m in ("strong", "gauss_l2", "cos_matched"))
    # the controls are matched to the strong UAEs row by row
    assert gauss["l2"] == pytest.approx(strong["l2"], rel=1e-3) and cos["cos"] == pytest.approx(strong["cos"], abs=1e-4)
    differences = record["paired_differences"]["1001"]["strong-cos_matched"]
    assert differences["n"] == 4 and differences["ci95"][0] <= differences["mean"] <= differences["ci95"][1]
    assert record["evaluator_noise"]["pairs"] == 6 * 2
    assert (tmp_path / "mi_shape_dense.png").stat().st_size > 0


@pytest.mark.slow
def test_precompute_throughput_end_to_end(tmp_path, data_root):
    result = _run(
        "precompute_throughput.py",
        "--rows",
        "16",
        "--steps",
        "2",
        "--processes",
        "1,2",
        "--paper-rows",
        "0",
        "--train-rows",
        "32",
        out=tmp_path / "precompute.json",
        env={**os.environ, "UAE_DATA_ROOT": str(data_root)},  # the 60,000-row MNIST split
    )
    rows = {row["name"]: row for row in result["configurations"]}
    assert list(rows) == ["fast_P1", "fast_P2"]
    assert len(rows["fast_P2"]["ranks"]) == 2 and {r["rank"] for r in rows["fast_P2"]["ranks"]} == {
        0,
        1,
    }
    for row in rows.values():
        assert row["rows"] == 16 and row["attack_iterations"] == 2
        assert 0 <= row["sys_fraction_of_cpu"] < 1 and row["img_per_s_idle_cores"] > 0
        assert row["projected_60k_wall_h_idle_cores"] == pytest.approx(
            60_000 / row["img_per_s_idle_cores"] / 3600, abs=0.0051
        )  # rounded to 0.01 h


def test_fit_kernel_end_to_end(tmp_path):
    from uae_augment import _heap

    result = _run(
        "fit_kernel.py",
        *("--train-rows", "100", "--epochs", "1", "--fits", "2", "--pairs", "1"),
        out=tmp_path / "fit_kernel.json",
    )
    retained, glibc = result["processes"]["retained"], result["processes"]["glibc"]
    assert len(retained) == len(glibc) == 1 and len(retained[0]["fits"]) == 2
    expected = _heap.DEFAULT_RETENTION if _heap._glibc() is not None else None
    assert retained[0]["heap_retention"] == expected and glibc[0]["heap_retention"] is None
    for arm in ("retained", "glibc"):
        summary = result["summary"][arm]
        assert summary["first_fit"]["fits"] == 1 and summary["later_fits"]["fits"] == 1
        assert 0 <= summary["later_fits"]["kernel_share"] < 1
        fit = result["processes"][arm][0]["fits"][1]
        assert fit["kernel_share"] == pytest.approx(fit["sys_s"] / (fit["user_s"] + fit["sys_s"]), abs=1e-3)


def test_conv_layout_end_to_end(tmp_path):
    result = _run(
        "conv_layout.py",
        *("--batch", "3", "--iterations", "2", "--pairs", "2", "--classifier-batch", "5"),
        out=tmp_path / "layout.json",
    )
    assert set(result["runs"]) == {"channels_last", "contiguous"}
    for runs in result["runs"].values():
        assert len(runs["victim_ms"]) == len(runs["attack_cpu_s_per_image"]) == len(runs["train_step_ms"]) == 2
        assert min(runs["victim_ms"]) > 0 and min(runs["train_step_ms"]) > 0
    medians = result["medians"]
    ratio = medians["contiguous"]["victim_ms"] / medians["channels_last"]["victim_ms"]
    assert result["contiguous_over_channels_last"]["victim_ms"] == pytest.approx(ratio, abs=1e-3)
    # the same weights in two layouts: the same function up to float32 rounding
    assert result["max_abs_difference"]["input_gradient"] < 1e-3
    assert set(result["classifiers"]) == {"CWClassifier (cw_mnist)", "LeNet"}
    for figures in result["classifiers"].values():
        assert all(
            len(runs["input_gradient_ms"]) == len(runs["train_step_ms"]) == 2 for runs in figures["runs"].values()
        )
        assert set(figures["contiguous_over_channels_last"]) == {"input_gradient_ms", "train_step_ms"}
