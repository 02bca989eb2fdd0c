"""The recipes' shared helpers (_config, _protocol, _report): configuration files, tables, statistics,
subsets, JSON, timing, and how every recipe imports them."""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

import pytest
import torch

import _config
import _protocol
import _report
import autoencoders
import concrete_autoencoder
from uae_augment import load_dataset

from .helpers import PYTHON, REPO, table_rows


@pytest.mark.parametrize("module", [autoencoders, concrete_autoencoder], ids=lambda m: m.RECIPE)
def test_shipped_yaml_configs_parse(module: object) -> None:
    path = REPO / "recipes" / "configs" / f"{module.RECIPE}_full.yaml"  # type: ignore[attr-defined]
    args = _config.parse_config(module.build_parser(), ["--config", str(path)], module.QUICK)  # type: ignore[attr-defined]
    assert args.preset == "paper" and args.seeds == [0, 1, 2] and args.epochs is None
    assert args.projections == 500 and args.failed == "keep" and args.quick is False


def test_markdown_table_round_trips_and_rejects_ragged_rows() -> None:
    table = _report.markdown_table(["a", "b"], [["1", "x | y"], ["2", "—"]])
    assert table.splitlines()[1] == "| --- | --- |"
    assert table_rows(table) == [["1", "x \\| y"], ["2", "—"]]
    with pytest.raises(ValueError, match="2 cells"):
        _report.markdown_table(["a", "b", "c"], [["1", "2"]])


def test_statistics_and_formatting() -> None:
    stat = _report.mean_std([1.0, 2.0, 3.0, float("nan")])
    assert stat == {"mean": 2.0, "std": 1.0, "n": 3}
    assert _report.mean_std([5.0]) == {"mean": 5.0, "std": 0.0, "n": 1}
    assert _report.mean_std([])["n"] == 0
    # the paper's MNIST sparse AE: 0.00561 -> 0.00243 is "+56.7%"
    assert _report.format_pct(_report.improvement_pct(0.00561, 0.00243)) == "+56.7%"
    assert _report.format_pct(_report.improvement_pct(0.00294, 0.00364)) == "-23.8%"
    assert math.isnan(_report.improvement_pct(0.0, 1.0))
    assert _report.format_stat(stat, 2) == "2.00 ± 1.00" and _report.format_stat({"mean": math.nan}) == "—"


def test_subset_rows_is_a_fixed_random_subset_not_a_prefix() -> None:
    train = load_dataset("mnist-5k")
    subset = _protocol.subset_rows(train, 200)
    again = _protocol.subset_rows(train, 200)
    assert len(subset) == 200 and subset.indices == again.indices  # type: ignore[attr-defined]
    assert subset.indices == sorted(set(subset.indices))  # type: ignore[attr-defined]
    labels = torch.tensor([subset[i][1] for i in range(len(subset))])
    assert len(labels.unique()) == 10  # the split is sorted by class: a prefix would hold one class
    assert _protocol.subset_rows(train, None) is train and _protocol.subset_rows(train, 10**6) is train
    with pytest.raises(ValueError):
        _protocol.subset_rows(train, 0)


def test_write_json_turns_non_finite_values_into_null(tmp_path: Path) -> None:
    path = _report.write_json(tmp_path / "r.json", {"a": math.nan, "b": [1.0, math.inf], "c": Path("x")})
    assert json.loads(path.read_text()) == {"a": None, "b": [1.0, None], "c": "x"}


def test_stage_timer_logs_every_stage_even_when_it_raises(tmp_path: Path) -> None:
    timer = _report.StageTimer(tmp_path / "wall_time.log")
    with timer.stage("first"):
        sum(range(10000))
    with pytest.raises(RuntimeError), timer.stage("second"):
        raise RuntimeError("boom")
    timer.close()
    lines = (tmp_path / "wall_time.log").read_text().splitlines()
    assert lines[0].startswith("# run started")
    assert [line.split("\t")[0] for line in lines[1:]] == ["first", "second", "total"]
    assert [r["stage"] for r in timer.records] == ["first", "second"]
    assert all(r["seconds"] >= 0 and r["cpu_s"] >= 0 for r in timer.records)


def test_dataset_available_checks_the_file_without_loading(tmp_path: Path) -> None:
    assert _protocol.dataset_available("mnist-5k", tmp_path)  # embedded: no file needed
    assert not _protocol.dataset_available("cifar10", tmp_path)
    (tmp_path / "cifar10.npz").write_bytes(b"not read")  # existence is what counts; load_dataset validates
    assert _protocol.dataset_available("cifar10", tmp_path)
    with pytest.raises(ValueError, match="unknown data set"):
        _protocol.dataset_available("no-such-set", tmp_path)


class _RowsStub:
    """The one cache method ``probe`` reads."""

    def rows(self, positions):
        return torch.zeros(len(positions), 1, 2, 2), None


def test_probe_runs_the_attack_on_its_models_device():
    # a victim on the meta device stands in for one on a GPU: before, probe passed the CPU batch
    # and the attack stopped with "... is on meta but x is on cpu"
    from uae_augment import GaussianNoise, Reconstruction

    noise = GaussianNoise(Reconstruction(torch.nn.Conv2d(1, 1, 1)))

    class SpyAttack:
        def __init__(self):
            self.victim = torch.nn.Linear(2, 2, device="meta")
            self.seen = []

        def models(self):
            return [self.victim]

        def __call__(self, x, y=None, *, index=None):
            self.seen.append(x.device)  # a meta victim: x must arrive on meta, not on CPU
            return noise(torch.rand(x.shape), index=index)

    train = torch.utils.data.TensorDataset(torch.rand(6, 1, 2, 2), torch.zeros(6, dtype=torch.long))
    attack = SpyAttack()
    x, result, stats = _protocol.probe(attack, train, 3, _RowsStub())
    assert attack.seen == [torch.device("meta")]
    assert x.device.type == "cpu" and result.adversarial.device.type == "cpu" and stats["probe_rows"] == 3


RECIPES = sorted(path.name for path in (REPO / "recipes").glob("[!_]*.py"))


def test_recipes_use_only_the_public_api_and_no_path_edits() -> None:
    import ast

    for path in sorted((REPO / "recipes").glob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("uae_augment"):
                assert not any(part.startswith("_") for part in node.module.split(".")), (
                    path.name,
                    node.module,
                )
                assert not any(alias.name.startswith("_") for alias in node.names), (
                    path.name,
                    node.module,
                )
            if isinstance(node, ast.Attribute) and node.attr in ("insert", "append"):
                assert ast.unparse(node.value) != "sys.path", path.name


def test_brief_summarises_a_training_record() -> None:
    history = {
        "steps": 6,
        "epochs": 3,
        "seconds": 2.345,
        "losses": [0.9, 0.4],
        "reused": True,
        "step_losses": [1.0, 0.5],
        "tries": 2,
    }
    assert _protocol.brief(history) == {
        "steps": 6,
        "epochs": 3,
        "train_s": 2.35,
        "final_loss": 0.4,
        "reused_checkpoint": True,
    }
    extended = _protocol.brief(history, ("step_losses", "tries", "absent"))
    assert extended["step_losses"] == [1.0, 0.5] and extended["tries"] == 2 and "absent" not in extended
    assert math.isnan(_protocol.brief({**history, "losses": []})["final_loss"])


@pytest.mark.parametrize("script", RECIPES)
def test_every_recipe_runs_as_a_script_from_the_repository_root(script: str) -> None:
    done = subprocess.run(
        [PYTHON, f"recipes/{script}", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"usage: {script}")
    if script != "example.py":  # the one-page example keeps to its few flags
        assert "--quick" in done.stdout and "--device" in done.stdout


def test_paired_vs_control_and_its_cell() -> None:
    assert _report.paired_vs_control([0.1], [0.2]) is None  # one seed: no comparison
    assert _report.format_paired(None) == "—"
    comparison = _report.paired_vs_control([0.10, 0.12, 0.11], [0.13, 0.14, 0.15])
    assert comparison is not None and comparison["verdict"] == "helps" and comparison["n"] == 3
    assert _report.format_paired(comparison, 3) == f"-0.030 [-0.055, -0.005], MDE {comparison['mde']:.3f}: helps"
    accuracy = _report.paired_vs_control([50.0, 52.0, 51.0], [53.0, 54.0, 55.0], better="higher")
    assert accuracy is not None and accuracy["verdict"] == "hurts"
    constant = _report.paired_vs_control([1.5, 2.5], [1.0, 2.0])
    assert constant is not None and "zero variance" in constant["error"]
    assert _report.format_paired(constant) == "undefined (zero variance)"
