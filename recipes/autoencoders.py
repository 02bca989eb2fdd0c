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
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

import _autoencoders_args
import _autoencoders_report
import _config
import _protocol
import _report
from _autoencoders_args import METHODS, PUBLISHED, QUICK, DataSpec, Method, resolve_datasets
from uae_augment import Reconstruction
from uae_augment.evaluation import reconstruction_error
from uae_augment.models import build_model
from uae_augment.plots import perturbation_picture, save_image_grid

RECIPE = "autoencoders"


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


# --------------------------------------------------------------------------- entry point


def build_parser() -> argparse.ArgumentParser:
    """The recipe's command-line interface."""
    return _autoencoders_args.build_parser(__doc__)


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
    summary = _autoencoders_report.summarise(experiment.runs, datasets, args.models, args.methods)
    table = _autoencoders_report.markdown(summary, args.methods, failed=args.failed, skipped=skipped)
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
