"""The SimCLR recipe's summary over seeds and its Markdown tables (evaluation, changes, attacks)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import _report


def rows_of(run: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """(key, label, entry) of every trained model of one seed, in table order."""
    rows = [("original", "original (clean)", run["original"])]
    if "same_steps" in run:
        rows.append(("same-steps", "clean, same steps", run["same_steps"]))
    rows += [(f"uae-{p}", f"clean + MINE-UAE ({p})", entry) for p, entry in run["augmented"].items()]
    return rows


def summarise(runs: Sequence[dict[str, Any]], epsilons: Sequence[float]) -> list[dict[str, Any]]:
    """Mean/std over seeds of every model's metrics and the changes against the same-steps control."""
    if not runs:
        return []
    summary = []
    for key, label, _ in rows_of(runs[0]):
        entries = [entry for run in runs for k, _, entry in rows_of(run) if k == key]
        row: dict[str, Any] = {
            "key": key,
            "label": label,
            "steps": entries[0]["steps"],
            "linear_test_acc": _report.mean_std([e["linear"]["test_acc"] for e in entries]),
            "test_ntxent": _report.mean_std([e["test_ntxent"] for e in entries]),
            "pgd_clean_acc": _report.mean_std([e["pgd_accuracy"]["clean"] for e in entries]),
            "pgd_accuracy": {
                f"{eps:g}": _report.mean_std([e["pgd_accuracy"][f"{eps:g}"] for e in entries]) for eps in epsilons
            },
        }
        if key.startswith("uae-"):
            row["attack"] = {
                name: _report.mean_std(
                    [e.get(source, {}).get(field, math.nan) if source else e[field] for e in entries]
                )
                for name, source, field in (
                    ("asr_pct", None, "asr_pct"),
                    ("criterion_zero_pct", None, "criterion_zero_pct"),
                    ("mean_mi", None, "mean_mi"),
                    ("mean_criterion", None, "mean_criterion"),
                    ("moved_linf", "probe", "moved_linf"),
                    ("moved_l2", "probe", "moved_l2"),
                    ("linf", "probe", "linf"),
                    ("max_abs_diff_to_cache", "probe", "max_abs_diff_to_cache"),
                    ("attack_seconds", None, "attack_seconds"),
                )
            }
        summary.append(row)
    control = next((r for r in summary if r["key"] == "same-steps"), None)
    for row in summary:
        if control is not None and row["key"].startswith("uae-"):
            pairs = [
                (entry, run["same_steps"])
                for run in runs
                if "same_steps" in run
                for k, _, entry in rows_of(run)
                if k == row["key"]
            ]
            row["paired_vs_same_steps"] = {
                "linear_test_acc": _report.paired_vs_control(
                    [e["linear"]["test_acc"] for e, _ in pairs],
                    [c["linear"]["test_acc"] for _, c in pairs],
                    better="higher",
                ),
                "test_ntxent": _report.paired_vs_control(
                    [e["test_ntxent"] for e, _ in pairs], [c["test_ntxent"] for _, c in pairs]
                ),
            }
            row["vs_same_steps"] = {
                "linear_test_acc_pp": row["linear_test_acc"]["mean"] - control["linear_test_acc"]["mean"],
                "test_ntxent": row["test_ntxent"]["mean"] - control["test_ntxent"]["mean"],
                "pgd_acc_pp": {
                    k: row["pgd_accuracy"][k]["mean"] - control["pgd_accuracy"][k]["mean"] for k in row["pgd_accuracy"]
                },
            }
    return summary


def _signed(value: float, digits: int = 2) -> str:
    return "—" if value is None or not math.isfinite(value) else f"{value:+.{digits}f}"


def markdown(
    summary: Sequence[dict[str, Any]],
    epsilons: Sequence[float],
    *,
    data: str,
    seeds: int,
    pgd_rows: int,
    pgd_steps: int,
) -> str:
    """The results as Markdown: evaluation table, changes against the control, attack diagnostics."""
    eps_labels = [f"{eps:g}" for eps in epsilons]
    header = [
        "model",
        "steps",
        "linear test acc %",
        "test NT-Xent",
        "clean acc (PGD rows) %",
        *(f"PGD ε={e}/255 %" for e in eps_labels),
    ]
    body = [
        [
            row["label"],
            str(row["steps"]),
            _report.format_stat(row["linear_test_acc"], 2),
            _report.format_stat(row["test_ntxent"], 4),
            _report.format_stat(row["pgd_clean_acc"], 1),
            *(_report.format_stat(row["pgd_accuracy"][e], 1) for e in eps_labels),
        ]
        for row in summary
    ]
    lines = [
        f"### SimCLR on {data}: linear evaluation, test NT-Xent and PGD robustness",
        "",
        f"Mean ± std over {seeds} seed{'s' if seeds > 1 else ''}. `steps`: optimisation steps of the model's",
        "training; `clean, same steps` is the clean model trained as long as the augmented ones. Linear evaluation:",
        "a linear layer on the frozen backbone. Test NT-Xent: lightly's loss on fixed views of the test set",
        f"(lower is better). PGD: L∞, {pgd_steps} steps, random start, on {pgd_rows} test images.",
        "",
        _report.markdown_table(header, body),
    ]
    changes = [row for row in summary if "vs_same_steps" in row]
    if changes:
        change_header = [
            "model",
            "Δ linear acc (pp)",
            "Δ test NT-Xent",
            *(f"Δ PGD ε={e} (pp)" for e in eps_labels),
        ]
        change_body = [
            [
                row["label"],
                _signed(row["vs_same_steps"]["linear_test_acc_pp"]),
                _signed(row["vs_same_steps"]["test_ntxent"], 4),
                *(_signed(row["vs_same_steps"]["pgd_acc_pp"][e]) for e in eps_labels),
            ]
            for row in changes
        ]
        lines += [
            "",
            "### Augmented minus the same-steps clean control (accuracy: positive = UAE helps;"
            " NT-Xent: negative = UAE helps)",
            "",
            _report.markdown_table(change_header, change_body),
        ]
        paired = [row for row in changes if row["paired_vs_same_steps"]["linear_test_acc"]]
        if paired:
            lines += [
                "",
                "### Paired over seeds: augmented − same-steps control",
                "",
                "Mean [95 % paired-t CI], minimum detectable effect (80 % power, α = 0.05) and verdict",
                "(`uae_augment.statistics`; accuracy: higher is better, NT-Xent: lower is better).",
                "",
                _report.markdown_table(
                    ["model", "Δ linear acc (pp)", "Δ test NT-Xent"],
                    [
                        [
                            row["label"],
                            _report.format_paired(row["paired_vs_same_steps"]["linear_test_acc"], 2),
                            _report.format_paired(row["paired_vs_same_steps"]["test_ntxent"], 4),
                        ]
                        for row in paired
                    ],
                ),
            ]
    attacked = [row for row in summary if "attack" in row]
    if attacked:
        attack_header = [
            "preset",
            "ASR %",
            "f_x = 0 %",
            "mean MI",
            "mean f_x",
            "moved from δ₀ L∞",
            "moved L2",
            "‖x' − x‖∞",
            "max |probe − cache|",
            "attack s (this run)",
        ]
        attack_body = [
            [
                row["key"][4:],
                _report.format_stat(row["attack"]["asr_pct"], 1),
                _report.format_stat(row["attack"]["criterion_zero_pct"], 1),
                _report.format_stat(row["attack"]["mean_mi"], 4),
                _report.format_stat(row["attack"]["mean_criterion"], 4),
                _report.format_stat(row["attack"]["moved_linf"], 4),
                _report.format_stat(row["attack"]["moved_l2"], 4),
                _report.format_stat(row["attack"]["linf"], 4),
                _report.format_number(row["attack"]["max_abs_diff_to_cache"]["mean"], 6),
                _report.format_stat(row["attack"]["attack_seconds"], 0),
            ]
            for row in attacked
        ]
        lines += [
            "",
            "### What the attacks did (training set; moved / ‖·‖∞: the probe images)",
            "",
            "`moved from δ₀`: distance between the returned UAE and the attack's start clip(x + δ₀);",
            "near 0 means the optimisation left δ at its random initialisation.",
            "",
            _report.markdown_table(attack_header, attack_body),
        ]
    return "\n".join(lines) + "\n"


def smoothed(values: Sequence[float], window: int) -> list[float]:
    """Running mean of ``values`` over the last ``window`` entries (fewer at the start)."""
    out, total = [], 0.0
    for i, value in enumerate(values):
        total += value
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out
