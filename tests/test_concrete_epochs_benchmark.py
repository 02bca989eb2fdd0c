"""benchmarks/concrete_epochs.py runs end to end and counts the retry rule's tries from the curve."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "concrete_epochs.py"


def _module():
    sys.path.insert(0, str(SCRIPT.parent))
    spec = importlib.util.spec_from_file_location("concrete_epochs", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_retries_follow_the_doubling_rule():
    runs = [{"seed": 0, "epochs": e, "converged": c} for e, c in [(25, False), (50, False), (100, True), (200, True)]]
    rows = {row["first_try_epochs"]: row for row in _module().retries(runs, tries=3)}
    assert (rows[25]["retries"], rows[25]["epochs_trained"], rows[25]["converged"]) == (
        2,
        175,
        True,
    )
    assert (rows[100]["retries"], rows[100]["epochs_trained"]) == (0, 100)
    assert rows[200]["retries"] == 0
    runs = [{"seed": 0, "epochs": e, "converged": False} for e in (25, 50, 100)]
    rows = {row["first_try_epochs"]: row for row in _module().retries(runs, tries=3)}
    assert (rows[25]["retries"], rows[25]["epochs_trained"], rows[25]["converged"]) == (
        2,
        175,
        False,
    )  # tries spent
    assert rows[50]["retries"] is None and rows[50]["epochs_trained"] is None  # needs the unmeasured 200


def test_end_to_end(tmp_path):
    out = tmp_path / "c.json"
    completed = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--rows",
            "32",
            "--test-rows",
            "32",
            "--budgets",
            "1,2",
            "--seeds",
            "0",
            "--out",
            str(out),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    result = json.loads(out.read_text())
    assert [(r["epochs"], r["steps"], r["batch_size"]) for r in result["runs"]] == [
        (1, 2, 16),
        (2, 4, 16),
    ]
    for run in result["runs"]:
        assert 0 < run["mean_max_probability"] <= 1 and run["test_mse"] > 0 and 0 <= run["accuracy_pct"] <= 100
    assert [row["first_try_epochs"] for row in result["retries"]] == [1, 2]
