"""Feature selection: a concrete autoencoder retrained on clean data + its MINE-UAEs.

For every data set and seed:

1. train a concrete autoencoder (K = 50 selected features, 10 for Mice
   Protein) on the clean training set with the authors' retry rule
   (:func:`uae_augment.training.fit_concrete`: retrain with twice the epochs while
   the mean max selection probability is below 0.998, at most ``--tries``
   trainings);
2. evaluate it on the test split: reconstruction error of its decoder
   (per-feature MSE of the decoder's linear output, as the authors report it)
   and the accuracy of an ExtraTrees classifier (50 trees, scikit-learn) trained
   on the selected features of the training set;
3. generate the MINE-UAE of every training sample (``MINEUAE`` with
   random-projection MINE: the concrete AE has no convolution) through
   :func:`uae_augment.data.cache.precompute`, and record the training-set ASR;
4. retrain from the same initialisation on clean + UAEs concatenated 1:1
   (``UAEAugmented(train, attack, mode="concat", cache=...)``) and evaluate again;
5. the control the paper lacks: the clean model trained for as many
   optimisation steps as the augmented one (the authors' batch size
   max(N // 256, 16) doubles with the data for N >= 8192, so for the large
   sets both runs take about the same number of steps; for the small ones
   the augmented run takes twice as many).

UAEs that failed (success=False) are kept in the augmented set by default
(``--failed keep``, the release's concatenation); ``--failed drop`` keeps only
the successful ones.

Outputs in ``--out``: ``results.json``, ``results.md`` (table beside the
published figures), ``config.yaml``, ``wall_time.log``, ``grid-<data>.png``
(image sets: clean | UAE | perturbation, and the selected pixels) and the
caches and clean models under ``cache/`` and ``models/``.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from sklearn.ensemble import ExtraTreesClassifier
from torch import nn

import _concrete_autoencoder_report
import _config
import _protocol
import _report
from _concrete_autoencoder_report import PUBLISHED
from uae_augment import MINEUAE, PRESETS, Reconstruction
from uae_augment.evaluation import reconstruction_error
from uae_augment.models import ConcreteAutoencoder, build_model
from uae_augment.plots import perturbation_picture, save_image_grid
from uae_augment.training import fit_concrete

RECIPE = "concrete_autoencoder"
CONCRETE_FIELDS = ("batch_size", "tries", "try_epochs", "mean_max_probabilities", "converged")
"""What a training record of the retry rule adds to :func:`_protocol.brief`."""
DATASETS = ("mnist", "fashion-mnist", "isolet", "coil20", "mice-protein", "activity")
DEFAULT_K = 50
K_OVERRIDES = {"mice-protein": 10}
DATASET_OPTIONS: dict[str, dict[str, Any]] = {"coil20": {"size": 20}}
EXTRA_TREES = 50

QUICK: dict[str, Any] = {
    "datasets": ["mnist-5k"],
    "seeds": [0, 1],
    "epochs": 100,
    "tries": 1,
    "train_rows": 1000,
    "preset": "fast",
    "attack_steps": 40,  # the paper's T: random-projection MINE needs it to reach MI > 0 (5 gave ASR 0)
    "projections": 100,
    "projection_dim": 32,  # ~3x cheaper than 128 (measured): projecting x' dominates a dense model's attack
    "probe": 8,
    "threads": _config.QUICK_THREADS,
}


def build_parser() -> argparse.ArgumentParser:
    """The recipe's command-line interface."""
    parser = _config.base_parser(
        __doc__,
        quick=QUICK,
        examples=[
            "python recipes/concrete_autoencoder.py --quick              # MNIST-5k, minutes on a CPU",
            "python recipes/concrete_autoencoder.py --config recipes/configs/concrete_autoencoder_full.yaml",
            "python recipes/concrete_autoencoder.py --datasets isolet mice-protein --epochs 200 --seeds 0 1",
        ],
    )
    group = parser.add_argument_group("experiment")
    group.add_argument(
        "--datasets",
        nargs="+",
        default=list(DATASETS),
        help="data sets (absent files are skipped and listed) (default: %(default)s)",
    )
    group.add_argument("--k", type=int, default=None, help="selected features (default: 50; 10 for mice-protein)")
    group.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="epochs of the first try (default: the release's 800)",
    )
    group.add_argument(
        "--tries",
        type=int,
        default=5,
        help="most trainings of the retry rule (doubling the epochs each time) (default: %(default)s)",
    )
    group.add_argument("--no-control", action="store_true", help="skip the same-steps clean control")
    group.add_argument(
        "--failed",
        choices=_protocol.FAILED_POLICIES,
        default="keep",
        help="UAEs whose attack failed: keep (the release's concatenation) or drop (default: %(default)s)",
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
    attack = parser.add_argument_group("attack")
    attack.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default="paper",
        help="MINE-UAE preset (default: %(default)s, the release's values)",
    )
    attack.add_argument(
        "--attack-steps",
        type=int,
        default=None,
        help="MinMax iterations T (default: the preset's, 40)",
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
        help="random projections K of MINE (default: %(default)s)",
    )
    _config.add_mine_batch_arguments(attack)
    return parser


@dataclasses.dataclass
class Evaluation:
    """Test metrics of a trained concrete autoencoder."""

    test_mse: float
    accuracy_pct: float
    selected: list[int]

    def as_dict(self) -> dict[str, Any]:
        return {
            "test_mse": self.test_mse,
            "accuracy_pct": self.accuracy_pct,
            "selected_features": self.selected,
        }


class DecoderOutput(nn.Module):
    """The concrete AE's unclamped decoder output as the reconstruction (what its authors score)."""

    def __init__(self, model: ConcreteAutoencoder):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.reconstruct_linear(x)


def evaluate(
    model: ConcreteAutoencoder,
    train: tuple[torch.Tensor, torch.Tensor],
    test: tuple[torch.Tensor, torch.Tensor],
    *,
    device: torch.device,
    seed: int,
) -> Evaluation:
    """Decoder test MSE and ExtraTrees(50) test accuracy on the selected features."""
    mse = float(reconstruction_error(DecoderOutput(model), test[0]))
    selected = model.selected_features().cpu()
    forest = ExtraTreesClassifier(n_estimators=EXTRA_TREES, random_state=seed, n_jobs=1)
    forest.fit(train[0].flatten(1)[:, selected].numpy(), train[1].numpy())
    accuracy = float(forest.score(test[0].flatten(1)[:, selected].numpy(), test[1].numpy()))
    return Evaluation(mse, 100.0 * accuracy, selected.tolist())


def concrete_trainer(args: argparse.Namespace, *, device: torch.device, seed: int, progress: bool) -> _protocol.Trainer:
    """A trainer applying the authors' retry rule (``--tries`` trainings at most)."""

    def train(model: nn.Module, dataset: Any) -> tuple[nn.Module, dict[str, Any]]:
        result = fit_concrete(
            model,
            dataset,
            epochs=args.epochs,
            tries=args.tries,
            seed=seed,
            progress=progress,
            device=device,
        )
        return result.model, {
            **_protocol.history_record(result.history),
            "tries": result.tries,
            "try_epochs": result.epochs,
            "mean_max_probabilities": result.mean_max_probabilities,
            "converged": result.converged,
        }

    return train


class Experiment(_protocol.RecipeRun):
    """Runs the protocol for the configuration ``args`` and collects the per-seed records."""

    def __init__(self, args: argparse.Namespace, out: Path):
        super().__init__(args, out)
        self.grids: list[str] = []

    def run(self, name: str) -> None:
        options = DATASET_OPTIONS.get(name, {})
        with self.timer.stage(f"{name}/load"):
            train, test = _protocol.load_splits(
                name,
                self.args.data_root,
                train_rows=self.args.train_rows,
                test_rows=self.args.test_rows,
                **options,
            )
            train_xy, test_xy = _protocol.stack(train), _protocol.stack(test)
        for position, seed in enumerate(self.args.seeds):
            self.runs.append(self.run_seed(name, seed, train, train_xy, test_xy, grid=position == 0))

    def run_seed(
        self,
        name: str,
        seed: int,
        train: Any,
        train_xy: tuple[torch.Tensor, torch.Tensor],
        test_xy: tuple[torch.Tensor, torch.Tensor],
        *,
        grid: bool,
    ) -> dict[str, Any]:
        args = self.args
        tag = f"{name}/seed{seed}"
        shape = tuple(train_xy[0].shape[1:])
        k = args.k or K_OVERRIDES.get(name, DEFAULT_K)

        def build() -> nn.Module:
            return build_model("concrete-ae", shape, k=k)

        trainer = concrete_trainer(args, device=self.device, seed=seed, progress=self.progress)
        key = {
            "dataset": name,
            "seed": seed,
            "k": k,
            "epochs": args.epochs,
            "tries": args.tries,
            "train_rows": len(train_xy[0]),
            "shape": list(shape),
        }
        with self.timer.stage(f"{tag}/train-clean"):
            clean, history = _protocol.train_model(
                build,
                train,
                trainer,
                seed=seed,
                device=self.device,
                checkpoint=self.out / "models" / f"{name}-seed{seed}.pt",
                key=key,
            )
        original = evaluate(clean, train_xy, test_xy, device=self.device, seed=seed)
        record: dict[str, Any] = {
            "dataset": name,
            "seed": seed,
            "k": k,
            "train_size": len(train_xy[0]),
            "test_size": len(test_xy[0]),
            "original": {**original.as_dict(), **_protocol.brief(history, CONCRETE_FIELDS)},
        }
        attack = MINEUAE(
            Reconstruction(clean),
            preset=args.preset,
            steps=args.attack_steps,
            mine_steps=args.mine_steps,
            sampler="random_projection",
            projections=args.projections,
            projection_dim=args.projection_dim,
            seed=seed,
            batch_size=args.attack_batch_size,
        )
        with self.timer.stage(f"{tag}/attack/mine"):
            augmentation = _protocol.augment(
                train,
                attack,
                self.out / "cache" / f"{name}-seed{seed}-mine.h5",
                failed=args.failed,
                batch_size=args.precompute_batch_size,
                progress=self.progress,
            )
        mine: dict[str, Any] = {"attack": attack.config(), **augmentation.stats()}
        if args.probe > 0:
            with self.timer.stage(f"{tag}/probe/mine"):
                x_probe, result, mine["probe"] = _protocol.probe(attack, train, args.probe, augmentation.cache)
            if grid and len(shape) == 3:
                self.grids.append(str(self._grid(name, seed, x_probe, result.adversarial.cpu(), original.selected)))
        with self.timer.stage(f"{tag}/retrain/mine"):
            model, retrain = _protocol.train_model(build, augmentation.dataset, trainer, seed=seed, device=self.device)
        mine.update(evaluate(model, train_xy, test_xy, device=self.device, seed=seed).as_dict())
        mine.update(_protocol.brief(retrain, CONCRETE_FIELDS))
        record["mine"] = mine
        if not args.no_control:
            same_steps = _protocol.fit_trainer(
                device=self.device, max_steps=retrain["steps"], seed=seed, progress=self.progress
            )
            with self.timer.stage(f"{tag}/same-steps-control"):
                control, control_history = _protocol.train_model(
                    build, train, same_steps, seed=seed, device=self.device
                )
            record["same_steps"] = {
                **evaluate(control, train_xy, test_xy, device=self.device, seed=seed).as_dict(),
                **_protocol.brief(control_history, CONCRETE_FIELDS),
            }
        return record

    def _grid(self, name: str, seed: int, x: torch.Tensor, uae: torch.Tensor, selected: list[int]) -> Path:
        mask = torch.zeros(x[0].numel())
        mask[selected] = 1.0
        masked = x.flatten(1) * (0.25 + 0.75 * mask)
        return save_image_grid(
            {
                "clean": x,
                "MINE-UAE": uae,
                "δ": perturbation_picture(uae - x),
                "selected (bright)": masked.view_as(x),
            },
            self.out / f"grid-{name}.png",
            title=f"{name}, concrete AE, seed {seed}: clean | MINE-UAE | δ (amplified) | selected pixels",
        )


def resolve_datasets(requested: Sequence[str], root: Path | None) -> tuple[list[str], list[dict[str, str]]]:
    """(available names, skipped with reasons)."""
    usable, skipped = [], []
    for name in requested:
        key = name.lower().replace("_", "-")
        if _protocol.dataset_available(key, root, **DATASET_OPTIONS.get(key, {})):
            usable.append(key)
        else:
            skipped.append({"dataset": name, "reason": "file not found in the data root"})
    return usable, skipped


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the recipe; prints the Markdown table; returns the exit status (0 on success)."""
    parser = build_parser()
    args, out = _config.start_run(parser, argv, QUICK, RECIPE)
    names, skipped = resolve_datasets(args.datasets, args.data_root)
    if not names:
        parser.error("none of the requested data sets is available: " + "; ".join(s["dataset"] for s in skipped))
    experiment = Experiment(args, out)
    for name in names:
        experiment.run(name)
    experiment.timer.close()
    summary = _concrete_autoencoder_report.summarise(experiment.runs, names)
    table = _concrete_autoencoder_report.markdown(summary, failed=args.failed, skipped=skipped)
    _report.write_outputs(
        out,
        RECIPE,
        args,
        experiment.timer,
        table,
        {
            "failed_uaes": args.failed,
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
