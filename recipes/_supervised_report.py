"""The supervised-attacks recipe's summary over seeds and its Markdown tables, beside the paper's numbers."""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from typing import Any

import _report

LABELS = {
    "minmax": "MinMax",
    "penalty": "penalty-based",
    "pgd": "PGD",
    "fgsm": "FGSM",
    "lbfgs": "L-BFGS",
}
MINE_ATTACKS = ("minmax", "penalty")

# docs/method.md section 6: 1000 adversarial examples; ASR in %, MI as the paper's MINE reports it.
PUBLISHED: dict[str, dict[str, dict[str, float]]] = {
    "MNIST": {
        "penalty": {"asr_pct": 100.0, "mi": 28.28},
        "minmax": {"asr_pct": 100.0, "mi": 51.29},
    },
    "CIFAR-10": {
        "penalty": {"asr_pct": 100.0, "mi": 13.69},
        "minmax": {"asr_pct": 100.0, "mi": 17.14},
    },
}

_METRICS = (
    "asr_pct",
    "mi_evaluator",
    "mi_evaluator_2x_steps",
    "mi_evaluator_common",
    "mi_attack",
    "l2",
    "linf",
    "mean_first_success",
    "seconds_per_example",
    "cpu_seconds_per_example",
    "mi_evaluator_change_2x",
)


def summarise(runs: Sequence[dict[str, Any]], datasets: Sequence[str], attacks: Sequence[str]) -> list[dict[str, Any]]:
    """Mean/std over seeds of every metric, per data set and attack."""
    summary = []
    for name in datasets:
        group = [r for r in runs if r["dataset"] == name]
        if not group:
            continue
        row: dict[str, Any] = {
            "dataset": name,
            "published_as": group[0]["published_as"],
            "seeds": [r["seed"] for r in group],
            "images": [r["images"] for r in group],
            "test_accuracy": _report.mean_std([r["test_accuracy"] for r in group]),
            "mi_references": {
                k: _report.mean_std([r["mi_references"][k] for r in group]) for k in group[0]["mi_references"]
            },
            "mine_common_successes": _report.mean_std([r["mine_common_successes"] for r in group]),
            "mi_ranking": group[0].get("mi_ranking", {}).get("steps", []),
            "mi_ranking_agree": (
                sum(bool(r["mi_ranking"]["agree"]) for r in group) if all("mi_ranking" in r for r in group) else None
            ),
            "attacks": {},
        }
        if all("mi_references_2x_steps" in r for r in group):
            row["mi_references_2x_steps"] = {
                k: _report.mean_std([r["mi_references_2x_steps"][k] for r in group]) for k in group[0]["mi_references"]
            }
        for attack in attacks:
            entries = [r["attacks"][attack] for r in group if attack in r["attacks"]]
            row["attacks"][attack] = {m: _report.mean_std([e.get(m, math.nan) for e in entries]) for m in _METRICS}
            row["attacks"][attack]["iterations"] = entries[0]["iterations"]
        summary.append(row)
    return summary


def _stat(stat: dict[str, Any], digits: int = 3) -> str:
    return _report.format_stat(stat, digits)


def markdown(summary: Sequence[dict[str, Any]], args: argparse.Namespace, *, minmax_mine_lr: float) -> str:
    """The paper comparison, one detailed table per data set and the explanation of the MI columns.

    ``args`` are the recipe's settings; ``minmax_mine_lr`` is MinMax's MINE learning rate (its preset's).
    """
    lines = [
        "### MinMax vs penalty-based attack: ASR and MI (the paper's table, ours beside it)",
        "",
        "MI (evaluator): the independent per-sample MINE (`per_sample_mi`, same settings for every attack), mean over",
        "successful examples. MI (attack's own): the running estimate of the statistics network each attack trained",
        "(the kind of number the paper reports; not comparable across attacks, see below).",
        "",
    ]
    header = ["attack", "source"]
    for row in summary:
        header += [f"{row['published_as']} ASR", f"{row['published_as']} MI"]
    body = []
    for attack in MINE_ATTACKS:
        if attack not in args.attacks:
            continue
        paper, own, independent = (
            [LABELS[attack], "paper"],
            ["", "ours, attack's own MINE"],
            ["", "ours, evaluator"],
        )
        shared = ["", "ours, evaluator, images both fooled"]
        for row in summary:
            published = PUBLISHED.get(row["published_as"], {}).get(attack, {})
            paper += [
                f"{published['asr_pct']:g}%" if published else "—",
                f"{published['mi']:g}" if published else "—",
            ]
            stats = row["attacks"][attack]
            asr = f"{_report.format_number(stats['asr_pct']['mean'], 1)}%"
            own += [asr, _stat(stats["mi_attack"])]
            independent += [asr, _stat(stats["mi_evaluator"])]
            shared += [
                f"{row['mine_common_successes']['mean']:.0f} images",
                _stat(stats["mi_evaluator_common"]),
            ]
        body += [paper, own, independent, shared]
    if body:
        lines += [_report.markdown_table(header, body), ""]
    for row in summary:
        images = sorted(set(row["images"]))
        lines += [
            f"### {row['published_as']} ({row['dataset']}): {', '.join(map(str, images))} correctly classified test images,"
            f" test accuracy {_stat(row['test_accuracy'], 4)}",
            "",
        ]
        detail_header = [
            "attack",
            "ASR %",
            "MI (evaluator)",
            f"MI (evaluator, {2 * args.mi_steps} steps)",
            "MI (attack's own)",
            "mean L2",
            "mean L∞",
            "iterations",
            "first success (iter.)",
            "s / example",
            "CPU s / example",
        ]
        detail = []
        for attack, stats in row["attacks"].items():
            detail.append(
                [
                    LABELS[attack],
                    _stat(stats["asr_pct"], 1),
                    _stat(stats["mi_evaluator"]),
                    _stat(stats["mi_evaluator_2x_steps"]),
                    _stat(stats["mi_attack"]),
                    _stat(stats["l2"]),
                    _stat(stats["linf"]),
                    str(stats["iterations"]),
                    _stat(stats["mean_first_success"], 1),
                    _stat(stats["seconds_per_example"], 3),
                    _stat(stats["cpu_seconds_per_example"], 3),
                ]
            )
        references, references_2x = row["mi_references"], row.get("mi_references_2x_steps", {})
        for key, label, size in (
            ("identical copy", "reference: x' = x", "0"),
            ("unrelated image", "reference: x' = another test image", "—"),
        ):
            detail.append(
                [
                    label,
                    "—",
                    _stat(references[key]),
                    _stat(references_2x.get(key, {})),
                    "—",
                    size,
                    size,
                    "—",
                    "—",
                    "—",
                    "—",
                ]
            )
        lines += [_report.markdown_table(detail_header, detail), ""]
        if row["mi_ranking_agree"] is not None:
            lines += [
                f"Evaluator ranking of the attacks (MI at {args.mi_steps} steps, then at {2 * args.mi_steps}): "
                f"{' > '.join(LABELS[a] for a in row['mi_ranking'])} (first seed); the order is the same at"
                f" both budgets in {row['mi_ranking_agree']} of {len(row['seeds'])} seed(s).",
                "",
            ]
    lines += [
        "How to read the MI columns. A MINE attack's own estimate measures how well *that attack's* statistics",
        f"network learned during the attack (here MinMax: 1 Adam step per iteration at lr {minmax_mine_lr:g},"
        f" warm-started; penalty: {20 if args.penalty_mine_steps is None else args.penalty_mine_steps} per iteration at lr 2e-5,",
        "re-initialised every binary-search round), so its scale differs between attacks and the",
        "gradient attacks have none. The evaluator trains a fresh per-sample MINE with the same budget on every",
        "final pair (x, x') (one network per image, the same initialisation for every attack), so its numbers rank",
        "attacks: higher means x' keeps more information about x. Its absolute value depends on the budget (the DV",
        "bound keeps rising on the K = 200 projections of one pair; for x' = x, whose MI is infinite, without",
        "limit), hence the second budget: what should hold is the order. The two reference rows give the scale.",
        "Iterations: the budget per example (L-BFGS: constants × L-BFGS-B iterations, an upper bound).",
        "Distortions are over all attacked images; MI over the successful ones.",
    ]
    return "\n".join(lines) + "\n"
