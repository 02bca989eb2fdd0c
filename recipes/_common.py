"""Plumbing shared by the recipes: configuration, seeds, devices, outputs, timing and tables.

Configuration follows timm's ``train.py``: every option is an argparse flag; a
YAML file given with ``--config`` overlays the defaults; flags typed on the
command line override both; ``--quick`` selects a recipe's small preset first.
Precedence, lowest to highest::

    parser defaults < --quick preset < --config file.yaml < explicit flags

The resolved configuration is saved beside the outputs (``config.yaml``), so
every results file can be traced to the exact settings that made it.

Only the public API of ``uae_augment`` is used here and in the recipes.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import math
import os
import platform
import random
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

import uae_augment
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
from uae_augment._model_state import model_device
from uae_augment._progress import configure_logging
from uae_augment.data import ProvenanceMismatchError, dataset_info, resolve_data_root
from uae_augment.statistics import paired_difference

logger = logging.getLogger("recipes")

CONFIG_FILE = "config.yaml"
RESULTS_FILE = "results.json"
TABLE_FILE = "results.md"
WALL_TIME_FILE = "wall_time.log"


# --------------------------------------------------------------------------- configuration


def base_parser(
    description: str, *, examples: Sequence[str] = (), quick: Mapping[str, Any] | None = None
) -> argparse.ArgumentParser:
    """An argparse parser with the options every recipe shares.

    Shared options: ``--config``, ``--quick``, ``--out``, ``--seeds``, ``--device``,
    ``--data-root``, ``--no-progress``, ``--log-level``. The description is the first
    paragraph of ``description`` (a recipe passes its module docstring); the epilog lists
    the example command lines and the ``--quick`` preset.
    """
    epilog = "".join(["examples:\n" if examples else "", *(f"  {line}\n" for line in examples),
                      f"\nquick preset: {dict(quick)}" if quick is not None else ""])
    parser = argparse.ArgumentParser(
        description=description.strip().split("\n\n")[0],
        epilog=epilog or None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    group = parser.add_argument_group("run")
    group.add_argument(
        "--config", type=Path, default=None,
        help="YAML file of option values (keys as the long flags, '-' or '_'); flags override it",
    )
    group.add_argument(
        "--quick", action="store_true",
        help="the recipe's minutes-long CPU preset (flags and --config still override it)",
    )
    group.add_argument("--out", type=Path, default=None, help="output folder (default: outputs/<recipe>[-quick])")
    group.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds; mean and std over them (default: %(default)s)")
    group.add_argument("--device", default="auto", help="'auto' (cuda when available), 'cpu', 'cuda', 'cuda:1', ... (default: %(default)s)")
    group.add_argument(
        "--data-root", type=Path, default=None,
        help="folder of the canonical .npz data files (default: $UAE_DATA_ROOT, else the library's default)",
    )
    group.add_argument(
        "--threads", type=int, default=None,
        help="torch CPU threads (default: torch's choice; 1 is faster on a CPU shared with other jobs)",
    )
    group.add_argument("--no-progress", action="store_true", help="hide progress bars")
    group.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="(default: %(default)s)")
    return parser


def parse_config(
    parser: argparse.ArgumentParser,
    argv: Sequence[str] | None,
    quick: Mapping[str, Any],
) -> argparse.Namespace:
    """Parses ``argv`` with the precedence defaults < quick < YAML < explicit flags.

    Args:
        parser: the recipe's parser (built on :func:`base_parser`).
        argv: command-line arguments (``None``: ``sys.argv[1:]``).
        quick: option values (by destination name) of the ``--quick`` preset.

    Returns:
        The resolved namespace.

    Raises:
        SystemExit: (via ``parser.error``) on an unknown or malformed YAML key, a
            YAML file that is not a mapping, or a ``quick`` key the parser lacks.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    first = parser.parse_args(argv)
    destinations = set(vars(first))
    overlay: dict[str, Any] = {}
    if first.quick:
        unknown = sorted(set(quick) - destinations)
        if unknown:
            parser.error(f"the quick preset names unknown options: {', '.join(unknown)}")
        overlay.update(quick)
    if first.config is not None:
        overlay.update(_read_yaml_options(parser, first.config, destinations))
    if not overlay:
        return first
    previous = {dest: parser.get_default(dest) for dest in overlay}
    parser.set_defaults(**overlay)
    try:
        return parser.parse_args(argv)
    finally:
        parser.set_defaults(**previous)  # leave the caller's parser as it was


def _read_yaml_options(parser: argparse.ArgumentParser, path: Path, destinations: set[str]) -> dict[str, Any]:
    try:
        loaded = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        parser.error(f"--config file {str(path)!r} does not exist")
    except yaml.YAMLError as error:
        parser.error(f"--config file {str(path)!r} is not valid YAML: {error}")
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        parser.error(f"--config file {str(path)!r} must hold a mapping of options, found {type(loaded).__name__}")
    options: dict[str, Any] = {}
    for key, value in loaded.items():
        dest = str(key).replace("-", "_")
        if dest in ("config", "quick") or dest not in destinations:
            known = ", ".join(sorted(d for d in destinations if d not in ("config", "quick")))
            parser.error(f"--config file {str(path)!r}: unknown option {key!r}; known: {known}")
        if isinstance(value, str) and dest in ("out", "data_root"):
            value = Path(value)
        options[dest] = value
    return options


def resolved_config(args: argparse.Namespace) -> dict[str, Any]:
    """The namespace as a plain YAML/JSON-serialisable dict (paths as strings)."""
    return {key: _plain(value) for key, value in sorted(vars(args).items())}


def _plain(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def save_config(args: argparse.Namespace, out: Path, argv: Sequence[str] | None) -> Path:
    """Writes the resolved configuration (and the command line) to ``out/config.yaml``."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / CONFIG_FILE
    command = " ".join([Path(sys.argv[0]).name, *(sys.argv[1:] if argv is None else argv)])
    text = f"# resolved configuration of: {command}\n" + yaml.safe_dump(resolved_config(args), sort_keys=True)
    path.write_text(text)
    return path


def setup_run(args: argparse.Namespace) -> None:
    """Applies the run options: log level (records go to stderr, through tqdm) and torch CPU threads.

    Raises:
        ValueError: if ``--threads`` is below 1.
    """
    level = getattr(logging, args.log_level)
    configure_logging(level, "%(asctime)s %(levelname)s %(name)s: %(message)s")  # through tqdm: no interleaving
    for name in ("recipes", "uae_augment"):
        logging.getLogger(name).setLevel(level)
    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)


def start_run(
    parser: argparse.ArgumentParser, argv: Sequence[str] | None, quick: Mapping[str, Any], recipe: str,
    *, save: bool = True,
) -> tuple[argparse.Namespace, Path]:
    """A recipe's start: parsed settings (:func:`parse_config`), logging and threads applied, the output
    folder (``--out`` or :func:`default_out`) and, with ``save``, its ``config.yaml``."""
    args = parse_config(parser, argv, quick)
    setup_run(args)
    out = args.out or default_out(recipe, args.quick)
    if save:
        save_config(args, out, argv)
    return args, out


QUICK_THREADS = 1
"""Torch threads of every ``--quick`` preset: on a CPU shared with other jobs several OpenMP
threads spin-wait (measured up to ~10x slower per training step with 2 threads at load 5)."""


# --------------------------------------------------------------------------- seeds and devices


def seed_everything(seed: int) -> None:
    """Seeds Python's, NumPy's and torch's global generators (model initialisation uses them)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    """``'auto'`` -> cuda when available, else cpu; anything else as torch.device.

    Raises:
        ValueError: if a CUDA device is asked for and CUDA is not available.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name!r} asks for CUDA, but torch.cuda.is_available() is False")
    return device


def environment() -> dict[str, Any]:
    """What the numbers were measured on (versions, CPU count, threads, load)."""
    load = os.getloadavg() if hasattr(os, "getloadavg") else (math.nan,) * 3
    return {
        "uae_augment": uae_augment.__version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "load_average_1_5_15min": [round(v, 2) for v in load],
    }


# --------------------------------------------------------------------------- data


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
    *, device: torch.device, epochs: int | None = None, max_steps: int | None = None,
    seed: int = 0, progress: bool = False,
) -> Trainer:
    """A :data:`Trainer` that runs :func:`uae_augment.fit` with these settings."""

    def train(model: nn.Module, dataset: Dataset) -> tuple[nn.Module, dict[str, Any]]:
        history = fit(model, dataset, epochs=epochs, max_steps=max_steps, seed=seed, device=device, progress=progress)
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
    stored_key = _plain(dict(key or {}))
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


def probe(attack: Attack, train: Dataset, rows: int, cache: UAECache) -> tuple[torch.Tensor, AttackResult, dict[str, float]]:
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


# --------------------------------------------------------------------------- outputs


class StageTimer:
    """Wall time (and this process's CPU time) per named stage, appended to ``wall_time.log``.

    The CPU seconds tell how much of the wall time the recipe really computed:
    on a machine shared with other jobs the wall time is larger.

    Example:
        >>> import tempfile
        >>> timer = StageTimer(Path(tempfile.mkdtemp()) / "wall_time.log")
        >>> with timer.stage("train/conv/seed0"):
        ...     pass
        >>> timer.records[0]["stage"]
        'train/conv/seed0'
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.records: list[dict[str, Any]] = []
        self._start = time.perf_counter()
        self._cpu_start = time.process_time()
        with self.path.open("a") as log:
            log.write(f"# run started {time.strftime('%Y-%m-%d %H:%M:%S')}, load {environment()['load_average_1_5_15min']}\n")

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Times the ``with`` block as stage ``name`` (also when it raises)."""
        started, cpu_started = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            seconds = time.perf_counter() - started
            cpu_s = time.process_time() - cpu_started
            self.records.append({"stage": name, "seconds": round(seconds, 3), "cpu_s": round(cpu_s, 3)})
            with self.path.open("a") as log:
                log.write(f"{name}\t{seconds:.2f} s\tcpu {cpu_s:.2f} s\n")
            logger.info("stage %s: %.1f s (cpu %.1f s)", name, seconds, cpu_s)

    @property
    def total_s(self) -> float:
        """Seconds since the timer was created."""
        return time.perf_counter() - self._start

    @property
    def total_cpu_s(self) -> float:
        """CPU seconds of this process since the timer was created."""
        return time.process_time() - self._cpu_start

    def close(self) -> None:
        """Appends the total wall and CPU time and the load average to the log."""
        with self.path.open("a") as log:
            log.write(
                f"total\t{self.total_s:.2f} s\tcpu {self.total_cpu_s:.2f} s\t"
                f"load {environment()['load_average_1_5_15min']}\n"
            )


def write_json(path: Path, data: Any) -> Path:
    """Writes ``data`` as indented JSON; NaN and infinities become null (valid JSON)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_finite(data), indent=2, sort_keys=False) + "\n")
    return path


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


def write_outputs(
    out: Path, recipe: str, args: argparse.Namespace, timer: StageTimer, table: str, fields: dict[str, Any]
) -> None:
    """A run's final outputs: ``results.md`` (the table), ``results.json`` and the printed table.

    The JSON holds the recipe's name, the resolved config, the environment, the
    recipe's own ``fields`` and the per-stage wall and CPU time of ``timer``.
    """
    (out / TABLE_FILE).write_text(table)
    write_json(out / RESULTS_FILE, {
        "recipe": recipe,
        "config": resolved_config(args),
        "environment": environment(),
        **fields,
        "wall_time": {"total_s": round(timer.total_s, 2), "cpu_s": round(timer.total_cpu_s, 2), "stages": timer.records},
    })
    print(table)
    print(f"outputs in {out} (total wall time {timer.total_s:.0f} s)")


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (np.floating, np.integer)):
        return _finite(value.item())
    return value


# --------------------------------------------------------------------------- statistics and tables


def mean_std(values: Sequence[float]) -> dict[str, float | int]:
    """{'mean', 'std', 'n'} of the finite values (sample std, ddof=1; 0 for one value; NaN for none)."""
    finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not finite:
        return {"mean": math.nan, "std": math.nan, "n": 0}
    std = float(np.std(finite, ddof=1)) if len(finite) > 1 else 0.0
    return {"mean": float(np.mean(finite)), "std": std, "n": len(finite)}


def improvement_pct(original: float, new: float) -> float:
    """The paper's "(+x%)": relative reduction of an error, 100 * (original - new) / original."""
    if original is None or new is None or not (math.isfinite(original) and math.isfinite(new)) or original == 0:
        return math.nan
    return 100.0 * (original - new) / original


def paired_vs_control(
    arm: Sequence[float], control: Sequence[float], *, better: str = "lower"
) -> dict[str, Any] | None:
    """:func:`uae_augment.statistics.paired_difference` of ``arm - control`` per seed, as a dict.

    None with fewer than 2 seeds; ``{"error": message}`` when the statistics are
    undefined (differences of zero variance, a non-finite value).
    """
    if len(arm) < 2:
        return None
    try:
        return paired_difference(arm, control, better=better).to_dict()  # type: ignore[arg-type]
    except ValueError as error:
        return {"error": str(error)}


def format_paired(comparison: Mapping[str, Any] | None, digits: int = 5, scale: float = 1.0) -> str:
    """``'-0.00012 [-0.00020, -0.00004], MDE 0.00009: helps'``; '—' for None, 'undefined' on an error."""
    if comparison is None:
        return "—"
    if "error" in comparison:
        return "undefined (zero variance)" if "zero variance" in comparison["error"] else "undefined"
    low, high, mean, mde = (scale * comparison[k] for k in ("ci_low", "ci_high", "mean", "mde"))
    return f"{mean:+.{digits}f} [{low:+.{digits}f}, {high:+.{digits}f}], MDE {mde:.{digits}f}: {comparison['verdict']}"


def format_number(value: float | None, digits: int = 5) -> str:
    """``value`` with ``digits`` decimals; '—' for None/NaN."""
    if value is None or not math.isfinite(value):
        return "—"
    return f"{value:.{digits}f}"


def format_pct(value: float | None, digits: int = 1, *, signed: bool = True) -> str:
    """'+12.3%' (or '12.3%' unsigned); '—' for None/NaN."""
    if value is None or not math.isfinite(value):
        return "—"
    return f"{value:+.{digits}f}%" if signed else f"{value:.{digits}f}%"


def format_stat(stat: Mapping[str, float], digits: int = 5) -> str:
    """'mean ± std' (just the mean for one value); '—' when empty."""
    if not stat or not math.isfinite(stat.get("mean", math.nan)):
        return "—"
    if stat.get("n", 1) > 1:
        return f"{stat['mean']:.{digits}f} ± {stat['std']:.{digits}f}"
    return f"{stat['mean']:.{digits}f}"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub Markdown table; every row must have as many cells as the header.

    Raises:
        ValueError: on a row of the wrong length.
    """
    for row in rows:
        if len(row) != len(header):
            raise ValueError(f"table row has {len(row)} cells, the header {len(header)}: {row!r}")

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"

    return "\n".join([line(header), line(["---"] * len(header)), *(line(r) for r in rows)])


def default_out(recipe: str, quick: bool) -> Path:
    """``outputs/<recipe>`` or ``outputs/<recipe>-quick``."""
    return Path("outputs") / (f"{recipe}-quick" if quick else recipe)
