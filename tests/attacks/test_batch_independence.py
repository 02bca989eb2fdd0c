"""Every attack gives bit-identical rows in any batch size, with 1 or 2 threads and other CPU kernels.

The full-batch results are computed here and saved; subprocesses
(:mod:`tests.attacks.batch_worker`) attack the same rows again in batches of
1, 2, an odd size and the full size, and as a 3-row slice, with 1 and 2 torch
threads and under kernel-selection variables (``ATEN_CPU_CAPABILITY``,
``MKL_CBWR``) that change the code a different CPU would run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.attacks.batch_worker import attack_rows, build_models, cases, result_fields
from tests.helpers import digits

REPO = Path(__file__).resolve().parents[2]

# (threads, extra environment). The full batch is computed here with 1 thread, so the runs
# without kernel variables also check that 2 threads and another process give the same bits.
DEFAULT_RUNS = [
    (1, {}),
    (2, {}),
    (1, {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "COMPATIBLE"}),
]
SLOW_RUNS = [
    (1, {"ATEN_CPU_CAPABILITY": "default"}),
    (2, {"ATEN_CPU_CAPABILITY": "default"}),
    (1, {"ATEN_CPU_CAPABILITY": "avx2"}),
    (2, {"ATEN_CPU_CAPABILITY": "avx2"}),
    (1, {"MKL_CBWR": "COMPATIBLE"}),
    (2, {"MKL_CBWR": "COMPATIBLE", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}),
]
SAME_KERNELS = ("ATEN_CPU_CAPABILITY", "MKL_CBWR", "MKL_ENABLE_INSTRUCTIONS")


def _save_cases(path: Path, rows: int, scale: int) -> None:
    """Full-batch results of every case on ``rows`` digits, with the models and data, to ``path``."""
    models = build_models()
    x = digits()[0][:rows]
    with torch.no_grad():
        y = models["classifier"](x).argmax(dim=1)
    y[1] = (y[1] + 1) % 5  # one row the classifier already gets wrong
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        expected = {
            case: result_fields(attack_rows(factory, models, x, y, None)) for case, factory in cases(scale).items()
        }
    finally:
        torch.set_num_threads(threads)
    states = {name: model.state_dict() for name, model in models.items()}
    torch.save({"x": x, "y": y, "states": states, "expected": expected, "scale": scale}, path)


def _run_worker(path: Path, threads: int, env: dict[str, str]) -> dict[str, list]:
    environment = {k: v for k, v in os.environ.items() if k not in SAME_KERNELS}
    # Passive OpenMP waits: spinning threads on a shared, busy CPU make a 2-thread run ~6x slower.
    environment.update(env, OMP_NUM_THREADS=str(threads), OMP_WAIT_POLICY="PASSIVE", PYTHONPATH=str(REPO))
    done = subprocess.run(
        [sys.executable, "-m", "tests.attacks.batch_worker", str(path), str(threads)],
        cwd=REPO,
        env=environment,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _check_runs(tmp_path: Path, rows: int, scale: int, runs: list[tuple[int, dict[str, str]]]) -> None:
    path = tmp_path / "cases.pt"
    _save_cases(path, rows, scale)
    for threads, env in runs:
        report = _run_worker(path, threads, env)
        label = f"threads={threads} {env}"
        assert report["rows"] == [], f"{label}: batched rows differ from the full batch: {report['rows']}"
        if not any(key in env for key in SAME_KERNELS):
            # Same kernels, other thread count and process: the very same bits as here.
            assert report["process"] == [], f"{label}: full batch differs from this process: {report['process']}"


def test_every_attack_is_bitwise_batch_size_independent(tmp_path):
    _check_runs(tmp_path, rows=12, scale=1, runs=DEFAULT_RUNS)


@pytest.mark.slow
def test_every_attack_is_bitwise_batch_size_independent_larger(tmp_path):
    _check_runs(tmp_path, rows=20, scale=2, runs=DEFAULT_RUNS + SLOW_RUNS)
