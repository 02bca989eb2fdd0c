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
import datetime
import math
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler, Subset
from tqdm.auto import tqdm

if __package__ in (None, ""):  # run as a script: make `recipes` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recipes import _common as common  # noqa: E402
from uae_augment import MINEUAE, PGD, PRESETS  # noqa: E402
from uae_augment.contrastive import ViewPurpose, view_generators  # noqa: E402
from uae_augment.data import ArrayDataset  # noqa: E402
from uae_augment.models import SimCLR  # noqa: E402
from uae_augment.plots import perturbation_picture, save_curves, save_image_grid  # noqa: E402

RECIPE = "simclr"
GAMMA_POWER = 0.5  # the release's SimCLR attack: gamma_t = (t + 1)^(-1/2)
EVAL_VIEW_SEED = 2022  # views of the test-set NT-Xent: the same for every model and seed
LINEAR_SEED_KEY = 7919
LINEAR_BATCH = 512

QUICK: dict[str, Any] = {
    "seeds": [0],
    "train_rows": 384,
    "test_rows": 1000,
    "width": 8,
    "epochs": 12,
    "batch_size": 128,
    "presets": ["fast", "strong"],
    "attack_batch_size": 128,
    "negatives": 64,
    "linear_epochs": 300,  # 384 rows: one step per epoch
    "eval_batch_size": 256,
    "pgd_rows": 128,
    "pgd_steps": 20,
    "probe": 8,
    "threads": common.QUICK_THREADS,
}


# --------------------------------------------------------------------------- configuration


def build_parser() -> argparse.ArgumentParser:
    """The recipe's command-line interface (defaults: the release's full settings)."""
    parser = common.base_parser(__doc__, quick=QUICK, examples=[
        "python recipes/simclr.py --quick                        # minutes on a CPU",
        "python recipes/simclr.py --out outputs/simclr            # the release's settings (GPU)",
        "torchrun --nproc_per_node=2 recipes/simclr.py --quick --device cpu",
        "python recipes/simclr.py --quick --image-folder ~/data/stl10 --image-size 32",
    ])
    parser.set_defaults(seeds=[0])
    data = parser.add_argument_group("data")
    data.add_argument("--dataset", default="cifar10", help="data set name for load_dataset (default: %(default)s)")
    data.add_argument("--image-folder", type=Path, default=None,
                      help="a torchvision ImageFolder tree instead (<dir>/train and <dir>/test, or one folder split 80/20)")
    data.add_argument("--image-size", type=int, default=32, help="side images of --image-folder are resized to (default: %(default)s)")
    data.add_argument("--train-rows", type=int, default=None, help="fixed random subset of N training rows (default: all)")
    data.add_argument("--test-rows", type=int, default=None, help="fixed random subset of N test rows (default: all)")
    data.add_argument("--workers", type=int, default=0, help="DataLoader workers of the training loops (default: %(default)s)")
    train = parser.add_argument_group("SimCLR training")
    train.add_argument("--width", type=int, default=64, help="backbone width (64 = ResNet-18) (default: %(default)s)")
    train.add_argument("--epochs", type=int, default=1000, help="pretraining epochs; retrains: the same epochs (default: %(default)s)")
    train.add_argument("--batch-size", type=int, default=512, help="global batch (default: %(default)s)")
    train.add_argument("--lr", type=float, default=1.0, help="LARS learning rate (default: %(default)s)")
    train.add_argument("--weight-decay", type=float, default=1e-4, help="(default: %(default)s)")
    train.add_argument("--warmup-fraction", type=float, default=0.01, help="share of warm-up steps (default: %(default)s, 10 of 1000 epochs)")
    train.add_argument("--no-control", action="store_true", help="skip the same-steps clean control")
    attack = parser.add_argument_group("attacks")
    attack.add_argument("--presets", nargs="+", choices=sorted(PRESETS), default=["paper", "strong"],
                        help="MINE-UAE presets, one augmented retrain each (default: %(default)s)")
    attack.add_argument("--attack-steps", type=int, default=20, help="MinMax iterations (release SimCLR: %(default)s)")
    attack.add_argument("--mine-steps", type=int, default=None, help="MINE Adam steps per iteration (default: the preset's)")
    attack.add_argument("--n-views", type=int, default=2, help="views per image in the criterion's NT-Xent (default: %(default)s)")
    attack.add_argument("--negatives", type=int, default=256,
                        help="training images whose projections are the criterion's negative bank; 0: none, the"
                             " NT-Xent among the image's own views (needs --n-views >= 4) (default: %(default)s)")
    attack.add_argument("--attack-batch-size", type=int, default=None, help="images attacked together (default: the preset's)")
    attack.add_argument("--precompute-batch-size", type=int, default=256, help="rows per precompute batch (default: %(default)s)")
    attack.add_argument("--probe", type=int, default=16,
                        help="training images attacked again in memory: grid and moved-from-delta_0 statistics (default: %(default)s)")
    evaluation = parser.add_argument_group("evaluation")
    evaluation.add_argument("--linear-epochs", type=int, default=100, help="linear evaluation epochs (default: %(default)s)")
    evaluation.add_argument("--linear-lr", type=float, default=1e-3, help="Adam learning rate of the linear layer (default: %(default)s)")
    evaluation.add_argument("--eval-batch-size", type=int, default=512, help="batch of the test-set NT-Xent (its negatives) (default: %(default)s)")
    evaluation.add_argument("--pgd-epsilons", type=float, nargs="+", default=[1, 2, 4, 8, 16], help="L-inf radii in 1/255 (default: %(default)s)")
    evaluation.add_argument("--pgd-steps", type=int, default=100, help="PGD steps (release: %(default)s)")
    evaluation.add_argument("--pgd-rows", type=int, default=1000, help="test images attacked by PGD (default: %(default)s)")
    return parser


# --------------------------------------------------------------------------- processes


@contextlib.contextmanager
def distributed(device_name: str) -> Iterator[tuple[tuple[int, int] | None, torch.device]]:
    """Joins the torchrun process group when WORLD_SIZE > 1; yields ((rank, size) or None, device)."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    device = common.resolve_device(device_name)
    if size <= 1:
        yield None, device
        return
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=datetime.timedelta(hours=6))
    try:
        yield (dist.get_rank(), dist.get_world_size()), device
    finally:
        dist.destroy_process_group()


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


# --------------------------------------------------------------------------- data


def load_data(args: argparse.Namespace) -> tuple[Dataset, Dataset, str]:
    """(train, test, label): ``--dataset`` through load_dataset, or ``--image-folder``."""
    if args.image_folder is None:
        train, test = common.load_splits(args.dataset, args.data_root, train_rows=args.train_rows, test_rows=args.test_rows)
        return train, test, args.dataset
    train, test = image_folder_splits(args.image_folder, args.image_size)
    label = f"{args.image_folder.name} (image folder, {args.image_size}px)"
    return common.subset_rows(train, args.train_rows), common.subset_rows(test, args.test_rows), label


def image_folder_splits(root: Path, size: int) -> tuple[ArrayDataset, ArrayDataset]:
    """A torchvision ImageFolder tree as in-memory (train, test) sets of (C, size, size) images in [0, 1].

    ``root/train`` and ``root/test`` when both exist, else every image of
    ``root`` split 80/20 by a fixed random permutation.

    Raises:
        FileNotFoundError: if ``root`` is not a folder.
    """
    from torchvision import datasets, transforms

    if not root.is_dir():
        raise FileNotFoundError(f"--image-folder {str(root)!r} is not a folder")
    to_tensor = transforms.Compose([transforms.Resize(size), transforms.CenterCrop(size), transforms.ToTensor()])
    if (root / "train").is_dir() and (root / "test").is_dir():
        parts = [datasets.ImageFolder(str(root / split), transform=to_tensor) for split in ("train", "test")]
        (x_train, y_train), (x_test, y_test) = (common.stack(part) for part in parts)
        classes = parts[0].classes
    else:
        folder = datasets.ImageFolder(str(root), transform=to_tensor)
        x, y = common.stack(folder)
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(common.SUBSET_SEED))
        cut = int(round(0.8 * len(x)))
        (x_train, y_train), (x_test, y_test) = (x[order[:cut]], y[order[:cut]]), (x[order[cut:]], y[order[cut:]])
        classes = folder.classes
    return tuple(  # type: ignore[return-value]
        ArrayDataset(x, y, name=root.name, split=split, classes=classes)
        for x, y, split in ((x_train, y_train, "train"), (x_test, y_test, "test"))
    )


# --------------------------------------------------------------------------- training


class _EpochBatches(Sampler[list[int]]):
    """The batch sampler of :func:`train_contrastive`: this process's row lists of the current epoch."""

    def __init__(self) -> None:
        self.rows: list[list[int]] = []

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.rows)

    def __len__(self) -> int:
        return len(self.rows)


def train_contrastive(
    model: SimCLR,
    dataset: Dataset,
    *,
    batch_size: int,
    seed: int,
    device: torch.device,
    world: tuple[int, int] | None,
    epochs: int | None = None,
    max_steps: int | None = None,
    workers: int = 0,
    progress: bool = False,
) -> dict[str, Any]:
    """Trains ``model`` with its own training step, in one process or under torchrun.

    Each epoch draws one permutation of the rows from a generator seeded by
    ``seed`` (the same on every rank) and cuts it into global batches of
    ``batch_size`` rows (the last, partial batch is dropped); rank r takes the
    r-th of ``world_size`` equal parts. Views come from the per-row generators
    ``view_generators(seed, row, ViewPurpose.TRAINING, epoch)``.

    Returns:
        The history record: ``steps``, ``epochs``, ``batch_size``, ``losses``
        (per epoch), ``step_losses`` (the global batch's loss at every step,
        averaged over ranks), ``seconds``.

    Raises:
        ValueError: if the data set is smaller than one batch or the batch does not
            split evenly over the processes.
    """
    rank, size = world or (0, 1)
    rows = len(dataset)  # type: ignore[arg-type]
    per_epoch = rows // batch_size
    if per_epoch == 0:
        raise ValueError(f"--batch-size {batch_size} is larger than the {rows} training rows")
    if batch_size % size:
        raise ValueError(f"--batch-size {batch_size} does not split evenly over {size} processes")
    total = max_steps if max_steps is not None else per_epoch * int(epochs or 1)
    local = batch_size // size
    model.to(device)
    forward: nn.Module = model
    if world is not None:
        if device.type == "cuda":
            nn.SyncBatchNorm.convert_sync_batchnorm(model)
        forward = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    optimizers = model.configure_optimizers()
    model.on_fit_start(total)
    order = torch.Generator().manual_seed(seed)
    batches = _EpochBatches()
    loader = DataLoader(dataset, batch_sampler=batches, num_workers=workers, persistent_workers=workers > 0)
    record: dict[str, Any] = {"steps": 0, "epochs": 0, "batch_size": batch_size, "losses": [], "step_losses": []}
    started = time.perf_counter()
    model.train()
    bar = tqdm(total=total, desc="SimCLR", disable=not progress or rank != 0, leave=False)
    with bar:
        epoch = 0
        while record["steps"] < total:
            permutation = torch.randperm(rows, generator=order)
            batches.rows = [
                permutation[b * batch_size : (b + 1) * batch_size][rank * local : (rank + 1) * local].tolist()
                for b in range(min(per_epoch, total - record["steps"]))
            ]
            epoch_losses = []
            for batch_rows, (x, *_) in zip(batches.rows, loader):
                generators = view_generators(seed, batch_rows, ViewPurpose.TRAINING, epoch)
                values = model.training_step(x.to(device), None, optimizers, generators=generators, forward=forward)
                loss = torch.tensor(values["loss"], dtype=torch.float64, device=device)
                if world is not None:
                    dist.all_reduce(loss)
                    loss /= size
                if not math.isfinite(float(loss)):
                    raise FloatingPointError(f"the SimCLR loss became {float(loss)} at step {record['steps']}")
                epoch_losses.append(float(loss))
                record["steps"] += 1
                bar.update(1)
                bar.set_postfix(epoch=epoch + 1, loss=f"{epoch_losses[-1]:.4f}")
            record["step_losses"] += epoch_losses
            record["losses"].append(sum(epoch_losses) / len(epoch_losses))
            record["epochs"] += 1
            epoch += 1
    if world is not None:
        # BatchNorm's running statistics last saw each rank's own batch: take rank 0's everywhere
        for buffer in model.buffers():
            dist.broadcast(buffer, src=0)
    model.eval()
    record["seconds"] = time.perf_counter() - started
    return record


# --------------------------------------------------------------------------- evaluation


@torch.no_grad()
def representations(backbone: nn.Module, x: torch.Tensor, device: torch.device, batch_size: int = 1024) -> torch.Tensor:
    """Backbone features (N, F) of images (N, C, H, W), eval mode, on the CPU."""
    backbone.eval()
    return torch.cat([backbone(rows.to(device)).cpu() for rows in x.split(batch_size)])


def linear_evaluation(
    backbone: nn.Module, train: tuple[torch.Tensor, torch.Tensor], test: tuple[torch.Tensor, torch.Tensor], *,
    classes: int, epochs: int, lr: float, batch_size: int, seed: int, device: torch.device,
) -> tuple[nn.Module, dict[str, float]]:
    """Trains a linear layer on the frozen representations of the clean training images.

    Adam with a cosine decay over ``epochs`` epochs, batches of ``batch_size``;
    the representations are computed once (no augmentation).

    Returns:
        (classifier, metrics): ``classifier = Sequential(backbone, linear)`` in eval
        mode and ``{"train_acc", "test_acc"}`` in percent.
    """
    features_train = representations(backbone, train[0], device)
    features_test = representations(backbone, test[0], device)
    generator = torch.Generator().manual_seed(seed * LINEAR_SEED_KEY + 1)
    with torch.random.fork_rng():
        torch.manual_seed(seed * LINEAR_SEED_KEY)
        linear = nn.Linear(features_train.shape[1], classes)
    linear.to(device)
    optimizer = torch.optim.Adam(linear.parameters(), lr=lr)
    steps = epochs * math.ceil(len(features_train) / batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    features_train, labels = features_train.to(device), train[1].to(device)
    for _ in range(epochs):
        for rows in torch.randperm(len(features_train), generator=generator).split(batch_size):
            optimizer.zero_grad(set_to_none=True)
            nn.functional.cross_entropy(linear(features_train[rows]), labels[rows]).backward()
            optimizer.step()
            schedule.step()
    with torch.no_grad():
        train_acc = (linear(features_train).argmax(1) == labels).float().mean()
        test_acc = (linear(features_test.to(device)).argmax(1).cpu() == test[1]).float().mean()
    classifier = nn.Sequential(backbone, linear).eval()
    return classifier, {"train_acc": 100.0 * float(train_acc), "test_acc": 100.0 * float(test_acc)}


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
    classifier: nn.Module, x: torch.Tensor, y: torch.Tensor, *, epsilons: Sequence[float], steps: int,
    seed: int, device: torch.device,
) -> dict[str, float]:
    """Accuracy (%) of ``classifier`` under L-inf PGD for each epsilon (in 1/255), and on clean x."""
    x, y = x.to(device), y.to(device)
    with torch.no_grad():
        out = {"clean": 100.0 * float((classifier(x).argmax(1) == y).float().mean())}
    for epsilon in epsilons:
        radius = epsilon / 255.0
        attack = PGD(classifier, epsilon=radius, steps=steps, step_size=2.5 * radius / steps, seed=seed, batch_size=256)
        adversarial = attack(x, y).adversarial
        with torch.no_grad():
            out[f"{epsilon:g}"] = 100.0 * float((classifier(adversarial).argmax(1) == y).float().mean())
    return out


# --------------------------------------------------------------------------- the experiment


class Experiment:
    """Runs the protocol for ``args`` and collects one record per seed."""

    def __init__(self, args: argparse.Namespace, out: Path, world: tuple[int, int] | None, device: torch.device,
                 data_label: str):
        self.args = args
        self.data_label = data_label
        self.out = out
        self.world = world
        self.rank0 = world is None or world[0] == 0
        self.device = device
        self.progress = not args.no_progress
        self.timer: Any = common.StageTimer(out / common.WALL_TIME_FILE) if self.rank0 else _NoTimer()
        self.runs: list[dict[str, Any]] = []
        self.curves: dict[str, list[float]] = {}
        self.grid: str | None = None

    def build(self, shape: tuple[int, ...]) -> Callable[[], SimCLR]:
        args = self.args

        def build() -> SimCLR:
            return SimCLR(
                in_channels=shape[0], image_size=shape[1:], width=args.width, lr=args.lr,
                weight_decay=args.weight_decay, warmup_fraction=args.warmup_fraction,
            )

        return build

    def trainer(self, seed: int, *, epochs: int | None = None, max_steps: int | None = None) -> common.Trainer:
        def train(model: nn.Module, dataset: Dataset) -> tuple[nn.Module, dict[str, Any]]:
            assert isinstance(model, SimCLR)
            record = train_contrastive(
                model, dataset, batch_size=self.args.batch_size, seed=seed, device=self.device, world=self.world,
                epochs=epochs, max_steps=max_steps, workers=self.args.workers, progress=self.progress,
            )
            return model, record

        return train

    def run(self, seed: int, train: Dataset, test: Dataset, *, first: bool) -> dict[str, Any]:
        args = self.args
        x_train, y_train = common.stack(train)
        x_test, y_test = common.stack(test)
        shape = tuple(x_train.shape[1:])
        classes = _num_classes(train, int(max(y_train.max(), y_test.max())) + 1)
        evaluate = self._evaluator(seed, (x_train, y_train), (x_test, y_test), classes)
        build = self.build(shape)
        key = {"recipe": RECIPE, "data": self.data_label, "seed": seed, "rows": len(train), "shape": list(shape),
               "width": args.width,
               "epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr,
               "weight_decay": args.weight_decay, "warmup_fraction": args.warmup_fraction}
        checkpoint = self.out / "models" / f"simclr-seed{seed}.pt" if self.world is None else None
        with self.timer.stage(f"seed{seed}/pretrain"):
            model, history = common.train_model(
                build, train, self.trainer(seed, epochs=args.epochs), seed=seed, device=self.device,
                checkpoint=checkpoint, key=key,
            )
        record: dict[str, Any] = {"seed": seed, "train_size": len(train), "test_size": len(test),
                                  "original": {**_brief(history), **evaluate("original", model)}, "augmented": {}}
        self._curve("pretrain (clean)", history, first)
        bank = common.stack(common.subset_rows(train, args.negatives))[0] if args.negatives > 0 else None
        criterion = model.criterion(n_views=args.n_views, negatives=bank, seed=seed)
        grid_rows: dict[str, torch.Tensor] = {}
        augmented_steps = None
        for preset in args.presets:
            attack = MINEUAE(criterion, preset=preset, steps=args.attack_steps, mine_steps=args.mine_steps,
                             gamma_power=GAMMA_POWER, seed=seed, batch_size=args.attack_batch_size)
            with self.timer.stage(f"seed{seed}/attack/{preset}"):
                augmentation = common.augment(train, attack, self.out / "cache" / f"simclr-seed{seed}-{preset}.h5",
                                              batch_size=args.precompute_batch_size, progress=self.progress)
            entry: dict[str, Any] = {"attack": attack.config(), **augmentation.stats(),
                                     "attack_seconds": self._last_stage_seconds()}
            if args.probe > 0 and self.rank0:
                with self.timer.stage(f"seed{seed}/probe/{preset}"):
                    x_probe, result, entry["probe"] = common.probe(attack, train, args.probe, augmentation.cache)
                if first:
                    grid_rows.setdefault("clean", x_probe)
                    grid_rows[f"UAE {preset}"] = result.adversarial.cpu()
                    grid_rows[f"δ {preset}"] = perturbation_picture(result.perturbation(x_probe).cpu())
            with self.timer.stage(f"seed{seed}/retrain/{preset}"):
                retrained, retrain = common.train_model(
                    build, augmentation.dataset, self.trainer(seed, epochs=args.epochs), seed=seed, device=self.device
                )
            entry.update({**_brief(retrain), **evaluate(preset, retrained)})
            record["augmented"][preset] = entry
            self._curve(f"clean + UAE {preset}", retrain, first)
            augmented_steps = retrain["steps"]
        if not args.no_control and augmented_steps is not None:
            with self.timer.stage(f"seed{seed}/same-steps-control"):
                control, control_history = common.train_model(
                    build, train, self.trainer(seed, max_steps=augmented_steps), seed=seed, device=self.device
                )
            record["same_steps"] = {**_brief(control_history), **evaluate("same-steps", control)}
            self._curve("clean, same steps", control_history, first)
        if first and grid_rows and self.rank0:
            path = save_image_grid(grid_rows, self.out / "grid.png",
                                   title=f"seed {seed}: clean | MINE-UAE | δ (amplified) per preset")
            self.grid = str(path)
        return record

    def _evaluator(self, seed: int, train: tuple[torch.Tensor, torch.Tensor], test: tuple[torch.Tensor, torch.Tensor],
                   classes: int) -> Callable[[str, SimCLR], dict[str, Any]]:
        args = self.args
        pgd_rows = torch.arange(min(args.pgd_rows, len(test[0])))

        def evaluate(name: str, model: SimCLR) -> dict[str, Any]:
            if not self.rank0:
                return {}
            with self.timer.stage(f"seed{seed}/evaluate/{name}"):
                classifier, linear = linear_evaluation(
                    model.backbone, train, test, classes=classes, epochs=args.linear_epochs, lr=args.linear_lr,
                    batch_size=LINEAR_BATCH, seed=seed, device=self.device,
                )
                ntxent = test_ntxent(model, test[0], batch_size=args.eval_batch_size, device=self.device)
                robust = pgd_robustness(classifier, test[0][pgd_rows], test[1][pgd_rows], epsilons=args.pgd_epsilons,
                                        steps=args.pgd_steps, seed=seed, device=self.device)
            return {"linear": linear, "test_ntxent": ntxent, "pgd_accuracy": robust, "pgd_rows": len(pgd_rows)}

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


def _brief(history: dict[str, Any]) -> dict[str, Any]:
    return {"steps": history["steps"], "epochs": history["epochs"], "train_s": round(history["seconds"], 2),
            "final_loss": history["losses"][-1] if history["losses"] else math.nan,
            "step_losses": history.get("step_losses", []), "reused_checkpoint": history["reused"]}


# --------------------------------------------------------------------------- summaries and tables


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
            "key": key, "label": label, "steps": entries[0]["steps"],
            "linear_test_acc": common.mean_std([e["linear"]["test_acc"] for e in entries]),
            "test_ntxent": common.mean_std([e["test_ntxent"] for e in entries]),
            "pgd_clean_acc": common.mean_std([e["pgd_accuracy"]["clean"] for e in entries]),
            "pgd_accuracy": {f"{eps:g}": common.mean_std([e["pgd_accuracy"][f"{eps:g}"] for e in entries])
                             for eps in epsilons},
        }
        if key.startswith("uae-"):
            row["attack"] = {
                name: common.mean_std([e.get(source, {}).get(field, math.nan) if source else e[field]
                                       for e in entries])
                for name, source, field in (
                    ("asr_pct", None, "asr_pct"), ("criterion_zero_pct", None, "criterion_zero_pct"),
                    ("mean_mi", None, "mean_mi"), ("mean_criterion", None, "mean_criterion"),
                    ("moved_linf", "probe", "moved_linf"), ("moved_l2", "probe", "moved_l2"),
                    ("linf", "probe", "linf"), ("max_abs_diff_to_cache", "probe", "max_abs_diff_to_cache"),
                    ("attack_seconds", None, "attack_seconds"),
                )
            }
        summary.append(row)
    control = next((r for r in summary if r["key"] == "same-steps"), None)
    for row in summary:
        if control is not None and row["key"].startswith("uae-"):
            pairs = [(entry, run["same_steps"]) for run in runs if "same_steps" in run
                     for k, _, entry in rows_of(run) if k == row["key"]]
            row["paired_vs_same_steps"] = {
                "linear_test_acc": common.paired_vs_control(
                    [e["linear"]["test_acc"] for e, _ in pairs], [c["linear"]["test_acc"] for _, c in pairs], better="higher"),
                "test_ntxent": common.paired_vs_control(
                    [e["test_ntxent"] for e, _ in pairs], [c["test_ntxent"] for _, c in pairs]),
            }
            row["vs_same_steps"] = {
                "linear_test_acc_pp": row["linear_test_acc"]["mean"] - control["linear_test_acc"]["mean"],
                "test_ntxent": row["test_ntxent"]["mean"] - control["test_ntxent"]["mean"],
                "pgd_acc_pp": {k: row["pgd_accuracy"][k]["mean"] - control["pgd_accuracy"][k]["mean"]
                               for k in row["pgd_accuracy"]},
            }
    return summary


def _signed(value: float, digits: int = 2) -> str:
    return "—" if value is None or not math.isfinite(value) else f"{value:+.{digits}f}"


def markdown(summary: Sequence[dict[str, Any]], epsilons: Sequence[float], *, data: str, seeds: int,
             pgd_rows: int, pgd_steps: int) -> str:
    """The results as Markdown: evaluation table, changes against the control, attack diagnostics."""
    eps_labels = [f"{eps:g}" for eps in epsilons]
    header = ["model", "steps", "linear test acc %", "test NT-Xent", "clean acc (PGD rows) %",
              *(f"PGD ε={e}/255 %" for e in eps_labels)]
    body = [[row["label"], str(row["steps"]), common.format_stat(row["linear_test_acc"], 2),
             common.format_stat(row["test_ntxent"], 4), common.format_stat(row["pgd_clean_acc"], 1),
             *(common.format_stat(row["pgd_accuracy"][e], 1) for e in eps_labels)] for row in summary]
    lines = [
        f"### SimCLR on {data}: linear evaluation, test NT-Xent and PGD robustness",
        "",
        f"Mean ± std over {seeds} seed{'s' if seeds > 1 else ''}. `steps`: optimisation steps of the model's",
        "training; `clean, same steps` is the clean model trained as long as the augmented ones. Linear evaluation:",
        "a linear layer on the frozen backbone. Test NT-Xent: lightly's loss on fixed views of the test set",
        f"(lower is better). PGD: L∞, {pgd_steps} steps, random start, on {pgd_rows} test images.",
        "",
        common.markdown_table(header, body),
    ]
    changes = [row for row in summary if "vs_same_steps" in row]
    if changes:
        change_header = ["model", "Δ linear acc (pp)", "Δ test NT-Xent", *(f"Δ PGD ε={e} (pp)" for e in eps_labels)]
        change_body = [[row["label"], _signed(row["vs_same_steps"]["linear_test_acc_pp"]),
                        _signed(row["vs_same_steps"]["test_ntxent"], 4),
                        *(_signed(row["vs_same_steps"]["pgd_acc_pp"][e]) for e in eps_labels)] for row in changes]
        lines += ["", "### Augmented minus the same-steps clean control (accuracy: positive = UAE helps;"
                  " NT-Xent: negative = UAE helps)", "", common.markdown_table(change_header, change_body)]
        paired = [row for row in changes if row["paired_vs_same_steps"]["linear_test_acc"]]
        if paired:
            lines += ["", "### Paired over seeds: augmented − same-steps control", "",
                      "Mean [95 % paired-t CI], minimum detectable effect (80 % power, α = 0.05) and verdict",
                      "(`uae_augment.statistics`; accuracy: higher is better, NT-Xent: lower is better).", "",
                      common.markdown_table(["model", "Δ linear acc (pp)", "Δ test NT-Xent"], [
                          [row["label"], common.format_paired(row["paired_vs_same_steps"]["linear_test_acc"], 2),
                           common.format_paired(row["paired_vs_same_steps"]["test_ntxent"], 4)] for row in paired])]
    attacked = [row for row in summary if "attack" in row]
    if attacked:
        attack_header = ["preset", "ASR %", "f_x = 0 %", "mean MI", "mean f_x", "moved from δ₀ L∞", "moved L2",
                         "‖x' − x‖∞", "max |probe − cache|", "attack s (this run)"]
        attack_body = [[row["key"][4:], common.format_stat(row["attack"]["asr_pct"], 1),
                        common.format_stat(row["attack"]["criterion_zero_pct"], 1),
                        common.format_stat(row["attack"]["mean_mi"], 4),
                        common.format_stat(row["attack"]["mean_criterion"], 4),
                        common.format_stat(row["attack"]["moved_linf"], 4),
                        common.format_stat(row["attack"]["moved_l2"], 4),
                        common.format_stat(row["attack"]["linf"], 4),
                        common.format_number(row["attack"]["max_abs_diff_to_cache"]["mean"], 6),
                        common.format_stat(row["attack"]["attack_seconds"], 0)] for row in attacked]
        lines += ["", "### What the attacks did (training set; moved / ‖·‖∞: the probe images)", "",
                  "`moved from δ₀`: distance between the returned UAE and the attack's start clip(x + δ₀);",
                  "near 0 means the optimisation left δ at its random initialisation.", "",
                  common.markdown_table(attack_header, attack_body)]
    return "\n".join(lines) + "\n"


def _smoothed(values: Sequence[float], window: int) -> list[float]:
    out, total = [], 0.0
    for i, value in enumerate(values):
        total += value
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


# --------------------------------------------------------------------------- entry point


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the recipe; rank 0 prints the Markdown table; returns the exit status."""
    parser = build_parser()
    args, out = common.start_run(parser, argv, QUICK, RECIPE, save=False)  # rank 0 saves it
    with distributed(args.device) as (world, device):
        rank0 = world is None or world[0] == 0
        if rank0:
            common.save_config(args, out, argv)
        try:
            train, test, label = load_data(args)
        except common.MissingDataset as error:
            parser.error(str(error))
        experiment = Experiment(args, out, world, device, label)
        for position, seed in enumerate(args.seeds):
            experiment.runs.append(experiment.run(seed, train, test, first=position == 0))
        if not rank0:
            return 0
        experiment.timer.close()
        summary = summarise(experiment.runs, args.pgd_epsilons)
        table = markdown(summary, args.pgd_epsilons, data=label, seeds=len(args.seeds),
                         pgd_rows=min(args.pgd_rows, len(test)), pgd_steps=args.pgd_steps)  # type: ignore[arg-type]
        curves_path = None
        if experiment.curves:
            window = max(1, max(len(v) for v in experiment.curves.values()) // 40)
            curves_path = str(save_curves({k: _smoothed(v, window) for k, v in experiment.curves.items()},
                                          out / "loss_curves.png", xlabel="optimisation step",
                                          ylabel=f"NT-Xent (running mean of {window})",
                                          title=f"SimCLR training loss, seed {args.seeds[0]}"))
        common.write_outputs(out, RECIPE, args, experiment.timer, table, {
            "world_size": 1 if world is None else world[1],
            "data": label,
            "runs": experiment.runs,
            "summary": summary,
            "grid": experiment.grid,
            "loss_curves": curves_path,
        })
    return 0


if __name__ == "__main__":
    sys.exit(main())
