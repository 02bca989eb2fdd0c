"""SimCLR on CIFAR-10 with and without MINE-UAE augmentation: linear evaluation, test NT-Xent, PGD.

For every seed:

1. pretrain SimCLR (CIFAR ResNet-18 with lightly's ``SimCLRProjectionHead``
   and ``NTXentLoss``, tau 0.5, LARS lr 1.0 wd 1e-4 batch 512, warm-up and
   cosine decay; views: ``SimCLRViews``, colour-jitter strength 0.5, no blur)
   on the clean training set: the ``original`` model, S optimisation steps;
2. generate one MINE-UAE per training image for each ``--presets`` entry with
   ``MINEUAE(Contrastive(...), preset=..., gamma_power=0.5, steps=20)``: the
   release's SimCLR schedule, MINE in feature-map mode on the stem
   convolution (64 maps of 32 x 32, before BatchNorm). The criterion is
   f = max(0, L(x + delta) - L(x)), L the NT-Xent loss of ``--n-views`` real
   augmented views of the image (replayed, per-image seeds) against a fixed
   bank of ``--negatives`` training images. UAEs go through
   ``precompute`` (HDF5 caches under ``<out>/cache``, reused by reruns);
3. retrain from the same initialisation (a) on the clean set for as many
   steps as (b) takes (the same-steps control the paper lacks) and (b) on
   clean + UAE concatenated 1:1 (2N images, 2S steps), once per preset;
4. evaluate every model: linear evaluation on the frozen backbone (a linear
   layer trained on the representations of the clean training images, test
   accuracy), the test-set NT-Xent loss (fixed views, batches of
   ``--eval-batch-size``), and the PGD robustness of backbone + linear layer
   (L-inf, epsilon in ``--pgd-epsilons``/255, ``--pgd-steps`` steps of
   2.5 epsilon / steps, random start) on ``--pgd-rows`` test images.

``--presets paper strong`` (default): with the release's step sizes the MI term
barely moves delta from its random start; the strong preset (sign steps, MINE lr
1e-3) lets it shape delta. The attack table reports how far each attack moved
from clip(x + delta_0), measured on ``--probe`` training images attacked again
in memory (they must equal the cached rows; the difference is reported).

Distributed: ``torchrun --nproc_per_node=N recipes/simclr.py ...`` trains with
``DistributedDataParallel`` (gloo on CPU, nccl on GPUs, SyncBatchNorm on GPUs)
and NT-Xent negatives gathered from every process
(``NTXentLoss(gather_distributed=True)``); each global batch of
``--batch-size`` images is split over the processes, and every image's views
come from its own generator (seed, index, epoch), so the processes see
exactly the augmentations of a one-process run (on CPU BatchNorm statistics
stay per process, the only difference). ``precompute`` shards the attacks.
Rank 0 evaluates and writes the outputs.

Outputs in ``--out``: ``results.json``, ``results.md``, ``config.yaml``,
``wall_time.log``, ``grid.png`` (clean | UAE | delta per preset),
``loss_curves.png``, ``cache/`` and ``models/`` (pretrained checkpoints, reused
by one-process reruns).
"""

from __future__ import annotations

import argparse
import contextlib
import math
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset, Subset

import _config
import _protocol
import _report
import _simclr_args
import _simclr_data
import _simclr_report
from _simclr_args import QUICK
from uae_augment import MINEUAE, PGD, fit
from uae_augment.devices import distributed
from uae_augment.evaluation import linear_evaluation
from uae_augment.models import SimCLR
from uae_augment.plots import perturbation_picture, save_curves, save_image_grid
from uae_augment.views import ViewPurpose, view_generators

RECIPE = "simclr"
GAMMA_POWER = 0.5  # the release's SimCLR attack: gamma_t = (t + 1)^(-1/2)
EVAL_VIEW_SEED = 2022  # views of the test-set NT-Xent: the same for every model and seed
LINEAR_BATCH = 512
STEP_LOSSES = ("step_losses",)  # kept in each model's record: the loss curves and the tests read them


# --------------------------------------------------------------------------- configuration


def build_parser() -> argparse.ArgumentParser:
    """The recipe's command-line interface (defaults: the release's full settings)."""
    return _simclr_args.build_parser(__doc__)


# --------------------------------------------------------------------------- processes


class _NoTimer:
    """The timer of ranks other than 0 (only rank 0 writes wall_time.log)."""

    records: list[dict[str, Any]] = []
    total_s = math.nan
    total_cpu_s = math.nan

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        yield

    def close(self) -> None:
        return None


# --------------------------------------------------------------------------- evaluation


@torch.no_grad()
def test_ntxent(model: SimCLR, x: torch.Tensor, *, batch_size: int, device: torch.device) -> float:
    """Mean NT-Xent (lightly's, in-batch negatives) of the test images under fixed views, eval mode.

    Views come from ``view_generators(EVAL_VIEW_SEED, index, ViewPurpose.EVALUATION)``;
    consecutive batches of ``batch_size`` images (a last partial batch is
    dropped, so every batch has the same number of negatives).
    """
    from lightly.loss import NTXentLoss

    model.eval()
    loss_fn = NTXentLoss(temperature=model.temperature)  # this process's batch only, also under torchrun
    batch = min(batch_size, len(x))
    losses = []
    for start in range(0, len(x) - batch + 1, batch):
        index = torch.arange(start, start + batch)
        views = model.make_views(x[index].to(device), view_generators(EVAL_VIEW_SEED, index, ViewPurpose.EVALUATION))
        z = model(views.flatten(0, 1)).unflatten(0, views.shape[:2])
        losses.append(float(loss_fn(z[:, 0], z[:, 1])))
    return sum(losses) / len(losses)


def pgd_robustness(
    classifier: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    epsilons: Sequence[float],
    steps: int,
    seed: int,
    device: torch.device,
) -> dict[str, float]:
    """Accuracy (%) of ``classifier`` under L-inf PGD for each epsilon (in 1/255), and on clean x."""
    x, y = x.to(device), y.to(device)
    with torch.no_grad():
        out = {"clean": 100.0 * float((classifier(x).argmax(1) == y).float().mean())}
    for epsilon in epsilons:
        radius = epsilon / 255.0
        attack = PGD(
            classifier,
            epsilon=radius,
            steps=steps,
            step_size=2.5 * radius / steps,
            seed=seed,
            batch_size=256,
        )
        adversarial = attack(x, y).adversarial
        with torch.no_grad():
            out[f"{epsilon:g}"] = 100.0 * float((classifier(adversarial).argmax(1) == y).float().mean())
    return out


# --------------------------------------------------------------------------- the experiment


class Experiment:
    """Runs the protocol for ``args`` and collects one record per seed."""

    def __init__(
        self,
        args: argparse.Namespace,
        out: Path,
        world: tuple[int, int] | None,
        device: torch.device,
        data_label: str,
    ):
        self.args = args
        self.data_label = data_label
        self.out = out
        self.world = world
        self.rank0 = world is None or world[0] == 0
        self.device = device
        self.progress = not args.no_progress
        self.timer: Any = _report.StageTimer(out / _report.WALL_TIME_FILE) if self.rank0 else _NoTimer()
        self.runs: list[dict[str, Any]] = []
        self.curves: dict[str, list[float]] = {}
        self.grid: str | None = None

    def build(self, shape: tuple[int, ...]) -> Callable[[], SimCLR]:
        args = self.args

        def build() -> SimCLR:
            return SimCLR(
                in_channels=shape[0],
                image_size=shape[1:],
                width=args.width,
                lr=args.lr,
                weight_decay=args.weight_decay,
                warmup_fraction=args.warmup_fraction,
            )

        return build

    def trainer(self, seed: int, *, epochs: int | None = None, max_steps: int | None = None) -> _protocol.Trainer:
        def train(model: nn.Module, dataset: Dataset) -> tuple[nn.Module, dict[str, Any]]:
            assert isinstance(model, SimCLR)
            # one process trains on the global batches of a torchrun run: world (0, 1)
            history = fit(
                model,
                dataset,
                batch_size=self.args.batch_size,
                seed=seed,
                device=self.device,
                world=self.world or (0, 1),
                epochs=epochs,
                max_steps=max_steps,
                num_workers=self.args.workers,
                progress=self.progress,
            )
            return model, {**_protocol.history_record(history), "step_losses": history.step_losses}

        return train

    def run(self, seed: int, train: Dataset, test: Dataset, *, first: bool) -> dict[str, Any]:
        args = self.args
        x_train, y_train = _protocol.stack(train)
        x_test, y_test = _protocol.stack(test)
        shape = tuple(x_train.shape[1:])
        classes = _num_classes(train, int(max(y_train.max(), y_test.max())) + 1)
        evaluate = self._evaluator(seed, (x_train, y_train), (x_test, y_test), classes)
        build = self.build(shape)
        key = {
            "recipe": RECIPE,
            "data": self.data_label,
            "seed": seed,
            "rows": len(train),
            "shape": list(shape),
            "width": args.width,
            "epochs": args.epochs,
            "batch_size": args.batch_size,
            "lr": args.lr,
            "weight_decay": args.weight_decay,
            "warmup_fraction": args.warmup_fraction,
        }
        checkpoint = self.out / "models" / f"simclr-seed{seed}.pt" if self.world is None else None
        with self.timer.stage(f"seed{seed}/pretrain"):
            model, history = _protocol.train_model(
                build,
                train,
                self.trainer(seed, epochs=args.epochs),
                seed=seed,
                device=self.device,
                checkpoint=checkpoint,
                key=key,
            )
        record: dict[str, Any] = {
            "seed": seed,
            "train_size": len(train),
            "test_size": len(test),
            "original": {**_protocol.brief(history, STEP_LOSSES), **evaluate("original", model)},
            "augmented": {},
        }
        self._curve("pretrain (clean)", history, first)
        bank = _protocol.stack(_protocol.subset_rows(train, args.negatives))[0] if args.negatives > 0 else None
        criterion = model.criterion(n_views=args.n_views, negatives=bank, seed=seed)
        grid_rows: dict[str, torch.Tensor] = {}
        augmented_steps = None
        for preset in args.presets:
            attack = MINEUAE(
                criterion,
                preset=preset,
                steps=args.attack_steps,
                mine_steps=args.mine_steps,
                gamma_power=GAMMA_POWER,
                seed=seed,
                batch_size=args.attack_batch_size,
            )
            with self.timer.stage(f"seed{seed}/attack/{preset}"):
                augmentation = _protocol.augment(
                    train,
                    attack,
                    self.out / "cache" / f"simclr-seed{seed}-{preset}.h5",
                    batch_size=args.precompute_batch_size,
                    progress=self.progress,
                )
            entry: dict[str, Any] = {
                "attack": attack.config(),
                **augmentation.stats(),
                "attack_seconds": self._last_stage_seconds(),
            }
            if args.probe > 0 and self.rank0:
                with self.timer.stage(f"seed{seed}/probe/{preset}"):
                    x_probe, result, entry["probe"] = _protocol.probe(attack, train, args.probe, augmentation.cache)
                if first:
                    grid_rows.setdefault("clean", x_probe)
                    grid_rows[f"UAE {preset}"] = result.adversarial.cpu()
                    grid_rows[f"δ {preset}"] = perturbation_picture(result.perturbation(x_probe).cpu())
            with self.timer.stage(f"seed{seed}/retrain/{preset}"):
                retrained, retrain = _protocol.train_model(
                    build,
                    augmentation.dataset,
                    self.trainer(seed, epochs=args.epochs),
                    seed=seed,
                    device=self.device,
                )
            entry.update({**_protocol.brief(retrain, STEP_LOSSES), **evaluate(preset, retrained)})
            record["augmented"][preset] = entry
            self._curve(f"clean + UAE {preset}", retrain, first)
            augmented_steps = retrain["steps"]
        if not args.no_control and augmented_steps is not None:
            with self.timer.stage(f"seed{seed}/same-steps-control"):
                control, control_history = _protocol.train_model(
                    build,
                    train,
                    self.trainer(seed, max_steps=augmented_steps),
                    seed=seed,
                    device=self.device,
                )
            record["same_steps"] = {
                **_protocol.brief(control_history, STEP_LOSSES),
                **evaluate("same-steps", control),
            }
            self._curve("clean, same steps", control_history, first)
        if first and grid_rows and self.rank0:
            path = save_image_grid(
                grid_rows,
                self.out / "grid.png",
                title=f"seed {seed}: clean | MINE-UAE | δ (amplified) per preset",
            )
            self.grid = str(path)
        return record

    def _evaluator(
        self,
        seed: int,
        train: tuple[torch.Tensor, torch.Tensor],
        test: tuple[torch.Tensor, torch.Tensor],
        classes: int,
    ) -> Callable[[str, SimCLR], dict[str, Any]]:
        args = self.args
        pgd_rows = torch.arange(min(args.pgd_rows, len(test[0])))

        def evaluate(name: str, model: SimCLR) -> dict[str, Any]:
            if not self.rank0:
                return {}
            with self.timer.stage(f"seed{seed}/evaluate/{name}"):
                classifier, linear = linear_evaluation(
                    model.backbone,
                    train,
                    test,
                    classes=classes,
                    epochs=args.linear_epochs,
                    lr=args.linear_lr,
                    batch_size=LINEAR_BATCH,
                    seed=seed,
                    device=self.device,
                )
                ntxent = test_ntxent(model, test[0], batch_size=args.eval_batch_size, device=self.device)
                robust = pgd_robustness(
                    classifier,
                    test[0][pgd_rows],
                    test[1][pgd_rows],
                    epsilons=args.pgd_epsilons,
                    steps=args.pgd_steps,
                    seed=seed,
                    device=self.device,
                )
            return {
                "linear": linear,
                "test_ntxent": ntxent,
                "pgd_accuracy": robust,
                "pgd_rows": len(pgd_rows),
            }

        return evaluate

    def _curve(self, label: str, history: dict[str, Any], first: bool) -> None:
        if first and history.get("step_losses"):
            self.curves[label] = history["step_losses"]

    def _last_stage_seconds(self) -> float:
        return self.timer.records[-1]["seconds"] if self.timer.records else math.nan


def _num_classes(dataset: Dataset, seen: int) -> int:
    """The data set's class count (its ``classes``, under any Subset), at least the labels seen."""
    while isinstance(dataset, Subset):
        dataset = dataset.dataset
    return max(seen, len(getattr(dataset, "classes", ())))


# --------------------------------------------------------------------------- entry point


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the recipe; rank 0 prints the Markdown table; returns the exit status."""
    parser = build_parser()
    args, out = _config.start_run(parser, argv, QUICK, RECIPE, save=False)  # rank 0 saves it
    with distributed(args.device) as (world, device):
        rank0 = world is None or world[0] == 0
        if rank0:
            _config.save_config(args, out, argv)
        try:
            train, test, label = _simclr_data.load_data(args)
        except _protocol.MissingDataset as error:
            parser.error(str(error))
        experiment = Experiment(args, out, world, device, label)
        for position, seed in enumerate(args.seeds):
            experiment.runs.append(experiment.run(seed, train, test, first=position == 0))
        if not rank0:
            return 0
        experiment.timer.close()
        summary = _simclr_report.summarise(experiment.runs, args.pgd_epsilons)
        table = _simclr_report.markdown(
            summary,
            args.pgd_epsilons,
            data=label,
            seeds=len(args.seeds),
            pgd_rows=min(args.pgd_rows, len(test)),
            pgd_steps=args.pgd_steps,
        )  # type: ignore[arg-type]
        curves_path = None
        if experiment.curves:
            window = max(1, max(len(v) for v in experiment.curves.values()) // 40)
            curves_path = str(
                save_curves(
                    {k: _simclr_report.smoothed(v, window) for k, v in experiment.curves.items()},
                    out / "loss_curves.png",
                    xlabel="optimisation step",
                    ylabel=f"NT-Xent (running mean of {window})",
                    title=f"SimCLR training loss, seed {args.seeds[0]}",
                )
            )
        _report.write_outputs(
            out,
            RECIPE,
            args,
            experiment.timer,
            table,
            {
                "world_size": 1 if world is None else world[1],
                "data": label,
                "runs": experiment.runs,
                "summary": summary,
                "grid": experiment.grid,
                "loss_curves": curves_path,
            },
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
