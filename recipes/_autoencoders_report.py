"""The autoencoders recipe's summary over seeds and its Markdown tables (errors, changes, attacks)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import _report
from _autoencoders_args import METHODS, PUBLISHED, DataSpec, Published


def summarise(
    runs: Sequence[dict[str, Any]],
    datasets: Sequence[DataSpec],
    models: Sequence[str],
    methods: Sequence[str],
) -> list[dict[str, Any]]:
    """Mean/std over seeds per (data set, model) of every metric, and the changes in %."""
    summary = []
    for data in datasets:
        for kind in models:
            group = [r for r in runs if r["dataset"] == data.name and r["model"] == kind]
            if not group:
                continue
            original = _report.mean_std([r["original"]["test_mse"] for r in group])
            row: dict[str, Any] = {
                "dataset": data.name,
                "data_label": data.label,
                "published_as": data.published,
                "model": kind,
                "seeds": [r["seed"] for r in group],
                "train_size": group[0]["train_size"],
                "test_size": group[0]["test_size"],
                "original": original,
            }
            control = None
            if all("same_steps" in r for r in group):
                control = _report.mean_std([r["same_steps"]["test_mse"] for r in group])
                row["same_steps"] = {
                    **control,
                    "change_vs_original_pct": _report.improvement_pct(original["mean"], control["mean"]),
                }
            row["methods"] = {}
            for key in methods:
                entries = [r["methods"][key] for r in group if key in r["methods"]]
                mse = _report.mean_std([e["test_mse"] for e in entries])
                paired = [r for r in group if key in r["methods"] and "same_steps" in r]
                row["methods"][key] = {
                    "test_mse": mse,
                    "change_vs_original_pct": _report.improvement_pct(original["mean"], mse["mean"]),
                    "change_vs_same_steps_pct": _report.improvement_pct(control["mean"], mse["mean"])
                    if control
                    else math.nan,
                    "paired_vs_same_steps": _report.paired_vs_control(
                        [r["methods"][key]["test_mse"] for r in paired],
                        [r["same_steps"]["test_mse"] for r in paired],
                    ),
                    "asr_pct": _report.mean_std([e["asr_pct"] for e in entries]),
                    "criterion_zero_pct": _report.mean_std([e["criterion_zero_pct"] for e in entries]),
                    "mean_mi": _report.mean_std([e["mean_mi"] for e in entries]),
                    "moved_linf": _report.mean_std([e.get("probe", {}).get("moved_linf", math.nan) for e in entries]),
                    "linf": _report.mean_std([e.get("probe", {}).get("linf", math.nan) for e in entries]),
                }
            summary.append(row)
    return summary


def _published_cell(values: Published, key: str) -> str:
    value, original = values.get(key), values.get("original")
    if value is None:
        return "?"
    if key == "original" or original is None:
        return f"{value:.5f}"
    return f"{value:.5f} ({_report.format_pct(_report.improvement_pct(original, value))})"


def markdown(
    summary: Sequence[dict[str, Any]],
    methods: Sequence[str],
    *,
    failed: str,
    skipped: Sequence[dict[str, str]],
) -> str:
    """The results as Markdown: the main table (docs/method.md section 6 layout) and two diagnostics."""
    columns = [METHODS[m] for m in methods]
    header = [
        "data",
        "AE",
        "source",
        "original",
        "same-steps clean",
        *(m.label for m in columns),
        "ASR % " + " / ".join(m.label for m in columns),
    ]
    rows = []
    for row in summary:
        n = len(row["seeds"])
        ours = [
            row["data_label"],
            row["model"],
            _report.ours_label(n, row["train_size"]),
            _report.format_stat_change(row["original"]),
            _report.format_stat_change(row["same_steps"], row["same_steps"]["change_vs_original_pct"])
            if "same_steps" in row
            else "—",
        ]
        ours += [
            _report.format_stat_change(row["methods"][m]["test_mse"], row["methods"][m]["change_vs_original_pct"])
            for m in methods
        ]
        ours.append(" / ".join(_report.format_number(row["methods"][m]["asr_pct"]["mean"], 1) for m in methods))
        rows.append(ours)
        published = PUBLISHED.get(row["published_as"] or "", {}).get(row["model"])
        if published is not None:
            paper = [
                "",
                "",
                f"paper ({row['published_as']})",
                _published_cell(published, "original"),
                "—",
            ]
            paper += [_published_cell(published, m.published) if m.published else "—" for m in columns]
            paper.append(" / ".join(f"{published['asr'][m.published]:g}" if m.published else "—" for m in columns))
            rows.append(paper)
    lines = [
        "### Test reconstruction error (per-pixel MSE) and training-set ASR",
        "",
        "Mean ± std over seeds; (+x%) is the error reduction relative to `original` (the paper's convention:",
        "positive = better). `same-steps clean` is the clean model trained for as many optimisation steps as the",
        f"augmented ones. Failed UAEs: {failed} ({'kept in' if failed == 'keep' else 'dropped from'} the augmented set).",
        "",
        _report.markdown_table(header, rows),
    ]
    if any("same_steps" in row for row in summary):
        fair_header = ["data", "AE", *(m.label for m in columns)]
        fair_rows = [
            [
                row["data_label"],
                row["model"],
                *(_report.format_pct(row["methods"][m]["change_vs_same_steps_pct"]) for m in methods),
            ]
            for row in summary
            if "same_steps" in row
        ]
        lines += [
            "",
            "### Change of the test error relative to the same-steps clean control (positive = augmentation helps)",
            "",
            _report.markdown_table(fair_header, fair_rows),
        ]
        paired_rows = [
            [
                row["data_label"],
                row["model"],
                *(_report.format_paired(row["methods"][m].get("paired_vs_same_steps"), 5) for m in methods),
            ]
            for row in summary
            if any(row["methods"][m].get("paired_vs_same_steps") for m in methods)
        ]
        if paired_rows:
            lines += [
                "",
                "### Paired difference of the test error, method − same-steps control, over seeds",
                "",
                "Mean [95 % paired-t CI], minimum detectable effect (80 % power, α = 0.05) and verdict",
                "(`uae_augment.statistics`; lower error is better: `helps` = CI entirely below 0).",
                "",
                _report.markdown_table(fair_header, paired_rows),
            ]
    detail_header = [
        "data",
        "AE",
        "method",
        "ASR %",
        "f_x = 0 %",
        "mean MI (attack's)",
        "mean ‖x' − x‖∞",
        "moved from start (L∞)",
    ]
    detail_rows = [
        [
            row["data_label"],
            row["model"],
            METHODS[m].label,
            _report.format_stat(row["methods"][m]["asr_pct"], 1),
            _report.format_stat(row["methods"][m]["criterion_zero_pct"], 1),
            _report.format_stat(row["methods"][m]["mean_mi"], 4),
            _report.format_number(row["methods"][m]["linf"]["mean"], 4),
            _report.format_number(row["methods"][m]["moved_linf"]["mean"], 4),
        ]
        for row in summary
        for m in methods
    ]
    lines += [
        "",
        "### What the attacks did (training set; ‖·‖∞ and moved: the probe rows of every seed)",
        "",
        "`f_x = 0 %`: share of augmentations that the autoencoder reconstructs no worse than x; ASR also",
        "needs the attack's MINE estimate > 0. `moved from start`: L∞ distance between the returned example",
        "and the attack's starting point clip(x + δ₀) (0 for init only; — for GA, which has no start).",
        "",
        _report.markdown_table(detail_header, detail_rows),
    ]
    if skipped:
        lines += ["", "Skipped: " + "; ".join(f"{s['dataset']} ({s['reason']})" for s in skipped)]
    return "\n".join(lines) + "\n"
