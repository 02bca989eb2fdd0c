"""Supervised adversarial examples: MinMax vs penalty-based MINE attacks vs PGD, FGSM and L-BFGS.

Reproduces the supervised table of the MinMax paper (docs/method.md section 6) on the
release's victims, the Carlini & Wagner 4-conv nets for MNIST and CIFAR-10
(docs/method.md section 5: SGD lr 0.01, momentum 0.9, Nesterov, batch 128, 50 epochs),
which the recipe trains and saves under ``--out/models``:

1. train the classifier (reruns with the same settings reload it) and measure its
   test accuracy;
2. choose N test images it classifies correctly (a fixed random choice) and attack
   them with

   * ``minmax``: ``MinMaxAttack(ClassifierMargin(model), mode="supervised")``, the
     paper preset by default (1000 iterations, 1 MINE step each, ε = 1);
   * ``penalty``: ``PenaltyAttack``, the C&W-style binary search over a fixed c
     (9 rounds x 1000 iterations, 20 MINE steps per iteration, MINE re-initialised
     every round);
   * ``pgd``: L∞ PGD with random start (MNIST ε = 0.3, 40 steps; CIFAR-10 ε = 8/255,
     20 steps; step 2.5 ε / steps);
   * ``fgsm``: one signed-gradient step of the same ε;
   * ``lbfgs``: Szegedy et al.'s box-constrained L-BFGS (minimum L2 distortion);

3. report per attack the ASR, the mean MI, the mean L2 and L∞ distortion, the
   iterations and the seconds per example.

``--quick`` trains on 2,000-image subsets of MNIST-5k and CIFAR-10 (Adam, 6 and 4 epochs)
and attacks 50 images per data set with the ``strong`` preset and far fewer iterations
(see :data:`QUICK`); the default (full) settings are the release's and take GPU hours.

Comparable MI. Each MINE attack reports its own running estimate I_Θ(x, x') of the
statistics network it trained while attacking. That number depends on how long
and how the attack trained its network (1 Adam step per iteration for MinMax, 20
for the penalty attack, re-initialised every round), so it cannot rank attacks
(and PGD, FGSM and L-BFGS have none). Every final pair (x, x') of every attack is
therefore also scored by one independent evaluator with identical settings for
all: ``uae_augment.per_sample_mi`` (a fresh per-sample MINE on random projections
of the pair, trained for ``--mi-steps`` Adam steps). Its convergence is checked by
scoring again with twice the steps; two reference rows give the scale: x' = x
(an identical copy) and x' = another test image of the data set (unrelated).

Outputs in ``--out``: ``results.json`` (per-seed values, summaries, the published
figures, the environment), ``results.md`` (tables beside the published figures),
``config.yaml``, ``wall_time.log``, ``mi_curves-<data>.png`` (the attacks' own MI
estimate per iteration for MinMax and the penalty attack), ``grid-<data>.png``
(clean | MinMax | penalty | PGD with amplified perturbations) and ``models/``.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Subset

import _config
import _protocol
import _report
import _supervised_args
import _supervised_report
from _supervised_args import DATASETS, QUICK, DataSpec, feature_map_lr
from _supervised_report import LABELS, MINE_ATTACKS, PUBLISHED
from uae_augment import (
    FGSM,
    LBFGS,
    PGD,
    Attack,
    AttackResult,
    ClassifierMargin,
    MinMaxAttack,
    PenaltyAttack,
    per_sample_mi,
)
from uae_augment.evaluation import accuracy, correctly_classified, distortion
from uae_augment.models import CWClassifier
from uae_augment.plots import perturbation_picture, save_curves, save_image_grid

RECIPE = "supervised_attacks"


class Victim(CWClassifier):
    """The release's C&W classifier (MNIST or CIFAR-10 widths by channel count) with a chosen optimiser.

    ``optimizer="sgd"`` at lr 0.01 is the release's (momentum 0.9, Nesterov); ``"adam"``
    lets a few epochs on a small subset leave chance level (the quick preset).
    """

    def __init__(self, input_shape: tuple[int, int, int], optimizer: str = "sgd", lr: float | None = None):
        super().__init__(input_shape)
        self.optimizer_name = optimizer
        self.lr = lr if lr is not None else (0.01 if optimizer == "sgd" else 1e-3)

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        if self.optimizer_name == "adam":
            return [torch.optim.Adam(self.parameters(), lr=self.lr)]
        return [torch.optim.SGD(self.parameters(), lr=self.lr, momentum=0.9, nesterov=True)]


def build_parser() -> argparse.ArgumentParser:
    """The recipe's command-line interface."""
    return _supervised_args.build_parser(__doc__)


# --------------------------------------------------------------------------- attacks


def build_attacks(
    model: nn.Module, data: DataSpec, args: argparse.Namespace, seed: int
) -> dict[str, tuple[Attack, int]]:
    """The requested attacks on ``model`` and each one's iteration budget per example."""
    progress = not args.no_progress
    epsilon = args.epsilon if args.epsilon is not None else data.epsilon
    pgd_steps = args.pgd_steps or data.pgd_steps
    criterion = ClassifierMargin(model)

    def minmax() -> tuple[Attack, int]:
        attack = MinMaxAttack(
            criterion,
            mode="supervised",
            preset=args.preset,
            steps=args.steps,
            alpha=args.alpha,
            c0=args.c0,
            record_history=True,
            seed=seed,
            batch_size=args.attack_batch_size,
            progress=progress,
        )
        return attack, attack.settings.steps

    def penalty() -> tuple[Attack, int]:
        mine_steps = 20 if args.penalty_mine_steps is None else args.penalty_mine_steps
        attack = PenaltyAttack(
            criterion,
            preset=args.preset,
            search_steps=args.penalty_search_steps,
            steps=args.penalty_steps,
            mine_steps=mine_steps,
            alpha=args.alpha,
            c0=args.c0,
            record_history=True,
            seed=seed,
            batch_size=args.attack_batch_size,
            progress=progress,
        )
        return attack, attack.search_steps * attack.settings.steps

    factories: dict[str, Callable[[], tuple[Attack, int]]] = {
        "minmax": minmax,
        "penalty": penalty,
        "pgd": lambda: (
            PGD(
                model,
                epsilon=epsilon,
                steps=pgd_steps,
                step_size=2.5 * epsilon / pgd_steps,
                seed=seed,
                progress=progress,
            ),
            pgd_steps,
        ),
        "fgsm": lambda: (FGSM(model, epsilon=epsilon, seed=seed, progress=progress), 1),
        "lbfgs": lambda: (
            LBFGS(
                model,
                search_steps=args.lbfgs_search_steps,
                max_iter=args.lbfgs_max_iter,
                seed=seed,
                progress=progress,
            ),
            args.lbfgs_search_steps * args.lbfgs_max_iter,
        ),
    }
    return {name: factories[name]() for name in args.attacks}


def score_pairs(
    x: torch.Tensor,
    others: dict[str, torch.Tensor],
    index: torch.Tensor,
    args: argparse.Namespace,
    seed: int,
    steps: int,
) -> dict[str, torch.Tensor]:
    """The independent evaluator (``per_sample_mi``, identical settings) on the pairs (x, others[name]).

    All pairs are scored in one call. An image's statistics network and permutations are
    seeded by its index, so the pairs of one image start from the same network in every
    row (a paired comparison of the attacks).
    """
    names = list(others)
    values = per_sample_mi(
        x.repeat((len(names),) + (1,) * (x.dim() - 1)),
        torch.cat([others[n] for n in names]),
        steps=steps,
        lr=args.mi_lr,
        projections=args.mi_projections,
        projection_dim=args.mi_projection_dim,
        seed=seed,
        index=index.repeat(len(names)),
    ).cpu()
    return dict(zip(names, values.split(len(x))))


def _mean(values: torch.Tensor, mask: torch.Tensor | None = None) -> float:
    values = values.float()
    if mask is not None:
        values = values[mask]
    values = values[torch.isfinite(values)]
    return float(values.mean()) if values.numel() else math.nan


def attack_record(
    name: str,
    result: AttackResult,
    x: torch.Tensor,
    seconds: float,
    cpu_s: float,
    iterations: int,
    mi: torch.Tensor,
    mi_check: torch.Tensor | None,
) -> dict[str, Any]:
    """The per-attack numbers of the table (distortions over all attacked images; MI over successful ones)."""
    sizes = distortion(x, result.adversarial)
    success = result.success.cpu()
    record = {
        "label": LABELS[name],
        "n": len(result),
        "asr_pct": 100.0 * result.asr,
        "mi_evaluator": _mean(mi, success),
        "mi_evaluator_all": _mean(mi),
        "mi_attack": _mean(result.mi.cpu(), success),
        "l2": _mean(sizes["l2"].cpu()),
        "linf": _mean(sizes["linf"].cpu()),
        "l2_successful": _mean(sizes["l2"].cpu(), success),
        "linf_successful": _mean(sizes["linf"].cpu(), success),
        "iterations": iterations,
        "mean_first_success": _mean(result.first_success.cpu().double(), success),
        "seconds_per_example": seconds / len(result),
        "cpu_seconds_per_example": cpu_s / len(result),
    }
    if mi_check is not None:
        record["mi_evaluator_2x_steps"] = _mean(mi_check, success)
        record["mi_evaluator_change_2x"] = _mean((mi_check - mi).abs())
    return record


# --------------------------------------------------------------------------- one data set


class Experiment(_protocol.RecipeRun):
    """Runs the protocol per data set and seed; collects records, curves and grids."""

    def __init__(self, args: argparse.Namespace, out: Path):
        super().__init__(args, out)
        self.figures: list[str] = []

    def run(self, data: DataSpec, seed: int, *, figures: bool) -> None:
        args, tag = self.args, f"{data.name}/seed{seed}"
        with self.timer.stage(f"{tag}/load"):
            train, test = _protocol.load_splits(
                data.name, args.data_root, train_rows=args.train_rows, test_rows=args.test_rows
            )
            x_test, y_test = _protocol.stack(test)
        x_test, y_test = x_test.to(self.device), y_test.to(self.device)
        epochs = args.cifar_epochs if data.name == "cifar10" and args.cifar_epochs else args.epochs
        key = {
            "dataset": data.name,
            "rows": len(train),
            "seed": seed,
            "epochs": epochs,
            "optimizer": args.optimizer,
            "lr": args.lr,
        }
        trainer = _protocol.fit_trainer(device=self.device, epochs=epochs, seed=seed, progress=self.progress)
        with self.timer.stage(f"{tag}/train"):
            model, history = _protocol.train_model(
                lambda: Victim(data.shape, args.optimizer, args.lr),
                train,
                trainer,
                seed=seed,
                device=self.device,
                checkpoint=self.out / "models" / f"{data.name}-cw-seed{seed}.pt",
                key=key,
            )
        test_accuracy = accuracy(model, x_test, y_test)
        positions = correctly_classified(model, x_test, y_test, count=args.images, seed=_protocol.SUBSET_SEED)
        x, y = x_test[positions.to(self.device)], y_test[positions.to(self.device)]
        # the images' indices in the test split (they also seed the attacks' per-sample randomness)
        rows = torch.as_tensor(test.indices)[positions] if isinstance(test, Subset) else positions
        record: dict[str, Any] = {
            "dataset": data.name,
            "published_as": data.published,
            "seed": seed,
            "train_size": len(train),
            "test_size": len(x_test),
            "test_accuracy": test_accuracy,
            "images": len(rows),
            "image_index": rows.tolist(),
            "training": _protocol.brief(history),
            "attacks": {},
        }
        results: dict[str, AttackResult] = {}
        timings: dict[str, tuple[float, float, int, dict[str, Any]]] = {}
        for name, (attack, iterations) in build_attacks(model, data, args, seed).items():
            with self.timer.stage(f"{tag}/attack/{name}"):
                started, cpu_started = time.perf_counter(), time.process_time()
                results[name] = attack(x, y, index=rows)
                timings[name] = (
                    time.perf_counter() - started,
                    time.process_time() - cpu_started,
                    iterations,
                    attack.config(),
                )
        # every final pair, and the two reference pairs, in one evaluator call (same MINE init per image)
        others = {
            **{name: result.adversarial for name, result in results.items()},
            "identical copy": x.clone(),
            "unrelated image": x[torch.roll(torch.arange(len(x), device=x.device), 1)],
        }
        with self.timer.stage(f"{tag}/mi-evaluator"):
            scores = score_pairs(x, others, rows, args, seed, args.mi_steps)
        checks = None
        if not args.no_mi_check:
            with self.timer.stage(f"{tag}/mi-evaluator-2x"):
                checks = score_pairs(x, others, rows, args, seed, 2 * args.mi_steps)
        # MINE attacks compared on the images that all of them fooled (their MI means are over successes)
        mine_runs = [results[n] for n in MINE_ATTACKS if n in results]
        common_mask = torch.stack([r.success.cpu() for r in mine_runs]).all(dim=0) if mine_runs else None
        record["mine_common_successes"] = int(common_mask.sum()) if common_mask is not None else 0
        for name, result in results.items():
            seconds, cpu_s, iterations, config = timings[name]
            mi_check = checks[name] if checks is not None else None
            record["attacks"][name] = {
                **attack_record(name, result, x, seconds, cpu_s, iterations, scores[name], mi_check),
                "config": config,
            }
            if name in MINE_ATTACKS and common_mask is not None:
                record["attacks"][name]["mi_evaluator_common"] = _mean(scores[name], common_mask)
        record["mi_references"] = {key: _mean(scores[key]) for key in ("identical copy", "unrelated image")}
        if checks is not None:
            record["mi_references_2x_steps"] = {
                key: _mean(checks[key]) for key in ("identical copy", "unrelated image")
            }
            order = sorted(results, key=lambda n: -_mean(scores[n]))
            order_2x = sorted(results, key=lambda n: -_mean(checks[n]))
            record["mi_ranking"] = {
                "steps": order,
                "2x_steps": order_2x,
                "agree": order == order_2x,
            }
        self.runs.append(record)
        if figures:
            self._figures(data, x, results)

    def _figures(self, data: DataSpec, x: torch.Tensor, results: dict[str, AttackResult]) -> None:
        curves = {
            f"{LABELS[name]} (attack's own MINE estimate)": results[name].mi_trace.mean(dim=0).cpu().tolist()
            for name in MINE_ATTACKS
            if name in results and results[name].mi_trace is not None
        }
        if curves:
            path = save_curves(
                curves,
                self.out / f"mi_curves-{data.name}.png",
                xlabel="iteration",
                ylabel="mean MI estimate (nats)",
                title=f"{data.published}: MI per iteration",
            )
            self.figures.append(str(path))
        shown = torch.linspace(0, len(x) - 1, min(8, len(x))).round().long().unique()  # the rows are sorted by index
        clean = x.cpu()[shown]
        grid: dict[str, torch.Tensor] = {"clean": clean}
        for name in ("minmax", "penalty", "pgd"):
            if name in results:
                adversarial = results[name].adversarial.cpu()[shown]
                grid[LABELS[name]] = adversarial
                grid[f"{LABELS[name]} δ"] = perturbation_picture(adversarial - clean)
        if len(grid) > 1:
            path = save_image_grid(
                grid,
                self.out / f"grid-{data.name}.png",
                title=f"{data.published}: clean | adversarial | perturbation (amplified)",
            )
            self.figures.append(str(path))


# --------------------------------------------------------------------------- entry point


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the recipe; prints the Markdown tables; returns the exit status (0 on success)."""
    parser = build_parser()
    args, out = _config.start_run(parser, argv, QUICK, RECIPE)
    experiment = Experiment(args, out)
    available, skipped = [], []
    for name in args.datasets:
        try:
            for position, seed in enumerate(args.seeds):
                experiment.run(DATASETS[name], seed, figures=position == 0)
            available.append(name)
        except _protocol.MissingDataset as error:
            skipped.append({"dataset": name, "reason": str(error).splitlines()[0]})
    experiment.timer.close()
    if not available:
        parser.error("none of the requested data sets is available: " + "; ".join(s["reason"] for s in skipped))
    summary = _supervised_report.summarise(experiment.runs, available, args.attacks)
    table = _supervised_report.markdown(summary, args, minmax_mine_lr=feature_map_lr(args.preset))
    if skipped:
        table += "\nSkipped: " + "; ".join(f"{s['dataset']} ({s['reason']})" for s in skipped) + "\n"
    _report.write_outputs(
        out,
        RECIPE,
        args,
        experiment.timer,
        table,
        {
            "skipped": skipped,
            "runs": experiment.runs,
            "summary": summary,
            "published": PUBLISHED,
            "figures": experiment.figures,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
