"""Does UAE augmentation help? Paired arms over seeds against the same-steps control (issue #14 item 3).

For each model (``conv``: MNIST conv AE, ``sparse``: MNIST sparse AE, ``simclr``:
CIFAR-10 SimCLR) and each seed s (a seed fixes the clean model's
initialisation, the data order and the attack seed), the arms are:

* ``original``: the clean model, E epochs on the N training rows;
* ``same-steps``: the clean model trained for as many steps as an augmented
  one (2N rows for E epochs), the control every other arm is compared to;
* augmented arms, each retrained from the same initialisation on clean + one
  augmentation per row (1:1, 2N rows, E epochs; failed UAEs are kept, as the
  release does, so every augmented run has the control's step count), the
  augmentations generated against seed s's clean model:
  ``init-only`` (MINE-UAE with T = 1: the attack's random start), ``l2-uae``,
  ``mine-fast``, ``mine-strong`` (MINE-UAE presets), and two noise controls
  matched row by row to that seed's ``mine-fast`` UAE
  (:class:`uae_augment.attacks.MatchedNoise`): ``l2-matched`` (Gaussian
  direction, same L2 distance to x) and ``cos-matched`` (same retained
  component of x and orthogonal energy, so the same cos(x, x')).

Metric: test reconstruction MSE for the autoencoders (lower is better), linear
evaluation test accuracy for SimCLR (higher is better); every arm is reported
as the paired difference arm − same-steps over the seeds
(:func:`uae_augment.statistics.paired_difference`: 95 % CI, p, MDE at 80 %
power, verdict). The test split is only ever evaluated, never used to choose a
setting.

Per-seed records go to ``<out>/<model>/seed<s>.json`` as each arm finishes; a
rerun skips finished arms and reuses the clean checkpoints and UAE caches, so
arms can be added later (``--arms``). ``--summarise`` joins the records into
``benchmarks/results/verdict.json`` and ``verdict.md``.

Usage::

    python benchmarks/verdict.py --model conv --seeds 0 1 2 3 4 --out outputs/verdict
    python benchmarks/verdict.py --summarise --out outputs/verdict outputs/verdict-sparse1000
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(1, str(Path(__file__).resolve().parents[1] / "recipes"))  # the recipes' sibling modules

import _protocol  # noqa: E402
import _report  # noqa: E402
import simclr as simclr_recipe  # noqa: E402
from benchmarks._common import machine_info  # noqa: E402
from uae_augment import MINEUAE, Attack, Criterion, LpUAE, MatchedNoise, Reconstruction, fit  # noqa: E402
from uae_augment.evaluation import linear_evaluation, reconstruction_error  # noqa: E402
from uae_augment.models import SimCLR, build_model  # noqa: E402
from uae_augment.statistics import paired_difference  # noqa: E402

logger = logging.getLogger("benchmarks.verdict")

RESULTS = Path(__file__).resolve().parent / "results"
CONTROL = "same-steps"
ARMS = (
    "original",
    CONTROL,
    "init-only",
    "l2-matched",
    "cos-matched",
    "l2-uae",
    "mine-fast",
    "mine-strong",
)
LABELS = {
    "original": "original (E epochs)",
    CONTROL: "same-steps clean (control)",
    "init-only": "init only (T = 1)",
    "l2-matched": "L2-matched noise",
    "cos-matched": "cosine-matched noise",
    "l2-uae": "L2-UAE",
    "mine-fast": "MINE-UAE (fast)",
    "mine-strong": "MINE-UAE (strong)",
}
MATCHED = {"l2-matched": "l2", "cos-matched": "cosine"}
REFERENCE_ARM = "mine-fast"
HEAD_TO_HEAD = (
    ("mine-fast", "cos-matched"),
    ("mine-fast", "l2-matched"),
    ("mine-fast", "init-only"),
    ("l2-uae", "l2-matched"),
    ("mine-strong", "mine-fast"),
    ("mine-strong", "init-only"),
)
"""Pairs (arm, rival) compared directly, paired over seeds: do the UAEs beat their matched controls?"""
RUN_ORDER = (
    "original",
    CONTROL,
    "init-only",
    "l2-uae",
    REFERENCE_ARM,
    "l2-matched",
    "cos-matched",
    "mine-strong",
)


@dataclasses.dataclass(frozen=True)
class Settings:
    """One model's scale: data, rows, epochs and attack iterations (recorded with every seed)."""

    model: str
    dataset: str
    train_rows: int
    test_rows: int
    epochs: int
    attack_steps: int
    batch_size: int | None = None
    projections: int = 100
    projection_dim: int = 32
    width: int = 8
    negatives: int = 64
    linear_epochs: int = 300
    linear_rows: int = 2000


SETTING_DEFAULTS = {f.name: f.default for f in dataclasses.fields(Settings) if f.default is not dataclasses.MISSING}

DEFAULTS: dict[str, Settings] = {
    "conv": Settings("conv", "mnist", 100, 1000, 10, 5),
    "sparse": Settings("sparse", "mnist", 100, 1000, 20, 20),
    "simclr": Settings("simclr", "cifar10", 192, 1000, 6, 3, batch_size=64, negatives=32, linear_epochs=100),
}


# --------------------------------------------------------------------------- the models


class Task:
    """What the verdict needs of one model: training, evaluation, its criterion and attacks."""

    metric = ""
    better = "lower"

    def __init__(self, settings: Settings, data_root: Path | None, device: torch.device):
        self.settings = settings
        self.device = device
        self.train, self.test = _protocol.load_splits(
            settings.dataset,
            data_root,
            train_rows=settings.train_rows,
            test_rows=settings.test_rows,
        )
        self.shape = _protocol.sample_shape(self.train)

    def build(self) -> nn.Module:
        raise NotImplementedError

    def fit(self, model: nn.Module, dataset: Dataset, seed: int, max_steps: int | None) -> dict[str, Any]:
        raise NotImplementedError

    def evaluate(self, model: nn.Module, seed: int) -> dict[str, float]:
        raise NotImplementedError

    def criterion(self, model: nn.Module, seed: int) -> Criterion:
        raise NotImplementedError

    def train_model(
        self,
        dataset: Dataset,
        seed: int,
        *,
        max_steps: int | None = None,
        checkpoint: Path | None = None,
    ) -> tuple[nn.Module, dict[str, Any]]:
        """A model built with ``seed`` and trained on ``dataset`` (E epochs, or ``max_steps``)."""

        def trainer(model: nn.Module, data: Dataset) -> tuple[nn.Module, dict[str, Any]]:
            return model, self.fit(model, data, seed, max_steps)

        key = {**dataclasses.asdict(self.settings), "seed": seed}
        return _protocol.train_model(
            self.build,
            dataset,
            trainer,
            seed=seed,
            device=self.device,
            checkpoint=checkpoint,
            key=key,
        )

    def attack(self, arm: str, criterion: Criterion, seed: int, reference: Path | None) -> Attack:
        """The attack that generates arm ``arm``'s augmentation."""
        s = self.settings
        mine = {
            "seed": seed,
            "projections": s.projections,
            "projection_dim": s.projection_dim,
            **self.attack_options(),
        }
        if arm == "init-only":
            return MINEUAE(criterion, preset="fast", steps=1, **mine)
        if arm == "mine-fast":
            return MINEUAE(criterion, preset="fast", steps=s.attack_steps, **mine)
        if arm == "mine-strong":
            return MINEUAE(criterion, preset="strong", steps=s.attack_steps, **mine)
        if arm == "l2-uae":
            return LpUAE(criterion, preset="fast", steps=s.attack_steps, seed=seed, **self.attack_options())
        if arm in MATCHED:
            assert reference is not None
            return MatchedNoise(criterion, reference, match=MATCHED[arm], seed=seed)
        raise ValueError(f"{arm!r} is not an attack arm")

    def attack_options(self) -> dict[str, Any]:
        return {}


class AutoencoderTask(Task):
    """MNIST autoencoders: ``fit``'s release protocol; test reconstruction MSE (lower is better)."""

    metric = "test_mse"
    better = "lower"

    def __init__(self, settings: Settings, data_root: Path | None, device: torch.device):
        super().__init__(settings, data_root, device)
        self.x_test, _ = _protocol.stack(self.test)

    def build(self) -> nn.Module:
        return build_model(f"{self.settings.model}-ae", self.shape)

    def fit(self, model: nn.Module, dataset: Dataset, seed: int, max_steps: int | None) -> dict[str, Any]:
        epochs = None if max_steps is not None else self.settings.epochs
        trainer = _protocol.fit_trainer(device=self.device, epochs=epochs, max_steps=max_steps, seed=seed)
        return trainer(model, dataset)[1]

    def evaluate(self, model: nn.Module, seed: int) -> dict[str, float]:
        return {"test_mse": float(reconstruction_error(model, self.x_test))}

    def criterion(self, model: nn.Module, seed: int) -> Criterion:
        return Reconstruction(model)


class SimCLRTask(Task):
    """CIFAR-10 SimCLR (recipes/simclr.py's training and linear evaluation); linear test accuracy.

    The linear probe is trained on ``linear_rows`` labelled training-split images (not only the
    SimCLR rows): with 128-192 labelled images its accuracy was dominated by the probe's own noise.
    """

    metric = "linear_test_acc"
    better = "higher"

    def __init__(self, settings: Settings, data_root: Path | None, device: torch.device):
        super().__init__(settings, data_root, device)
        # the linear probe's labelled images: a fixed training-split subset, larger than the SimCLR rows
        self.linear_xy = _protocol.stack(
            _protocol.load_splits(settings.dataset, data_root, train_rows=settings.linear_rows, test_rows=1)[0]
        )
        self.test_xy = _protocol.stack(self.test)
        self.bank = _protocol.stack(_protocol.subset_rows(self.train, settings.negatives))[0]

    def build(self) -> nn.Module:
        return SimCLR(in_channels=self.shape[0], image_size=self.shape[1:], width=self.settings.width)

    def fit(self, model: nn.Module, dataset: Dataset, seed: int, max_steps: int | None) -> dict[str, Any]:
        assert isinstance(model, SimCLR) and self.settings.batch_size is not None
        epochs = None if max_steps is not None else self.settings.epochs
        history = fit(
            model,
            dataset,
            batch_size=self.settings.batch_size,
            seed=seed,
            device=self.device,
            world=(0, 1),
            epochs=epochs,
            max_steps=max_steps,
            progress=False,
        )
        return {**_protocol.history_record(history), "step_losses": history.step_losses}

    def evaluate(self, model: nn.Module, seed: int) -> dict[str, float]:
        assert isinstance(model, SimCLR)
        _, linear = linear_evaluation(
            model.backbone,
            self.linear_xy,
            self.test_xy,
            classes=10,
            epochs=self.settings.linear_epochs,
            lr=1e-3,
            batch_size=simclr_recipe.LINEAR_BATCH,
            seed=seed,
            device=self.device,
        )
        ntxent = simclr_recipe.test_ntxent(model, self.test_xy[0], batch_size=256, device=self.device)
        return {
            "linear_test_acc": linear["test_acc"],
            "linear_train_acc": linear["train_acc"],
            "test_ntxent": ntxent,
        }

    def criterion(self, model: nn.Module, seed: int) -> Criterion:
        assert isinstance(model, SimCLR)
        return model.criterion(n_views=2, negatives=self.bank, seed=seed)

    def attack_options(self) -> dict[str, Any]:
        return {"gamma_power": simclr_recipe.GAMMA_POWER}


TASKS: dict[str, type[Task]] = {
    "conv": AutoencoderTask,
    "sparse": AutoencoderTask,
    "simclr": SimCLRTask,
}


# --------------------------------------------------------------------------- one seed


def _brief(history: dict[str, Any]) -> dict[str, Any]:
    return {
        "steps": history["steps"],
        "epochs": history["epochs"],
        "train_s": round(history["seconds"], 2),
    }


def run_seed(task: Task, seed: int, arms: Sequence[str], out: Path) -> dict[str, Any]:
    """Runs the missing ``arms`` of one seed; the record is saved after every arm."""
    folder = out / task.settings.model
    path = folder / f"seed{seed}.json"
    settings = dataclasses.asdict(task.settings)
    record: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {"seed": seed, "arms": {}}
    if record.setdefault("settings", settings) != settings:
        raise SystemExit(f"{path} was written with other settings ({record['settings']}); use another --out")

    def save(arm: str, entry: dict[str, Any]) -> None:
        record["arms"][arm] = entry
        _report.write_json(path, record)
        logger.info(
            "%s seed %d %s: %s",
            task.settings.model,
            seed,
            arm,
            {k: v for k, v in entry.items() if k in (task.metric, "asr_pct", "seconds")},
        )

    started = time.process_time()
    clean, history = task.train_model(task.train, seed, checkpoint=folder / "models" / f"clean-seed{seed}.pt")
    if "original" not in record["arms"]:
        save(
            "original",
            {
                **_brief(history),
                **task.evaluate(clean, seed),
                "cpu_s": time.process_time() - started,
            },
        )
    steps = 2 * record["arms"]["original"]["steps"]  # the augmented sets have 2N rows, E epochs
    for arm in sorted(arms, key=RUN_ORDER.index):
        if arm in record["arms"] or arm == "original":
            continue
        started = time.process_time()
        if arm == CONTROL:
            model, history = task.train_model(task.train, seed, max_steps=steps)
            save(
                arm,
                {
                    **_brief(history),
                    **task.evaluate(model, seed),
                    "cpu_s": time.process_time() - started,
                },
            )
            continue
        reference = folder / "cache" / f"seed{seed}-{REFERENCE_ARM}.h5"
        attack = task.attack(arm, task.criterion(clean, seed), seed, reference)
        augmentation = _protocol.augment(
            task.train,
            attack,
            folder / "cache" / f"seed{seed}-{arm}.h5",
            batch_size=64,
            progress=False,
        )
        attack_cpu = time.process_time() - started
        model, history = task.train_model(augmentation.dataset, seed)
        if history["steps"] != steps:
            raise RuntimeError(f"{arm} trained {history['steps']} steps, the control {steps}")
        entry = {
            **_brief(history),
            **task.evaluate(model, seed),
            **augmentation.stats(),
            "attack_steps": attack.config().get("steps"),
            "attack_cpu_s": round(attack_cpu, 2),
            "cpu_s": time.process_time() - started,
        }
        save(arm, entry)
    return record


# --------------------------------------------------------------------------- summary


def merged_records(*outs: Path) -> dict[tuple[str, int], list[dict[str, Any]]]:
    """The seed records under the ``outs`` folders, per (model, train rows), arms of one seed merged.

    Arms can run in several folders (e.g. a late arm in its own folder, to run beside an unfinished
    one); a seed's records of equal settings are joined, and an arm found twice must have the same
    metric values (the clean model is retrained bitwise from its seed; ``original`` checks it).

    Raises:
        ValueError: an arm recorded twice with different values.
    """
    joined: dict[tuple[str, int], dict[int, dict[str, Any]]] = {}
    for out in outs:
        for name in TASKS:
            for path in sorted((out / name).glob("seed*.json")):
                record = json.loads(path.read_text())
                record["settings"] = {
                    **SETTING_DEFAULTS,
                    **record["settings"],
                }  # fields added later: defaults
                seeds = joined.setdefault((name, record["settings"]["train_rows"]), {})
                seed = seeds.setdefault(record["seed"], {**record, "arms": {}})
                if seed["settings"] != record["settings"]:
                    raise ValueError(f"{path}: other settings than the same model's records elsewhere")
                metric = TASKS[name].metric
                for arm, entry in record["arms"].items():
                    if arm in seed["arms"] and seed["arms"][arm][metric] != entry[metric]:
                        raise ValueError(
                            f"{path}: {arm} differs from its other record ({entry[metric]} vs"
                            f" {seed['arms'][arm][metric]})"
                        )
                    seed["arms"].setdefault(arm, entry)
    return {key: [seeds[s] for s in sorted(seeds)] for key, seeds in joined.items()}


def summarise(*outs: Path) -> dict[str, Any]:
    """Paired differences against the control of every model and arm found under the ``outs`` folders.

    Keys: ``<model>-<train rows>`` (e.g. ``conv-100``), so runs of one model at two scales stay apart.
    """
    models: dict[str, Any] = {}
    for (name, rows), records in merged_records(*outs).items():
        metric, better = TASKS[name].metric, TASKS[name].better
        arms: dict[str, Any] = {}
        for arm in ARMS:
            paired = [r for r in records if arm in r["arms"] and CONTROL in r["arms"]]
            if not paired:
                continue
            values = [r["arms"][arm][metric] for r in paired]
            entry: dict[str, Any] = {
                "seeds": [r["seed"] for r in paired],
                "mean": _report.mean_std(values),
                "asr_pct": _report.mean_std([r["arms"][arm].get("asr_pct", math.nan) for r in paired]),
                "attack_steps": paired[0]["arms"][arm].get("attack_steps"),
                "cpu_s": _report.mean_std([r["arms"][arm].get("cpu_s", math.nan) for r in paired]),
            }
            if arm != CONTROL and len(paired) >= 2:
                try:
                    entry["vs_control"] = paired_difference(
                        values, [r["arms"][CONTROL][metric] for r in paired], better=better
                    ).to_dict()
                except ValueError as error:
                    entry["vs_control_error"] = str(error)
            arms[arm] = entry
        total = sum(a.get("cpu_s", 0.0) for r in records for a in r["arms"].values())
        models[f"{name}-{rows}"] = {
            "model": name,
            "metric": metric,
            "better": better,
            "settings": records[0]["settings"],
            "arms": arms,
            "head_to_head": head_to_head(records, metric, better),
            "total_cpu_s": round(total, 1),
        }
    return models


def _number(value: float | None, digits: int) -> str:
    return _report.format_number(value, digits)


def head_to_head(records: Sequence[dict[str, Any]], metric: str, better: str) -> dict[str, Any]:
    """:data:`HEAD_TO_HEAD` comparisons (arm − rival per seed) where both arms ran on >= 2 seeds."""
    found: dict[str, Any] = {}
    for arm, rival in HEAD_TO_HEAD:
        paired = [r for r in records if arm in r["arms"] and rival in r["arms"]]
        if len(paired) < 2:
            continue
        try:
            comparison = paired_difference(
                [r["arms"][arm][metric] for r in paired],
                [r["arms"][rival][metric] for r in paired],
                better=better,
            ).to_dict()
        except ValueError as error:
            comparison = {"error": str(error)}
        found[f"{arm} vs {rival}"] = {
            "arm": arm,
            "rival": rival,
            "seeds": [r["seed"] for r in paired],
            **comparison,
        }
    return found


def _scale(model: dict[str, Any]) -> tuple[float, int]:
    """(factor, decimals) of a model's metric in the tables: MSE x 1e3 to 3, accuracy % to 2."""
    return (1e3, 3) if model["better"] == "lower" else (1.0, 2)


def verdict_table(models: dict[str, Any]) -> str:
    """One row per model, one cell per augmented arm: verdict, Δ vs control [95 % CI], MDE."""
    arms = [arm for arm in ARMS if arm not in ("original", CONTROL)]
    rows = []
    for model in models.values():
        s, (scale, digits) = model["settings"], _scale(model)
        metric = "test MSE ×1e3" if model["better"] == "lower" else "linear acc. %"
        cells = []
        for arm in arms:
            comparison = model["arms"].get(arm, {}).get("vs_control")
            cells.append(
                "—"
                if comparison is None
                else f"**{comparison['verdict']}** {scale * comparison['mean']:+.{digits}f}"
                f" [{scale * comparison['ci_low']:+.{digits}f}, {scale * comparison['ci_high']:+.{digits}f}],"
                f" MDE {scale * comparison['mde']:.{digits}f}"
            )
        seeds = len(model["arms"][CONTROL]["seeds"]) if CONTROL in model["arms"] else 0
        rows.append(
            [
                f"{model['model']}: {s['dataset']}, {s['train_rows']} rows, {s['epochs']} epochs, {seeds} seeds"
                f" ({metric})",
                *cells,
            ]
        )
    return _report.markdown_table(["model", *(LABELS[a] for a in arms)], rows)


def markdown(models: dict[str, Any]) -> str:
    """The verdict tables: per model, every arm against the same-steps control."""
    lines = [
        "## Verdict: UAE augmentation against the same-steps clean control",
        "",
        "Paired over seeds (arm − control on the same seed); 95 % paired-t CI; MDE: the smallest true",
        "difference detected with 80 % power at α = 0.05 for this n and sd. Verdict: `helps` when the CI lies",
        "entirely on the better side of 0 (lower test MSE; higher linear accuracy), `hurts` on the worse side,",
        "`no detectable effect` when it contains 0.",
        "",
        verdict_table(models),
        "",
    ]
    for model in models.values():
        s = model["settings"]
        scale, digits = _scale(model)
        lower = model["better"] == "lower"
        unit = "test MSE × 1e3 (lower is better)" if lower else "linear test accuracy, % (higher is better)"
        lines += [
            f"### {model['model']} ({s['dataset']}, {s['train_rows']} train rows, {s['test_rows']} test rows,"
            f" {s['epochs']} epochs, attack T = {s['attack_steps']}; total {model['total_cpu_s'] / 60:.1f} CPU-min)",
            "",
            f"Metric: {unit}.",
            "",
        ]
        header = [
            "arm",
            "seeds",
            "mean ± sd",
            "Δ vs control [95 % CI]",
            "p",
            "MDE",
            "verdict",
            "ASR %",
            "T",
        ]
        rows = []
        for arm, entry in model["arms"].items():
            mean = entry["mean"]
            cell = f"{scale * mean['mean']:.{digits}f} ± {scale * mean['std']:.{digits}f}"
            comparison = entry.get("vs_control")
            if comparison:
                delta = (
                    f"{scale * comparison['mean']:+.{digits}f} [{scale * comparison['ci_low']:+.{digits}f},"
                    f" {scale * comparison['ci_high']:+.{digits}f}]"
                )
                p, mde, verdict = (
                    f"{comparison['p_value']:.3f}",
                    f"{scale * comparison['mde']:.{digits}f}",
                    comparison["verdict"],
                )
            else:
                delta, p, mde, verdict = (
                    "—",
                    "—",
                    "—",
                    "(control)" if arm == CONTROL else entry.get("vs_control_error", "—"),
                )
            rows.append(
                [
                    LABELS[arm],
                    str(len(entry["seeds"])),
                    cell,
                    delta,
                    p,
                    mde,
                    verdict,
                    _number(entry["asr_pct"]["mean"], 1),
                    str(entry["attack_steps"] or "—"),
                ]
            )
        lines += [_report.markdown_table(header, rows), ""]
        duels = model.get("head_to_head", {})
        if duels:
            lines += [
                "Head to head (arm − rival on the same seed; same CI, MDE and verdict rules):",
                "",
                _report.markdown_table(
                    ["arm", "rival", "seeds", "Δ [95 % CI]", "p", "MDE", "verdict"],
                    [
                        [
                            LABELS[d["arm"]],
                            LABELS[d["rival"]],
                            str(len(d["seeds"])),
                            "—"
                            if "error" in d
                            else f"{scale * d['mean']:+.{digits}f} [{scale * d['ci_low']:+.{digits}f},"
                            f" {scale * d['ci_high']:+.{digits}f}]",
                            "—" if "error" in d else f"{d['p_value']:.3f}",
                            "—" if "error" in d else f"{scale * d['mde']:.{digits}f}",
                            d.get("verdict", d.get("error", "—")),
                        ]
                        for d in duels.values()
                    ],
                ),
                "",
            ]
    return "\n".join(lines)


# --------------------------------------------------------------------------- entry point


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=sorted(TASKS), help="the model to run")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=ARMS)
    parser.add_argument(
        "--out",
        type=Path,
        nargs="+",
        default=[Path("outputs/verdict")],
        help="output folder (--summarise: one or more)",
    )
    parser.add_argument("--data-root", type=Path, default=None)
    parser.add_argument("--dataset", default=None, help="override the model's data set (tests: mnist-5k)")
    parser.add_argument("--train-rows", type=int, default=None, help="override the model's default rows")
    parser.add_argument("--test-rows", type=int, default=None, help="override the model's default test rows")
    parser.add_argument("--epochs", type=int, default=None, help="override the model's default epochs")
    parser.add_argument("--attack-steps", type=int, default=None, help="override the model's default T")
    parser.add_argument(
        "--summarise",
        action="store_true",
        help="join the records into benchmarks/results/verdict.*",
    )
    parser.add_argument(
        "--results",
        type=Path,
        default=RESULTS,
        help="where --summarise writes (default: %(default)s)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(1)
    if args.summarise:
        models = summarise(*args.out)
        _report.write_json(
            args.results / "verdict.json",
            {"models": models, "machine": machine_info(torch.device("cpu"))},
        )
        text = markdown(models)
        (args.results / "verdict.md").write_text(text)
        print(text)
        return 0
    if args.model is None:
        build_parser().error("--model is required unless --summarise")
    overrides = {
        k: v
        for k in ("dataset", "train_rows", "test_rows", "epochs", "attack_steps")
        if (v := getattr(args, k)) is not None
    }
    settings = dataclasses.replace(DEFAULTS[args.model], **overrides)
    task = TASKS[args.model](settings, args.data_root, torch.device("cpu"))
    for seed in args.seeds:
        run_seed(task, seed, args.arms, args.out[0])
    return 0


if __name__ == "__main__":
    sys.exit(main())
