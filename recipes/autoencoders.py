"""Data reconstruction: retrain autoencoders on clean data + their UAEs (the paper's main claim).

For every data set, autoencoder kind (sparse, dense, conv, adversarial) and seed:

1. train the autoencoder on the clean training set (the release's training
   settings unless ``--epochs`` says otherwise) and measure its test
   reconstruction error (per-pixel MSE on the test split);
2. generate one augmentation per training sample with each method, through
   :func:`uae_augment.data.cache.precompute` (reruns reuse the HDF5 caches):

   * ``mine``: MINE-UAE, ``MINEUAE(Reconstruction(ae), preset=--preset)``;
   * ``l2``: L2-UAE, the same MinMax loop maximising ||delta||_2 (``LpUAE``);
   * ``ga-0.01`` / ``ga-0.001``: Gaussian noise x + N(0, sigma^2), clipped;
   * ``init-only`` (ablation the paper lacks): ``MINEUAE(..., steps=1)``. With
     one iteration the MinMax loop only evaluates clip(x + delta_0), the
     attack's random glorot initialisation: no gradient step on delta and no
     MINE training; the example passes the same success filter (f_x = 0 and the
     MINE estimate > 0, here the estimate of the untrained statistics network);
   * ``mine-strong`` (ablation): MINE-UAE with the ``strong`` preset (sign steps
     on delta, MINE lr 1e-3), in which the MI term measurably shapes delta;

3. retrain the same architecture from the same initialisation on clean +
   augmentation concatenated 1:1 (``UAEAugmented(train, attack, mode="concat",
   cache=...)``, 2N samples) for the same number of epochs, and measure the
   test error; the training-set ASR of each method comes from its cache;
4. the control the paper lacks: the clean model trained for as many
   optimisation steps as the augmented one (twice the epochs).

UAEs that failed (success=False) are kept in the augmented set by default
(``--failed keep``): the release concatenates every generated example (for a
failed sample, the iterate with the lowest criterion), and keeping them makes
every augmented run exactly 2N samples and the same number of steps, so the
same-steps control serves all methods. ``--failed drop`` trains on the clean
set plus the successful UAEs only (the control then matches the MINE-UAE run).

Outputs in ``--out``: ``results.json`` (per-seed values, mean/std summaries, the
published figures, the environment), ``results.md`` (the tables, docs/method.md section
6 layout with the published figures beside ours), ``config.yaml`` (the resolved
configuration), ``wall_time.log`` (seconds per stage), ``grid-<data>-<ae>.png``
(clean | UAE | perturbation per method), ``cache/`` (the UAE caches) and
``models/`` (the clean models, so reruns reuse caches and weights).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

import _config
import _protocol
import _report
from uae_augment import MINEUAE, PRESETS, Attack, GaussianNoise, LpUAE, Reconstruction
from uae_augment.evaluation import reconstruction_error
from uae_augment.models import build_model
from uae_augment.plots import perturbation_picture, save_image_grid

RECIPE = "autoencoders"
MODEL_KINDS = ("sparse", "dense", "conv", "adversarial")
DATASETS = ("mnist", "fashion-mnist", "svhn")
SVHN_STAND_IN = "cifar10"


@dataclasses.dataclass(frozen=True)
class Method:
    """One augmentation method: its table label, published-table key and attack factory."""

    key: str
    label: str
    published: str | None
    build: Callable[[Reconstruction, argparse.Namespace, int], Attack]


def attack_steps(criterion: Reconstruction, args: argparse.Namespace, *, strong: bool = False) -> int | None:
    """MinMax iterations for this model: ``--dense-attack-steps`` for models without a convolution."""
    if args.dense_attack_steps is not None and criterion.feature_layer() is None:
        return args.dense_attack_steps
    return (args.strong_steps or args.attack_steps) if strong else args.attack_steps


def _mine(criterion: Reconstruction, args: argparse.Namespace, seed: int) -> Attack:
    return MINEUAE(
        criterion,
        preset=args.preset,
        steps=attack_steps(criterion, args),
        mine_steps=args.mine_steps,
        projections=args.projections,
        projection_dim=args.projection_dim,
        seed=seed,
        batch_size=args.attack_batch_size,
    )


def _l2(criterion: Reconstruction, args: argparse.Namespace, seed: int) -> Attack:
    return LpUAE(criterion, preset=args.preset, steps=attack_steps(criterion, args), seed=seed)


def _init_only(criterion: Reconstruction, args: argparse.Namespace, seed: int) -> Attack:
    return MINEUAE(
        criterion,
        preset=args.preset,
        steps=1,
        projections=args.projections,
        projection_dim=args.projection_dim,
        seed=seed,
        batch_size=args.attack_batch_size,
    )


def _mine_strong(criterion: Reconstruction, args: argparse.Namespace, seed: int) -> Attack:
    return MINEUAE(
        criterion,
        preset="strong",
        steps=attack_steps(criterion, args, strong=True),
        mine_steps=args.mine_steps,
        projections=args.projections,
        projection_dim=args.projection_dim,
        seed=seed,
        batch_size=args.attack_batch_size,
    )


def _noise(sigma: float) -> Callable[[Reconstruction, argparse.Namespace, int], Attack]:
    def build(criterion: Reconstruction, args: argparse.Namespace, seed: int) -> Attack:
        return GaussianNoise(criterion, sigma=sigma, seed=seed)

    return build


METHODS: dict[str, Method] = {
    m.key: m
    for m in (
        Method("mine", "MINE-UAE", "mine", _mine),
        Method("l2", "L2-UAE", "l2", _l2),
        Method("ga-0.01", "GA σ=0.01", "ga-0.01", _noise(0.01)),
        Method("ga-0.001", "GA σ=1e-3", "ga-0.001", _noise(0.001)),
        Method("init-only", "init only", None, _init_only),
        Method("mine-strong", "MINE-UAE strong", None, _mine_strong),
    )
}

Published = dict[str, Any]
"""One row of the published table: test error per method key ("original", "mine", "l2",
"ga-0.01", "ga-0.001"; None where the OCR'd report is illegible) and "asr" (%) per method."""


def _published(
    original: float | None,
    mine: float | None,
    l2: float | None,
    ga1: float | None,
    ga2: float | None,
    asr: tuple[float, float, float, float],
) -> Published:
    return {
        "original": original,
        "mine": mine,
        "l2": l2,
        "ga-0.01": ga1,
        "ga-0.001": ga2,
        "asr": dict(zip(("mine", "l2", "ga-0.01", "ga-0.001"), asr)),
    }


# docs/method.md section 6: test reconstruction error per method and training-set ASR (%).
PUBLISHED: dict[str, dict[str, Published]] = {
    "MNIST": {
        "sparse": _published(0.00561, 0.00243, 0.00348, 0.00280, 0.00280, (100, 99.18, 54.10, 63.95)),
        "dense": _published(0.00258, 0.00228, 0.00286, 0.00244, 0.00238, (92.99, 99.94, 48.53, 58.47)),
        "conv": _published(0.00294, 0.00256, 0.00364, 0.00301, 0.00304, (99.86, 99.61, 68.71, 99.61)),
        "adversarial": _published(0.04785, 0.04581, 0.06098, 0.05793, 0.05544, (98.46, 43.54, 99.79, 99.83)),
    },
    "SVHN": {
        "sparse": _published(0.00887, 0.00235, 0.00315, 0.00301, 0.00293, (100, 72.16, 72.42, 79.92)),
        "dense": _published(0.00659, 0.00421, 0.0055, 0.00858, 0.00860, (99.99, 82.65, 92.3, 93.92)),
        "conv": _published(None, None, None, None, None, (100, 56, 96.40, 99.24)),
        "adversarial": _published(0.00173, None, None, 0.00161, 0.00130, (94.82, 58.98, 97.31, 99.85)),
    },
}

QUICK: dict[str, Any] = {
    "datasets": ["mnist-5k"],
    "seeds": [0, 1],
    "epochs": 6,
    "train_rows": 400,
    "test_rows": 1000,
    "preset": "fast",
    "attack_steps": 5,
    "dense_attack_steps": 40,  # random-projection MINE needs the paper's T to reach MI > 0; cheap there
    "projections": 100,
    "projection_dim": 32,  # ~3x cheaper than 128 (measured): projecting x' dominates a dense model's attack
    "probe": 8,
    "threads": _config.QUICK_THREADS,
}


# --------------------------------------------------------------------------- configuration


def build_parser() -> argparse.ArgumentParser:
    """The recipe's command-line interface."""
    parser = _config.base_parser(
        __doc__,
        quick=QUICK,
        examples=[
            "python recipes/autoencoders.py --quick                      # MNIST-5k, minutes on a CPU",
            "python recipes/autoencoders.py --config recipes/configs/autoencoders_full.yaml",
            "python recipes/autoencoders.py --quick --models conv --methods mine ga-0.01 --seeds 0",
        ],
    )
    group = parser.add_argument_group("experiment")
    group.add_argument(
        "--datasets",
        nargs="+",
        default=list(DATASETS),
        help="data sets; 'svhn' falls back to cifar10 (32x32x3) when its file is absent (default: %(default)s)",
    )
    group.add_argument(
        "--models",
        nargs="+",
        default=list(MODEL_KINDS),
        choices=MODEL_KINDS,
        help="autoencoder kinds (default: all)",
    )
    group.add_argument(
        "--methods",
        nargs="+",
        default=list(METHODS),
        choices=list(METHODS),
        help="augmentation methods (default: all)",
    )
    group.add_argument("--no-control", action="store_true", help="skip the same-steps clean control")
    group.add_argument(
        "--failed",
        choices=_protocol.FAILED_POLICIES,
        default="keep",
        help="UAEs whose attack failed: keep them (the release's concatenation) or drop them (default: %(default)s)",
    )
    group.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="training epochs of every model (default: the release's per model: sparse 50, dense 20, conv 20, adversarial 50)",
    )
    group.add_argument(
        "--train-rows",
        type=int,
        default=None,
        help="use a fixed random subset of N training rows (default: all)",
    )
    group.add_argument(
        "--test-rows",
        type=int,
        default=None,
        help="use a fixed random subset of N test rows (default: all)",
    )
    attack = parser.add_argument_group("attacks")
    attack.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default="paper",
        help="MINE-UAE / L2-UAE / init-only preset (default: %(default)s, the release's values)",
    )
    attack.add_argument(
        "--attack-steps",
        type=int,
        default=None,
        help="MinMax iterations T (default: the preset's, 40)",
    )
    attack.add_argument(
        "--strong-steps",
        type=int,
        default=None,
        help="iterations of mine-strong (default: --attack-steps)",
    )
    attack.add_argument(
        "--dense-attack-steps",
        type=int,
        default=None,
        help="MinMax iterations of every MINE/L2 attack on the models without a convolution"
        " (random-projection MINE, whose DV estimate starts negative and needs about the"
        " paper's 40 iterations to pass the MI > 0 filter; default: --attack-steps)",
    )
    attack.add_argument(
        "--mine-steps",
        type=int,
        default=None,
        help="MINE Adam steps per iteration (default: the preset's)",
    )
    attack.add_argument(
        "--projections",
        type=int,
        default=500,
        help="random projections K of MINE for the dense models (release: %(default)s)",
    )
    attack.add_argument(
        "--projection-dim",
        type=int,
        default=128,
        help="length of each random projection of MINE (release: %(default)s)",
    )
    attack.add_argument(
        "--attack-batch-size",
        type=int,
        default=None,
        help="samples attacked together (default: the preset's)",
    )
    attack.add_argument(
        "--precompute-batch-size",
        type=int,
        default=256,
        help="rows per precompute batch (default: %(default)s)",
    )
    attack.add_argument(
        "--probe",
        type=int,
        default=8,
        help="evenly spaced training rows attacked again in memory for the grid and the moved-from-delta_0 statistics (default: %(default)s)",
    )
    return parser


# --------------------------------------------------------------------------- data


@dataclasses.dataclass
class DataSpec:
    """A data set as the recipe uses it: what was asked, what was loaded, how it compares."""

    requested: str
    name: str
    published: str | None
    note: str = ""

    @property
    def label(self) -> str:
        return self.name if not self.note else f"{self.name} ({self.note})"


def resolve_datasets(requested: Sequence[str], root: Path | None) -> tuple[list[DataSpec], list[dict[str, str]]]:
    """Maps requested names to loadable data sets; returns (usable, skipped-with-reason)."""
    usable: list[DataSpec] = []
    skipped: list[dict[str, str]] = []
    for name in requested:
        key = name.lower().replace("_", "-")
        published = {"mnist": "MNIST", "mnist-5k": "MNIST", "svhn": "SVHN"}.get(key)
        if key == "svhn" and not _protocol.dataset_available("svhn", root):
            if _protocol.dataset_available(SVHN_STAND_IN, root):
                usable.append(DataSpec(name, SVHN_STAND_IN, "SVHN", "stand-in for SVHN, whose file is absent"))
            else:
                skipped.append({"dataset": name, "reason": "neither svhn nor cifar10 found in the data root"})
            continue
        if not _protocol.dataset_available(key, root):
            skipped.append({"dataset": name, "reason": "file not found in the data root"})
            continue
        note = "4,000-digit subset" if key == "mnist-5k" else ""
        usable.append(DataSpec(name, key, published, note))
    return usable, skipped


# --------------------------------------------------------------------------- the experiment


class Experiment(_protocol.RecipeRun):
    """Runs the protocol for the configuration ``args`` and collects the per-seed records."""

    def __init__(self, args: argparse.Namespace, out: Path):
        super().__init__(args, out)
        self.methods = [METHODS[key] for key in args.methods]
        self.grids: list[str] = []

    def run(self, data: DataSpec) -> None:
        with self.timer.stage(f"{data.name}/load"):
            train, test = _protocol.load_splits(
                data.name,
                self.args.data_root,
                train_rows=self.args.train_rows,
                test_rows=self.args.test_rows,
            )
            x_test, _ = _protocol.stack(test)
        shape = _protocol.sample_shape(train)
        for kind in self.args.models:
            for position, seed in enumerate(self.args.seeds):
                record = self.run_seed(data, kind, seed, train, x_test, shape, grid=position == 0)
                self.runs.append(record)

    def run_seed(
        self,
        data: DataSpec,
        kind: str,
        seed: int,
        train: Any,
        x_test: torch.Tensor,
        shape: tuple[int, ...],
        *,
        grid: bool,
    ) -> dict[str, Any]:
        """Clean model, every method's augmentation and retrain, and the same-steps control."""
        tag = f"{data.name}/{kind}/seed{seed}"

        def build() -> nn.Module:
            return build_model(f"{kind}-ae", shape)

        trainer = _protocol.fit_trainer(device=self.device, epochs=self.args.epochs, seed=seed, progress=self.progress)
        key = {
            "dataset": data.name,
            "kind": kind,
            "seed": seed,
            "epochs": self.args.epochs,
            "train_rows": len(train),
            "shape": list(shape),
        }
        with self.timer.stage(f"{tag}/train-clean"):
            clean, history = _protocol.train_model(
                build,
                train,
                trainer,
                seed=seed,
                device=self.device,
                checkpoint=self.out / "models" / f"{data.name}-{kind}-seed{seed}.pt",
                key=key,
            )
        record: dict[str, Any] = {
            "dataset": data.name,
            "model": kind,
            "seed": seed,
            "train_size": len(train),
            "test_size": len(x_test),
            "original": {"test_mse": self._test_mse(clean, x_test), **_protocol.brief(history)},
            "methods": {},
        }
        grid_rows: dict[str, torch.Tensor] = {}
        for method in self.methods:
            record["methods"][method.key] = self.augment_and_retrain(
                method,
                Reconstruction(clean),
                train,
                x_test,
                build,
                trainer,
                seed,
                tag,
                grid_rows if grid else None,
            )
        if not self.args.no_control and record["methods"]:
            # every augmented set has 2N rows under --failed keep; under drop the MINE-UAE run sets the budget
            steps = record["methods"].get("mine", next(iter(record["methods"].values())))["steps"]
            same_steps = _protocol.fit_trainer(device=self.device, max_steps=steps, seed=seed, progress=self.progress)
            with self.timer.stage(f"{tag}/same-steps-control"):
                control, control_history = _protocol.train_model(
                    build, train, same_steps, seed=seed, device=self.device
                )
            record["same_steps"] = {
                "test_mse": self._test_mse(control, x_test),
                **_protocol.brief(control_history),
            }
        if grid_rows:
            path = save_image_grid(
                grid_rows,
                self.out / f"grid-{data.name}-{kind}.png",
                title=f"{data.label}, {kind} AE, seed {seed}: clean | augmentation | δ (amplified)",
            )
            self.grids.append(str(path))
        return record

    def augment_and_retrain(
        self,
        method: Method,
        criterion: Reconstruction,
        train: Any,
        x_test: torch.Tensor,
        build: Callable[[], nn.Module],
        trainer: _protocol.Trainer,
        seed: int,
        tag: str,
        grid_rows: dict[str, torch.Tensor] | None,
    ) -> dict[str, Any]:
        """One method: its cached augmentations, their statistics, the retrained model's test error."""
        attack = method.build(criterion, self.args, seed)
        name = tag.replace("/", "-")  # e.g. mnist-5k-conv-seed0
        with self.timer.stage(f"{tag}/attack/{method.key}"):
            augmentation = _protocol.augment(
                train,
                attack,
                self.out / "cache" / f"{name}-{method.key}.h5",
                failed=self.args.failed,
                batch_size=self.args.precompute_batch_size,
                progress=self.progress,
            )
        entry: dict[str, Any] = {"attack": attack.config(), **augmentation.stats()}
        if self.args.probe > 0:
            with self.timer.stage(f"{tag}/probe/{method.key}"):
                x_probe, result, entry["probe"] = _protocol.probe(attack, train, self.args.probe, augmentation.cache)
            if grid_rows is not None:
                grid_rows.setdefault("clean", x_probe)
                grid_rows[method.label] = result.adversarial.cpu()
                grid_rows[f"{method.label} δ"] = perturbation_picture(result.perturbation(x_probe).cpu())
        with self.timer.stage(f"{tag}/retrain/{method.key}"):
            model, history = _protocol.train_model(build, augmentation.dataset, trainer, seed=seed, device=self.device)
        return {**entry, "test_mse": self._test_mse(model, x_test), **_protocol.brief(history)}

    @staticmethod
    def _test_mse(model: nn.Module, x_test: torch.Tensor) -> float:
        return float(reconstruction_error(model, x_test))


# --------------------------------------------------------------------------- summaries and tables


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


# --------------------------------------------------------------------------- entry point


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the recipe; prints the Markdown table; returns the exit status (0 on success)."""
    parser = build_parser()
    args, out = _config.start_run(parser, argv, QUICK, RECIPE)
    datasets, skipped = resolve_datasets(args.datasets, args.data_root)
    if not datasets:
        parser.error("none of the requested data sets is available: " + "; ".join(s["reason"] for s in skipped))
    experiment = Experiment(args, out)
    for data in datasets:
        experiment.run(data)
    experiment.timer.close()
    summary = summarise(experiment.runs, datasets, args.models, args.methods)
    table = markdown(summary, args.methods, failed=args.failed, skipped=skipped)
    _report.write_outputs(
        out,
        RECIPE,
        args,
        experiment.timer,
        table,
        {
            "failed_uaes": args.failed,
            "datasets": [dataclasses.asdict(d) for d in datasets],
            "skipped": skipped,
            "runs": experiment.runs,
            "summary": summary,
            "published": PUBLISHED,
            "grids": experiment.grids,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
