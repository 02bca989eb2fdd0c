"""Attacks the same rows in several batch sizes and compares them bit for bit (run as a subprocess).

``python -m tests.attacks.batch_worker CASES_FILE THREADS`` loads the models,
rows and full-batch results that :mod:`tests.attacks.test_batch_independence`
saved, sets the torch thread count, attacks rows 3:6 again (with their global
indices) in batches of 1 and 2 and all rows in batches of 5 (5 + 5 + the rest)
and of the full size, and prints one JSON object:

* ``rows``: mismatches of any batched run against this process's own full batch;
* ``process``: fields in which this process's full batch differs from the saved one.

Each mismatch is ``[case, run, field, max |difference|]``.
"""

from __future__ import annotations

import copy
import json
import sys
from collections.abc import Callable
from dataclasses import fields
from typing import Any

import torch
from torch import nn

from uae_augment import (
    FGSM,
    IFGSM,
    LBFGS,
    MINEUAE,
    PGD,
    AttackResult,
    ClassifierMargin,
    GaussianNoise,
    LpUAE,
    MinMaxAttack,
    PenaltyAttack,
    Reconstruction,
)
from uae_augment.attacks.base import Attack
from uae_augment.models import ConvAutoencoder
from uae_augment.models.base import channels_last_

CLASSES = 5
SLICE = slice(3, 6)


def build_models(seed: int = 0) -> dict[str, nn.Module]:
    """Tiny seeded models on 1x8x8 inputs: a conv classifier, a conv and a dense autoencoder, and
    channels-last ones (the library's ``ConvAutoencoder`` as shipped, the classifier's weights in NHWC)."""
    torch.manual_seed(seed)
    models = {
        "classifier": nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, CLASSES)),
        "conv_ae": nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 1, 3, padding=1), nn.Sigmoid()),
        "dense_ae": nn.Sequential(
            nn.Flatten(),
            nn.Linear(64, 16),
            nn.Sigmoid(),
            nn.Linear(16, 64),
            nn.Sigmoid(),
            nn.Unflatten(1, (1, 8, 8)),
        ),
        "reference_conv_ae": ConvAutoencoder(in_channels=1, image_size=8),
    }
    models["classifier_channels_last"] = channels_last_(copy.deepcopy(models["classifier"]))
    return models


Factory = Callable[[dict[str, nn.Module], "int | None"], Attack]


def cases(scale: int) -> dict[str, Factory]:
    """Every attack on the tiny models; ``scale`` multiplies the step counts (1: default run)."""
    s = scale
    return {
        "mineuae_fast_conv": lambda m, b: MINEUAE(
            Reconstruction(m["conv_ae"]), preset="fast", steps=3 * s, seed=1, batch_size=b
        ),
        "mineuae_fast_dense": lambda m, b: MINEUAE(
            Reconstruction(m["dense_ae"]),
            preset="fast",
            steps=3 * s,
            projections=20,
            projection_dim=8,
            seed=1,
            batch_size=b,
        ),
        "mineuae_paper_conv": lambda m, b: MINEUAE(
            Reconstruction(m["conv_ae"]),
            preset="paper",
            steps=2 * s,
            mine_steps=s,
            seed=1,
            batch_size=b,
        ),
        "minmax_supervised_fast": lambda m, b: MinMaxAttack(
            ClassifierMargin(m["classifier"]),
            preset="fast",
            steps=4 * s,
            alpha=0.05,
            seed=1,
            batch_size=b,
        ),
        "minmax_supervised_paper": lambda m, b: MinMaxAttack(
            ClassifierMargin(m["classifier"]), steps=2 * s, alpha=0.05, seed=1, batch_size=b
        ),
        "penalty": lambda m, b: PenaltyAttack(
            ClassifierMargin(m["classifier"]),
            preset="fast",
            search_steps=2,
            steps=3 * s,
            mine_steps=1,
            alpha=0.05,
            seed=1,
            batch_size=b,
        ),
        "lp_uae": lambda m, b: LpUAE(Reconstruction(m["conv_ae"]), steps=4 * s, seed=1, batch_size=b),
        "gaussian_noise": lambda m, b: GaussianNoise(Reconstruction(m["dense_ae"]), 0.05, seed=1, batch_size=b),
        "mineuae_fast_reference_conv_ae": lambda m, b: MINEUAE(
            Reconstruction(m["reference_conv_ae"]), preset="fast", steps=3 * s, seed=1, batch_size=b
        ),
        "pgd_linf_channels_last": lambda m, b: PGD(
            m["classifier_channels_last"], 0.1, steps=3 * s, step_size=0.03, seed=1, batch_size=b
        ),
        "fgsm": lambda m, b: FGSM(m["classifier"], 0.1, batch_size=b),
        "ifgsm": lambda m, b: IFGSM(m["classifier"], 0.1, steps=3 * s, batch_size=b),
        "pgd_linf": lambda m, b: PGD(m["classifier"], 0.1, steps=3 * s, step_size=0.03, seed=1, batch_size=b),
        "pgd_l2": lambda m, b: PGD(m["classifier"], 0.5, steps=3 * s, step_size=0.2, norm="l2", seed=1, batch_size=b),
        "lbfgs": lambda m, b: LBFGS(m["classifier"], search_steps=2, max_iter=5 * s, batch_size=b),
    }


def attack_rows(
    factory: Factory,
    models: dict[str, nn.Module],
    x: torch.Tensor,
    y: torch.Tensor,
    batch_size: int | None,
    rows: slice = slice(None),
) -> AttackResult:
    """Attacks ``x[rows]`` (with their global indices) in chunks of ``batch_size``."""
    attack = factory(models, batch_size)
    index = torch.arange(x.shape[0])[rows]
    labels = y[rows] if attack.requires_labels else None
    return attack(x[rows], labels, index=index)


def result_fields(result: AttackResult) -> dict[str, torch.Tensor]:
    """The result's per-sample tensors by field name (traces left out)."""
    return {
        f.name: getattr(result, f.name)
        for f in fields(result)
        if not f.name.endswith("_trace") and getattr(result, f.name) is not None
    }


def differences(found: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> list[tuple[str, float]]:
    """(field, max |difference|) for every field whose bits differ (NaN payloads and -0 included)."""
    out = []
    for name, want in expected.items():
        got = found.get(name)
        if got is None or got.shape != want.shape or got.dtype != want.dtype:
            out.append((name, float("inf")))
        elif not torch.equal(_bits(got), _bits(want)):
            gap = (got.double() - want.double()).abs().nan_to_num(nan=float("inf")).max()
            out.append((name, float(gap)))
    return out


def _bits(tensor: torch.Tensor) -> torch.Tensor:
    views = {torch.float32: torch.int32, torch.float64: torch.int64, torch.float16: torch.int16}
    return tensor.view(views[tensor.dtype]) if tensor.dtype in views else tensor


# (rows, batch_size): 1-row and 2-row batches of a slice, 5-row batches (odd, with a short
# last chunk) and one full-size batch of all rows.
RUNS = ((SLICE, 1), (SLICE, 2), (slice(None), 5), (slice(None), 0))


def check(saved: dict[str, Any], threads: int) -> dict[str, list]:
    """Compares every case's batched runs with the full batch (see the module docstring)."""
    torch.set_num_threads(threads)
    models = build_models()
    for name, model in models.items():
        model.load_state_dict(saved["states"][name])
    x, y = saved["x"], saved["y"]
    report: dict[str, list] = {"rows": [], "process": []}
    for case, factory in cases(saved["scale"]).items():
        full = result_fields(attack_rows(factory, models, x, y, None))
        for field, gap in differences(full, saved["expected"][case]):
            report["process"].append([case, "full", field, gap])
        for rows, size in RUNS:
            batch_size = size or x.shape[0]
            found = result_fields(attack_rows(factory, models, x, y, batch_size, rows))
            for field, gap in differences(found, {k: v[rows] for k, v in full.items()}):
                where = "all rows" if rows.start is None else f"rows {rows.start}:{rows.stop}"
                report["rows"].append([case, f"{where}, batch_size={batch_size}", field, gap])
    return report


def main() -> None:
    cases_file, threads = sys.argv[1], int(sys.argv[2])
    saved = torch.load(cases_file, weights_only=True)
    print(json.dumps(check(saved, threads)))


if __name__ == "__main__":
    main()
