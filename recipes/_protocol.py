"""The recipes' shared protocol: data subsets, seeded training with a checkpoint, UAE augmentation, probes.

A recipe trains a model from one seeded initialisation (:func:`train_model`),
augments its training set with the UAEs of an attack (:func:`augment`, through
an HDF5 cache), retrains, and checks a few UAEs again in memory
(:func:`probe`). :class:`RecipeRun` holds what every experiment shares.
Imported by the recipes as a sibling module (``import _protocol``).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import random
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from _config import plain
from _report import WALL_TIME_FILE, StageTimer
from uae_augment import (
    Attack,
    AttackResult,
    UAEAugmented,
    UAECache,
    fit,
    load_dataset,
    precompute,
    random_subset,
)
from uae_augment.data import ProvenanceMismatchError, dataset_info, resolve_data_root
from uae_augment.devices import resolve_device
from uae_augment.models import model_device

logger = logging.getLogger("recipes")


def seed_everything(seed: int) -> None:
    """Seeds Python's, NumPy's and torch's global generators (model initialisation uses them)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class MissingDataset(LookupError):
    """A data set's canonical file is not there (the recipe skips it and says so)."""


def load_splits(
    name: str,
    root: Path | None,
    *,
    train_rows: int | None = None,
    test_rows: int | None = None,
    **options: Any,
) -> tuple[Dataset, Dataset]:
    """(train, test) of a named data set, each optionally cut to a fixed random subset (:func:`subset_rows`).

    Raises:
        MissingDataset: when the data set's file is absent from the data root.
    """
    try:
        train = load_dataset(name, root=root, split="train", **options)
        test = load_dataset(name, root=root, split="test", **options)
    except FileNotFoundError as error:
        raise MissingDataset(str(error)) from error
    return subset_rows(train, train_rows), subset_rows(test, test_rows)


def dataset_available(name: str, root: Path | None, **options: Any) -> bool:
    """Whether :func:`uae_augment.load_dataset` finds the data set's file (checked without loading it).

    ``options`` are accepted for symmetry with :func:`load_splits`; they do not change the file.
    """
    del options
    file = dataset_info(name).file
    return file is None or (resolve_data_root(root) / file).is_file()


SUBSET_SEED = 0
"""Seed of the row subsets: the same rows for every run seed and every recipe."""


def subset_rows(dataset: Dataset, rows: int | None) -> Dataset:
    """A fixed random subset of ``rows`` items (all of them when ``rows`` is None or larger).

    :func:`uae_augment.random_subset` with :data:`SUBSET_SEED`: the rows are drawn
    without replacement and kept in their original order.

    Raises:
        ValueError: if ``rows`` < 1.
    """
    return random_subset(dataset, rows, SUBSET_SEED)


def stack(dataset: Dataset, batch_size: int = 2048) -> tuple[torch.Tensor, torch.Tensor]:
    """All (x, y) of a dataset as two tensors (x float (N, ...), y int64 (N,))."""
    xs, ys = [], []
    for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        xs.append(batch[0])
        ys.append(torch.as_tensor(batch[1]))
    return torch.cat(xs), torch.cat(ys).long()


def sample_shape(dataset: Dataset) -> tuple[int, ...]:
    """Shape of one sample of ``dataset``, e.g. (1, 28, 28) or (617,)."""
    return tuple(dataset[0][0].shape)


# --------------------------------------------------------------------------- training and augmentation


FAILED_POLICIES = ("keep", "drop")
"""What happens to UAEs whose attack failed (success=False): ``keep`` them in the
augmented set (the release concatenates every generated example, so the set is
exactly 2N and every augmented run has the same number of steps) or ``drop`` them
(clean N + successful UAEs only)."""


Trainer = Callable[[nn.Module, Dataset], tuple[nn.Module, dict[str, Any]]]
"""Trains a freshly built model on a dataset; returns the trained model and a history record
with at least ``steps``, ``epochs``, ``batch_size``, ``losses`` and ``seconds``."""


def fit_trainer(
    *,
    device: torch.device,
    epochs: int | None = None,
    max_steps: int | None = None,
    seed: int = 0,
    progress: bool = False,
) -> Trainer:
    """A :data:`Trainer` that runs :func:`uae_augment.fit` with these settings."""

    def train(model: nn.Module, dataset: Dataset) -> tuple[nn.Module, dict[str, Any]]:
        history = fit(
            model,
            dataset,
            epochs=epochs,
            max_steps=max_steps,
            seed=seed,
            device=device,
            progress=progress,
        )
        return model, history_record(history)

    return train


def history_record(history: Any) -> dict[str, Any]:
    """The JSON-friendly part of a :class:`uae_augment.FitHistory`."""
    return {
        "steps": history.steps,
        "epochs": history.epochs,
        "batch_size": history.batch_size,
        "losses": [float(v) for v in history.losses],
        "seconds": history.seconds,
    }


def train_model(
    build: Callable[[], nn.Module],
    dataset: Dataset,
    trainer: Trainer,
    *,
    seed: int,
    device: torch.device,
    checkpoint: Path | None = None,
    key: Mapping[str, Any] | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """Builds a model with the global generators seeded by ``seed`` and trains it with ``trainer``.

    The same ``seed`` gives the same initial weights, so a clean model, its
    augmented retrain and its same-steps control start from one initialisation.
    With ``checkpoint`` the trained weights and the history are saved there, and a
    later call with an equal ``key`` loads them instead of training again (the
    UAE caches of a rerun then match the model's state hash).

    Returns:
        ``(model, history)``: the trained model in eval mode on ``device`` and the
        trainer's record plus ``reused`` (True when loaded from the checkpoint).
    """
    seed_everything(seed)
    model = build()
    stored_key = plain(dict(key or {}))
    if checkpoint is not None and checkpoint.exists():
        saved = torch.load(checkpoint, map_location="cpu", weights_only=False)
        if saved.get("key") == stored_key:
            model.load_state_dict(saved["state_dict"])
            model.to(device).eval()
            return model, {**saved["history"], "reused": True}
    model, record = trainer(model, dataset)
    model.to(device).eval()
    if checkpoint is not None:
        checkpoint.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"key": stored_key, "state_dict": model.state_dict(), "history": record}, checkpoint)
    return model, {**record, "reused": False}


@dataclasses.dataclass
class Augmentation:
    """The augmented training set of one attack and what the attack did.

    Attributes:
        dataset: clean + UAE training set (``UAEAugmented`` in concat mode, or a
            subset of it without the failed UAEs under ``failed="drop"``).
        cache: the HDF5 cache of the UAEs (rows aligned with the clean set).
        kept_uaes: number of UAEs in ``dataset``.
    """

    dataset: Dataset
    cache: UAECache
    kept_uaes: int

    def stats(self) -> dict[str, Any]:
        """ASR (%), MI and criterion summaries of the cached UAEs."""
        mi = self.cache.mi
        finite = mi[torch.isfinite(mi)]
        return {
            "asr_pct": 100.0 * self.cache.asr,
            "mean_mi": float(finite.mean()) if finite.numel() else math.nan,
            "mean_criterion": float(self.cache.criterion.mean()),
            "criterion_zero_pct": 100.0 * float((self.cache.criterion <= 0).double().mean()),
            "kept_uaes": self.kept_uaes,
            "augmented_size": len(self.dataset),  # type: ignore[arg-type]
        }


def augment(
    train: Dataset,
    attack: Attack,
    path: Path,
    *,
    failed: str = "keep",
    batch_size: int = 256,
    progress: bool = False,
) -> Augmentation:
    """Generates (or reuses) the UAE of every training sample and returns the 1:1 augmented set.

    :func:`uae_augment.precompute` writes ``path`` once; a rerun with the
    same data, model state and attack config reuses the finished file (and
    resumes an interrupted one); a file written for other data, model or attack
    settings is rebuilt. The augmented set is
    ``UAEAugmented(train, attack, mode="concat", cache=path)`` (item N + i is the
    UAE of item i), without the failed UAEs when ``failed="drop"``.

    Raises:
        ValueError: on an unknown ``failed`` policy.
    """
    if failed not in FAILED_POLICIES:
        raise ValueError(f"failed must be one of {FAILED_POLICIES}, got {failed!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        precompute(train, attack, path, batch_size=batch_size, resume=True, progress=progress)
    except ProvenanceMismatchError as error:
        logger.warning("%s was written for other settings; rebuilding it (%s)", path, error)
        precompute(train, attack, path, batch_size=batch_size, resume=False, progress=progress)
    augmented = UAEAugmented(train, attack, mode="concat", cache=path, batch_size=batch_size, progress=progress)
    cache = UAECache(path)
    n = len(cache)
    if failed == "keep":
        return Augmentation(augmented, cache, n)
    successful = torch.nonzero(cache.success).flatten()
    rows = list(range(n)) + (n + successful).tolist()
    return Augmentation(Subset(augmented, rows), cache, int(successful.numel()))


def probe(
    attack: Attack, train: Dataset, rows: int, cache: UAECache
) -> tuple[torch.Tensor, AttackResult, dict[str, float]]:
    """Attacks ``rows`` evenly spaced training samples again in memory; returns (x, result, stats).

    The stats hold how far the optimisation moved each example from its starting
    point clip(x + delta_0) (``moved_linf``, ``moved_l2``; NaN for attacks without
    one), the size of the perturbation (``linf``, ``l2``) and
    ``max_abs_diff_to_cache``: a sample's result depends only on the sample, the
    model, the config, the seed and its index, so it should equal the cached row.
    Float32 sums over a batch are not bitwise independent of the batch size, and the
    attack's choice of iterate (lowest f_x, lowest MI) can flip on a near-tie, so
    ``probe_rows_differing_from_cache`` counts the rows that differ by more than 1e-5.
    The attack runs on its model's device; ``x`` and the result are returned on CPU.
    """
    size = len(train)  # type: ignore[arg-type]
    positions = torch.linspace(0, size - 1, min(rows, size)).round().long().unique()
    x, _ = stack(Subset(train, positions.tolist()))
    models = attack.models()
    device = model_device(models[0]) if models else x.device
    result = attack(x.to(device), index=positions).to("cpu")  # the attack runs where its model is
    cached, _ = cache.rows(positions)
    summary = result.summary(x)
    difference = (cached - result.adversarial.cpu()).flatten(1).abs().amax(dim=1)
    stats = {
        "probe_rows": len(x),
        "moved_linf": summary["mean_moved_linf"],
        "moved_l2": summary["mean_moved_l2"],
        "linf": summary["mean_linf"],
        "l2": summary["mean_l2"],
        "max_abs_diff_to_cache": float(difference.max()),
        "probe_rows_differing_from_cache": int((difference > 1e-5).sum()),
    }
    return x, result, stats


class RecipeRun:
    """What every recipe's experiment holds: its settings, output folder, device, progress
    switch, stage timer (``out/wall_time.log``) and the per-seed records it collects."""

    def __init__(self, args: argparse.Namespace, out: Path):
        self.args = args
        self.out = out
        self.device = resolve_device(args.device)
        self.progress = not args.no_progress
        self.timer = StageTimer(out / WALL_TIME_FILE)
        self.runs: list[dict[str, Any]] = []


def brief(history: Mapping[str, Any], extra: Sequence[str] = ()) -> dict[str, Any]:
    """The JSON summary of a training record (:data:`Trainer`, :func:`train_model`).

    ``steps``, ``epochs``, ``train_s`` (seconds, 2 decimals), ``final_loss`` (the
    last entry of ``losses``, NaN when empty), ``reused_checkpoint``, and each key
    of ``extra`` that the record holds.

    Example:
        >>> brief({"steps": 4, "epochs": 2, "seconds": 1.234, "losses": [0.5, 0.25], "reused": False})
        {'steps': 4, 'epochs': 2, 'train_s': 1.23, 'final_loss': 0.25, 'reused_checkpoint': False}
    """
    losses = history["losses"]
    summary = {
        "steps": history["steps"],
        "epochs": history["epochs"],
        "train_s": round(history["seconds"], 2),
        "final_loss": losses[-1] if len(losses) else math.nan,
        "reused_checkpoint": history["reused"],
    }
    return {**summary, **{key: history[key] for key in extra if key in history}}
