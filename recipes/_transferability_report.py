"""The transferability recipe's Markdown tables (cross-model, cross-training, Lipschitz bounds) and the
paper's figures they sit beside."""

from __future__ import annotations

from typing import Any

import _report
from _transferability_models import CROSS_TRAINING, CROSS_TRAINING_DECAY, TABLE_MODELS

# The cross-model table of references/adversarial-examples-lecture-a.md (error rates in %,
# rows: examples crafted on / noise; columns: TABLE_MODELS, then the average distortion).
PUBLISHED: dict[str, Any] = {
    "rows": {
        "FC10(1e-4)": [100, 11.7, 22.7, 2, 3.9, 2.7, 0.062],
        "FC10(1e-2)": [87.1, 100, 35.2, 35.9, 27.3, 9.8, 0.1],
        "FC10(1)": [71.9, 76.2, 100, 48.1, 47, 34.4, 0.14],
        "FC100-100-10": [28.9, 13.7, 21.1, 100, 6.6, 2, 0.058],
        "FC200-200-10": [38.2, 14, 23.8, 20.3, 100, 2.7, 0.065],
        "AE400-10": [23.4, 16, 24.8, 9.4, 6.6, 100, 0.086],
        "Gaussian noise, stddev=0.1": [5.0, 10.1, 18.3, 0, 0, 0.8, 0.1],
        "Gaussian noise, stddev=0.3": [15.6, 11.3, 22.7, 5, 4.3, 3.1, 0.3],
    },
    "columns": list(TABLE_MODELS) + ["av. distortion"],
}

# The cross-training table of references/adversarial-examples-lecture-a.md (error rates in %).
PUBLISHED_CROSS_TRAINING: dict[str, Any] = {
    "rows": {
        "FC100-100-10 (av. stddev 0.062)": [100, 26.2, 5.9],
        "FC123-456-10 (av. stddev 0.059)": [6.25, 100, 5.1],
        "FC100-100-10' (av. stddev 0.058)": [8.2, 8.2, 100],
        "Gaussian noise, stddev=0.06": [2.2, 2.6, 2.4],
    },
    "columns": [spec.name for spec in CROSS_TRAINING],
}
# --------------------------------------------------------------------------- tables


def _pct(value: float) -> str:
    return f"{100 * value:.1f}%"


def matrix_markdown(matrix: dict[str, Any], accuracies: dict[str, float], n: int) -> str:
    """Our cross-model table in the paper's layout (error rates, then the average distortion)."""
    targets = matrix["targets"]
    header = ["crafted on \\ fed to", *targets, "av. distortion (RMS)", "attack success"]
    rows = []
    for row in matrix["rows"]:
        success = matrix["attack_success"].get(row)
        rows.append(
            [
                row,
                *(_pct(matrix["error"][row][t]) for t in targets),
                f"{matrix['distortion_rms'][row]:.3f}",
                _pct(success) if success is not None else "—",
            ]
        )
    rows.append(["clean test accuracy", *(_pct(accuracies[t]) for t in targets), "—", "—"])
    return "\n".join(
        [
            f"### Cross-model generalisation: error rate of each column's model on the row's examples ({n} test digits)",
            "",
            "Rows: L-BFGS examples crafted on a model, then Gaussian noise matched per image to that model's",
            "examples (same RMS distortion, after clipping to [0, 1]) and noise of fixed RMS distortion. The attacked",
            "digits are classified correctly by every model, so every error comes from the perturbation.",
            "",
            _report.markdown_table(header, rows),
        ]
    )


def published_markdown() -> str:
    """The published table (references/adversarial-examples-lecture-a.md)."""
    header = ["crafted on \\ fed to", *PUBLISHED["columns"]]
    rows = [[row, *(f"{v:g}%" for v in values[:-1]), f"{values[-1]:g}"] for row, values in PUBLISHED["rows"].items()]
    return "\n".join(["### Published (Szegedy et al. 2014, MNIST)", "", _report.markdown_table(header, rows)])


def cross_training_markdown(matrix: dict[str, Any], accuracies: dict[str, float], n: int) -> str:
    """Our cross-training table (error rates of each column's model on the row's examples)."""
    targets = matrix["targets"]
    header = ["crafted on \\ fed to", *targets, "av. distortion (RMS)"]
    rows = [
        [
            row,
            *(_pct(matrix["error"][row][t]) for t in targets),
            f"{matrix['distortion_rms'][row]:.3f}",
        ]
        for row in matrix["rows"]
    ]
    rows.append(["clean test accuracy", *(_pct(accuracies[t]) for t in targets), "—"])
    published = [[row, *(f"{v:g}%" for v in values)] for row, values in PUBLISHED_CROSS_TRAINING["rows"].items()]
    parts = ", ".join(f"{spec.name} on {spec.part}" for spec in CROSS_TRAINING)
    return "\n".join(
        [
            f"### Cross-training generalisation ({n} test digits)",
            "",
            f"Sigmoid nets (λ = {CROSS_TRAINING_DECAY:g}) trained on two disjoint halves of the training set: {parts}.",
            "Each row's L-BFGS examples are fed to every net; the digits are classified correctly by all three.",
            "",
            _report.markdown_table(header, rows),
            "",
            "Published (Szegedy et al. 2014, MNIST halves of 30,000 images):",
            "",
            _report.markdown_table(["crafted on \\ fed to", *PUBLISHED_CROSS_TRAINING["columns"]], published),
        ]
    )


def lipschitz_markdown(reports: dict[str, Any]) -> str:
    """Per-layer Lipschitz bounds (dense and conv layers, and layers whose constant is not 1) and products."""
    header = ["model", "layer", "size", "stride", "upper bound"]
    rows = []
    for name, report in reports.items():
        for layer in report["layers"]:
            if layer["kind"] in ("Linear", "Conv2d") or abs(layer["norm"] - 1.0) > 1e-12:
                rows.append(
                    [
                        name,
                        f"{layer['name']} ({layer['kind']})",
                        layer["size"] or "—",
                        layer["stride"] or "N/A",
                        f"{layer['norm']:.3f}",
                    ]
                )
        rows.append([name, "**product**", "", "", f"**{report['product']:.4g}**"])
    return "\n".join(
        [
            "### Lipschitz upper bounds per layer (L2)",
            "",
            "Dense layers: exact spectral norm (SVD). Convolutions: power iteration on the actual operator at the",
            "layer's input size (stride and padding included). The product bounds the model's Lipschitz constant.",
            "",
            _report.markdown_table(header, rows),
        ]
    )
