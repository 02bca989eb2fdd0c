"""The adversarial-training recipe's summary over seeds and its Markdown tables, beside the reference's figures."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

import _report

LABELS = {
    "standard": "standard training",
    "fgsm-augment": "adversarial training (FGSM, per epoch, 1:1)",
    "goodfellow": "Goodfellow mixed loss (α = 0.5)",
    "kurakin": "Kurakin mixed batch (k = m/2, λ = 0.3)",
    "madry": "Madry PGD training",
}
COLUMNS = ("correct", "error", "confidence", "confidence_correct", "confidence_error")
COLUMN_LABELS = (
    "correctly predicted",
    "error",
    "confidence",
    "confidence when correct",
    "confidence when wrong",
)

# docs/method.md section 6, last table (the "Harnessing adversarial examples" report): the
# reference's "standard training" and "adversarial training" (= our fgsm-augment).
PUBLISHED: dict[str, dict[str, dict[str, float]]] = {
    "standard": {
        "clean": {
            "correct": 0.9858,
            "error": 0.0142,
            "confidence": 0.9858,
            "confidence_correct": 0.9899,
            "confidence_error": 0.7029,
        },
        "fgsm": {
            "correct": 0.0496,
            "error": 0.9504,
            "confidence": 0.9305,
            "confidence_correct": 0.8869,
            "confidence_error": 0.9328,
        },
    },
    "fgsm-augment": {
        "clean": {
            "correct": 0.9840,
            "error": 0.0160,
            "confidence": 0.9721,
            "confidence_correct": 0.9761,
            "confidence_error": 0.6734,
        },
        "fgsm": {
            "correct": 0.8328,
            "error": 0.1672,
            "confidence": 0.8458,
            "confidence_correct": 0.8761,
            "confidence_error": 0.6947,
        },
    },
}


# --------------------------------------------------------------------------- summaries and tables


def summarise(runs: Sequence[dict[str, Any]], methods: Sequence[str]) -> dict[str, Any]:
    """Mean/std over seeds of every table cell, per method."""
    summary: dict[str, Any] = {}
    for method in methods:
        group = [r for r in runs if r["method"] == method]
        if not group:
            continue
        entry: dict[str, Any] = {"seeds": [r["seed"] for r in group]}
        for split in ("clean", "fgsm", "pgd"):
            entry[split] = {c: _report.mean_std([r["eval"][split][c] for r in group]) for c in COLUMNS}
        entry["lipschitz_product"] = _report.mean_std([r["eval"]["lipschitz_product"] for r in group])
        entry["train_steps"] = group[0]["train"]["steps"]
        entry["train_s"] = _report.mean_std([r["train_s"] for r in group])
        summary[method] = entry
    return summary


def _cell(stat: dict[str, Any]) -> str:
    return _report.format_stat(stat, 4)


def markdown(summary: dict[str, Any], args: argparse.Namespace, data_label: str) -> str:
    """The main table (every method, ours beside the published rows) and the reference-layout tables."""
    header = [
        "method",
        "source",
        *(f"clean: {c}" for c in COLUMN_LABELS),
        *(f"FGSM: {c}" for c in COLUMN_LABELS),
        f"PGD-{args.pgd_steps} accuracy",
        "Lipschitz bound (product)",
    ]
    rows = []
    for method, entry in summary.items():
        n = len(entry["seeds"])
        rows.append(
            [
                LABELS[method],
                f"ours ({n} seed{'s' if n > 1 else ''})",
                *(_cell(entry["clean"][c]) for c in COLUMNS),
                *(_cell(entry["fgsm"][c]) for c in COLUMNS),
                _cell(entry["pgd"]["correct"]),
                _report.format_stat(entry["lipschitz_product"], 1),
            ]
        )
        if method in PUBLISHED:
            paper = PUBLISHED[method]
            rows.append(
                [
                    "",
                    "reference",
                    *(f"{paper['clean'][c]:.4f}" for c in COLUMNS),
                    *(f"{paper['fgsm'][c]:.4f}" for c in COLUMNS),
                    "—",
                    "—",
                ]
            )
    lines = [
        f"### LeNet on {data_label}: clean and FGSM test sets (ε = {args.epsilon:g}), {args.epochs} epochs",
        "",
        "Confidence = softmax probability of the predicted class. FGSM and PGD examples are crafted against each",
        f"model itself (white box); PGD: {args.pgd_steps} steps of 2.5ε/steps from a random start. Mean ± std over seeds.",
        'The reference\'s "adversarial training" is our `fgsm-augment` row.',
        "",
        _report.markdown_table(header, rows),
    ]
    for method in ("standard", "fgsm-augment"):
        if method not in summary:
            continue
        entry, paper = summary[method], PUBLISHED[method]
        table_rows = [
            [
                label,
                _cell(entry["clean"][c]),
                f"{paper['clean'][c]:.4f}",
                _cell(entry["fgsm"][c]),
                f"{paper['fgsm'][c]:.4f}",
            ]
            for c, label in zip(COLUMNS, COLUMN_LABELS)
        ]
        lines += [
            "",
            f"#### {LABELS[method]}: the reference's layout",
            "",
            _report.markdown_table(
                ["", "clean (ours)", "clean (reference)", "FGSM (ours)", "FGSM (reference)"],
                table_rows,
            ),
        ]
    return "\n".join(lines) + "\n"
