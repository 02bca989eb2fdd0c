"""The concrete-autoencoder recipe's summary over seeds and its Markdown tables, beside the paper's figures."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import _report

# docs/method.md section 6: test reconstruction error, test accuracy (%) and ASR (%).
PUBLISHED: dict[str, dict[str, float]] = {
    "mnist": {
        "re_original": 0.01170,
        "re_mine": 0.01142,
        "acc_original": 94.97,
        "acc_mine": 95.41,
        "asr": 99.98,
    },
    "fashion-mnist": {
        "re_original": 0.01307,
        "re_mine": 0.01254,
        "acc_original": 84.92,
        "acc_mine": 85.24,
        "asr": 99.99,
    },
    "isolet": {
        "re_original": 0.01200,
        "re_mine": 0.01159,
        "acc_original": 81.98,
        "acc_mine": 82.93,
        "asr": 100.0,
    },
    "coil20": {
        "re_original": 0.00693,
        "re_mine": 0.01374,
        "acc_original": 98.96,
        "acc_mine": 96.88,
        "asr": 9.21,
    },
    "mice-protein": {
        "re_original": 0.00651,
        "re_mine": 0.00611,
        "acc_original": 89.81,
        "acc_mine": 91.2,
        "asr": 40.24,
    },
    "activity": {
        "re_original": 0.00337,
        "re_mine": 0.00300,
        "acc_original": 83.38,
        "acc_mine": 84.45,
        "asr": 96.52,
    },
}
PUBLISHED_NAME = {"mnist-5k": "mnist"}


def summarise(runs: Sequence[dict[str, Any]], names: Sequence[str]) -> list[dict[str, Any]]:
    """Mean/std over seeds per data set; changes in % (positive = better)."""
    summary = []
    for name in names:
        group = [r for r in runs if r["dataset"] == name]
        if not group:
            continue
        row: dict[str, Any] = {
            "dataset": name,
            "seeds": [r["seed"] for r in group],
            "k": group[0]["k"],
            "train_size": group[0]["train_size"],
            "test_size": group[0]["test_size"],
        }
        for arm in ("original", "mine", "same_steps"):
            if all(arm in r for r in group):
                row[arm] = {
                    "test_mse": _report.mean_std([r[arm]["test_mse"] for r in group]),
                    "accuracy_pct": _report.mean_std([r[arm]["accuracy_pct"] for r in group]),
                    "steps": _report.mean_std([r[arm]["steps"] for r in group]),
                }
        row["asr_pct"] = _report.mean_std([r["mine"]["asr_pct"] for r in group])
        row["criterion_zero_pct"] = _report.mean_std([r["mine"]["criterion_zero_pct"] for r in group])
        row["moved_linf"] = _report.mean_std([r["mine"].get("probe", {}).get("moved_linf", math.nan) for r in group])
        row["re_change_vs_original_pct"] = _report.improvement_pct(
            row["original"]["test_mse"]["mean"], row["mine"]["test_mse"]["mean"]
        )
        if "same_steps" in row:
            row["re_change_vs_same_steps_pct"] = _report.improvement_pct(
                row["same_steps"]["test_mse"]["mean"], row["mine"]["test_mse"]["mean"]
            )
            row["paired_vs_same_steps"] = {
                "test_mse": _report.paired_vs_control(
                    [r["mine"]["test_mse"] for r in group],
                    [r["same_steps"]["test_mse"] for r in group],
                ),
                "accuracy_pct": _report.paired_vs_control(
                    [r["mine"]["accuracy_pct"] for r in group],
                    [r["same_steps"]["accuracy_pct"] for r in group],
                    better="higher",
                ),
            }
        summary.append(row)
    return summary


def markdown(summary: Sequence[dict[str, Any]], *, failed: str, skipped: Sequence[dict[str, str]]) -> str:
    """The results table (docs/method.md section 6 layout, published figures beside ours)."""
    header = [
        "data",
        "source",
        "RE original",
        "RE same-steps clean",
        "RE MINE-UAE",
        "acc original",
        "acc same-steps clean",
        "acc MINE-UAE",
        "ASR",
    ]
    rows = []
    for row in summary:
        n = len(row["seeds"])
        control = row.get("same_steps")
        ours = [
            f"{row['dataset']} (K={row['k']})",
            _report.ours_label(n, row["train_size"]),
            _report.format_stat(row["original"]["test_mse"]),
            _report.format_stat(control["test_mse"]) if control else "—",
            f"{_report.format_stat(row['mine']['test_mse'])} ({_report.format_pct(row['re_change_vs_original_pct'])})",
            _report.format_stat(row["original"]["accuracy_pct"], 2) + "%",
            (_report.format_stat(control["accuracy_pct"], 2) + "%") if control else "—",
            _report.format_stat(row["mine"]["accuracy_pct"], 2) + "%",
            _report.format_stat(row["asr_pct"], 2) + "%",
        ]
        rows.append(ours)
        published = PUBLISHED.get(PUBLISHED_NAME.get(row["dataset"], row["dataset"]))
        if published:
            change = _report.improvement_pct(published["re_original"], published["re_mine"])
            rows.append(
                [
                    "",
                    "paper",
                    f"{published['re_original']:.5f}",
                    "—",
                    f"{published['re_mine']:.5f} ({_report.format_pct(change)})",
                    f"{published['acc_original']:.2f}%",
                    "—",
                    f"{published['acc_mine']:.2f}%",
                    f"{published['asr']:.2f}%",
                ]
            )
    lines = [
        "### Concrete autoencoder: test reconstruction error (RE) and ExtraTrees(50) accuracy on the selected features",
        "",
        "Mean ± std over seeds; (+x%) is the RE reduction relative to `original` (positive = better).",
        "`same-steps clean` is the clean model trained for as many optimisation steps as the augmented one.",
        f"Failed UAEs: {failed}. ASR on the training set.",
        "",
        _report.markdown_table(header, rows),
    ]
    detail_header = [
        "data",
        "steps original / MINE-UAE / same-steps",
        "RE change vs same-steps",
        "f_x = 0 %",
        "moved from start (L∞)",
    ]
    detail_rows = [
        [
            row["dataset"],
            " / ".join(
                _report.format_number(row[arm]["steps"]["mean"], 0) if arm in row else "—"
                for arm in ("original", "mine", "same_steps")
            ),
            _report.format_pct(row.get("re_change_vs_same_steps_pct")),
            _report.format_stat(row["criterion_zero_pct"], 1),
            _report.format_number(row["moved_linf"]["mean"], 4),
        ]
        for row in summary
    ]
    lines += [
        "",
        "### Steps and what the attack did",
        "",
        _report.markdown_table(detail_header, detail_rows),
    ]
    paired_rows = [
        [
            row["dataset"],
            _report.format_paired(row["paired_vs_same_steps"]["test_mse"], 5),
            _report.format_paired(row["paired_vs_same_steps"]["accuracy_pct"], 2),
        ]
        for row in summary
        if row.get("paired_vs_same_steps", {}).get("test_mse")
    ]
    if paired_rows:
        lines += [
            "",
            "### MINE-UAE − same-steps control, paired over seeds",
            "",
            "Mean [95 % paired-t CI], minimum detectable effect (80 % power, α = 0.05) and verdict",
            "(`uae_augment.statistics`; RE: lower is better, accuracy (pp): higher is better).",
            "",
            _report.markdown_table(["data", "Δ RE", "Δ accuracy (pp)"], paired_rows),
        ]
    if skipped:
        lines += ["", "Skipped: " + "; ".join(f"{s['dataset']} ({s['reason']})" for s in skipped)]
    return "\n".join(lines) + "\n"
