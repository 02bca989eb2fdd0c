"""The ``uae-augment`` command: precompute a UAE cache, inspect one, run the demo.

Examples::

    uae-augment precompute mnist --data-root /path/to/datasets --model conv-ae \\
        --checkpoint conv_ae.pt --attack mine-uae --preset fast --out mnist_convae.h5
    torchrun --nproc_per_node=4 -m uae_augment.cli precompute mnist ... --out mnist_convae.h5
    uae-augment inspect mnist_convae.h5 --json
    uae-augment demo --help

Under torchrun (``WORLD_SIZE`` > 1) ``precompute`` initialises the process
group from the environment (NCCL on CUDA, gloo on CPU; see :mod:`uae_augment.devices`), every
rank attacks its slice into a shard on ``cuda:LOCAL_RANK`` (or the CPU), rank 0 joins them, and the
group is destroyed at the end.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import importlib
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ._cli_build import CLIError, build_attack, build_victim, warn_if_long
from ._names import DATASET_NAMES, PRECOMPUTE_BATCH_SIZE, PRESET_NAMES

logger = logging.getLogger("uae_augment.cli")

ATTACKS = ("mine-uae", "l2-uae", "gaussian", "minmax")
CRITERIA = ("auto", "reconstruction", "margin", "contrastive")


# --------------------------------------------------------------------------- parsing helpers


def parse_assignment(text: str) -> tuple[str, Any]:
    """Parses ``key=value``; the value as JSON when it is JSON, else a few Python spellings, else text.

    Example:
        >>> parse_assignment("steps=5"), parse_assignment("statistics_hidden=None")
        (('steps', 5), ('statistics_hidden', None))
        >>> parse_assignment("delta_update=sign"), parse_assignment("alpha=1e-3")
        (('delta_update', 'sign'), ('alpha', 0.001))
    """
    key, sep, raw = text.partition("=")
    key = key.strip().replace("-", "_")
    if not sep or not key.isidentifier():
        raise argparse.ArgumentTypeError(f"expected key=value, got {text!r}")
    raw = raw.strip()
    try:
        value: Any = json.loads(raw)
    except ValueError:
        value = {"None": None, "none": None, "True": True, "False": False}.get(raw, raw)
    return key, value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text}")
    return value


# --------------------------------------------------------------------------- subcommands


def run_precompute(args: argparse.Namespace) -> int:
    """``uae-augment precompute``: attacks a named data set into an HDF5 cache."""
    from torch.utils.data import Subset

    from .data import load_dataset
    from .data.cache import UAECache, precompute
    from .devices import distributed

    timeout = datetime.timedelta(minutes=args.dist_timeout_min)
    with distributed(args.device, timeout=timeout) as placement:
        device = placement.device
        dataset = load_dataset(args.dataset, root=args.data_root, split=args.split)
        rows: Any = dataset
        if args.limit is not None:
            if args.limit > len(dataset):
                raise CLIError(f"--limit {args.limit} exceeds the {len(dataset)} rows of {args.dataset}/{args.split}")
            rows = Subset(dataset, range(args.limit))
        model = build_victim(args, dataset.sample_shape, dataset.num_classes).to(device)
        attack = build_attack(args, model, dataset[0][0].to(device))
        if placement.is_main:
            warn_if_long(attack, len(rows), dataset.sample_shape)
        started = time.perf_counter()
        path = precompute(
            rows,
            attack,
            args.out,
            batch_size=args.batch_size,
            resume=not args.no_resume,
            dtype=args.dtype,
            compression=None if args.compression == "none" else args.compression,
            num_workers=args.num_workers,
            progress=not args.no_progress and placement.is_main,
            model_origin=model_origin(args),
        )
        elapsed = time.perf_counter() - started
        if placement.is_main:
            cache = UAECache(path, preload=False)
            print(f"finished {path} ({elapsed:.1f} s)")
            print(format_summary(cache.summary(), cache.provenance))
    return 0


def model_origin(args: argparse.Namespace) -> dict[str, Any]:
    """The model name and its checkpoint (path and SHA-256), recorded in the cache's provenance."""
    origin: dict[str, Any] = {"model": args.model, "checkpoint": None}
    if args.checkpoint is not None:
        digest = hashlib.sha256(Path(args.checkpoint).read_bytes()).hexdigest()
        origin.update(checkpoint=str(Path(args.checkpoint).resolve()), sha256=digest)
    return origin


def _model_line(provenance: dict[str, Any]) -> str:
    """``model ...`` of :func:`format_summary`: the state hash, and the checkpoint when known."""
    line = f"state hash {str(provenance.get('model_state_hash', ''))[:16]}"
    origin = provenance.get("model_origin")
    if not origin:
        return f"{line}, checkpoint unknown (not written by the CLI)"
    if origin.get("checkpoint") is None:
        return f"{origin.get('model')} without a checkpoint (random initialisation), {line}"
    return f"{origin.get('model')} from {origin['checkpoint']} (sha256 {str(origin.get('sha256'))[:16]}), {line}"


def run_inspect(args: argparse.Namespace) -> int:
    """``uae-augment inspect``: provenance, coverage, ASR, MI and criterion summary of a cache."""
    from .data.cache import UAECache

    cache = UAECache(args.path, allow_partial=True, preload=False)
    summary = cache.summary(bins=args.bins)
    if args.json:
        print(json.dumps({"summary": summary, "provenance": cache.provenance}, indent=2, sort_keys=True))
    else:
        print(format_summary(summary, cache.provenance, histogram=True))
    return 0


def _number(value: float | None, digits: int = 4) -> str:
    return "n/a" if value is None else f"{value:.{digits}g}"


def _origin(origin: dict[str, Any] | None) -> str:
    """``mnist/train``, ``mnist/train (a subset)``, or ``unnamed`` when the provenance does not know it."""
    if not origin:
        return "unnamed"
    text = f"{origin.get('name')}/{origin.get('split') or '?'}"
    return f"{text} (a subset)" if origin.get("subset") else text


def _fingerprint(dataset: dict[str, Any]) -> str:
    """The rows hashed and the leading hex digits of each field's digest (older files: the one digest)."""
    digests = dataset.get("sha256", "")
    if not isinstance(digests, dict):
        return f"fingerprint {str(digests)[:16]} of {dataset.get('rows_hashed', '?')} rows"
    fields = ", ".join(f"{name} {digest[:12]}" for name, digest in digests.items())
    return f"sha256 of all {dataset.get('rows_hashed')} rows: {fields}"


def format_summary(summary: dict[str, Any], provenance: dict[str, Any], *, histogram: bool = False) -> str:
    """Human-readable report of :meth:`UAECache.summary` and the provenance record."""
    attack = dict(provenance.get("attack", {}))
    dataset = provenance.get("dataset", {})
    environment = provenance.get("environment", {})
    mi, criterion = summary["mi"], summary["criterion"]
    lines = [
        f"cache       {summary['path']}",
        f"coverage    {summary['done']} / {summary['rows']} rows done ({100 * summary['coverage']:.1f}%)",
        f"attack      {attack.pop('attack', '?')} {json.dumps(attack, sort_keys=True)}",
        f"dataset     {_origin(provenance.get('dataset_origin'))}, {dataset.get('length')} rows of shape"
        f" {tuple(dataset.get('sample_shape', ()))}, {_fingerprint(dataset)}",
        f"model       {_model_line(provenance)}",
        f"storage     {summary['dtype']}, compression {summary['compression']}, {summary['chunk_rows']}"
        f" rows per chunk, {summary['file_bytes'] / 2**20:.2f} MiB",
        f"versions    uae-augment {provenance.get('library_version')}, torch {provenance.get('torch_version')},"
        f" seed {provenance.get('seed')}",
        f"written     {environment.get('created', '?')} on {environment.get('host', '?')} (python"
        f" {environment.get('python', '?')}, h5py {environment.get('h5py', '?')}, HDF5 {environment.get('hdf5', '?')})",
        f"ASR         {_number(summary['asr'])}",
        f"MI          mean {_number(mi['mean'])}, std {_number(mi['std'])}, min {_number(mi['min'])},"
        f" median {_number(mi['median'])}, max {_number(mi['max'])} ({mi['count']} finite)",
        f"criterion   zero (success) fraction {_number(criterion['zero_fraction'])}, mean"
        f" {_number(criterion['mean'])}, median {_number(criterion['median'])}, max {_number(criterion['max'])}",
    ]
    counts = criterion["histogram_of_positive"]["counts"]
    edges = criterion["histogram_of_positive"]["edges"]
    if histogram and counts:
        lines.append("criterion > 0 histogram")
        widest = max(counts) or 1
        for low, high, count in zip(edges[:-1], edges[1:], counts):
            bar = "#" * round(30 * count / widest)
            lines.append(f"  [{low:10.4g}, {high:10.4g})  {count:7d}  {bar}")
    return "\n".join(lines)


def _demo_unavailable(error: ImportError) -> Any:
    def handler(args: argparse.Namespace) -> int:
        raise CLIError(f"the demo is not available in this installation ({error})")

    return handler


# --------------------------------------------------------------------------- parser


def _verbosity() -> argparse.ArgumentParser:
    """-v/--verbose accepted after the subcommand too (without resetting a global -v)."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=argparse.SUPPRESS,
        help="-v: info logs, -vv: debug logs",
    )
    return parent


def _add_precompute(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "precompute",
        help="attack every row of a data set into a resumable HDF5 cache",
        description=(
            "Attack every row of a named data set with a model from the registry and store the"
            " UAEs in a resumable HDF5 cache (see uae_augment.precompute). Rerunning the same"
            " command resumes an interrupted run or reuses a finished file. Under torchrun, each"
            " rank writes a shard and rank 0 joins them."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        parents=[_verbosity()],
    )
    parser.add_argument(
        "dataset",
        choices=DATASET_NAMES,
        metavar="DATASET",
        help=f"data set name: {', '.join(DATASET_NAMES)}",
    )
    parser.add_argument("--split", default="train", choices=("train", "test", "all"), help="data split")
    parser.add_argument(
        "--data-root",
        type=Path,
        default=None,
        help="folder with the canonical .npz files (default: $UAE_DATA_ROOT or datasets/)",
    )
    parser.add_argument(
        "--model",
        required=True,
        help="model name from the registry (uae_augment.models.available_models())",
    )
    parser.add_argument(
        "--model-arg",
        action="append",
        default=[],
        type=parse_assignment,
        metavar="KEY=VALUE",
        help="option of the model builder, e.g. hidden=64 (repeatable)",
    )
    parser.add_argument(
        "--checkpoint",
        type=Path,
        default=None,
        help="state dict saved with torch.save(model.state_dict(), path); loaded with weights_only=True",
    )
    parser.add_argument(
        "--attack",
        choices=ATTACKS,
        default="mine-uae",
        help="mine-uae, l2-uae and gaussian are unsupervised; minmax is the supervised MINE attack",
    )
    parser.add_argument(
        "--criterion",
        choices=CRITERIA,
        default="auto",
        help="attack criterion (auto: reconstruction for autoencoders, margin for classifiers,"
        " contrastive (NT-Xent over replayed views) for simclr-resnet18)",
    )
    parser.add_argument(
        "--preset",
        choices=PRESET_NAMES,
        default=None,
        help="attack preset (default: fast for mine-uae/l2-uae, paper for minmax; ignored by gaussian)",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        type=parse_assignment,
        metavar="KEY=VALUE",
        help="attack option override, JSON-ish value, e.g. steps=10, sigma=0.001 (repeatable)",
    )
    parser.add_argument("--seed", type=int, default=0, help="attack seed (and model init seed without --checkpoint)")
    parser.add_argument("--out", type=Path, required=True, help="cache file to write (.h5)")
    parser.add_argument(
        "--batch-size",
        type=_positive_int,
        default=PRECOMPUTE_BATCH_SIZE,
        help="rows per batch handed to the attack (default: %(default)s; the bar moves once per batch)",
    )
    parser.add_argument("--no-resume", action="store_true", help="overwrite an existing file instead of resuming it")
    parser.add_argument(
        "--limit",
        type=_positive_int,
        default=None,
        help="attack only the first N rows (rows are served in a fixed shuffled order, so a random sample)",
    )
    parser.add_argument(
        "--num-workers",
        type=_non_negative_int,
        default=0,
        help="DataLoader workers reading the data",
    )
    parser.add_argument(
        "--dtype",
        choices=("float32", "float16"),
        default="float32",
        help="storage dtype of the UAEs",
    )
    parser.add_argument(
        "--compression",
        choices=("lzf", "gzip", "none"),
        default="lzf",
        help="compression of the UAEs",
    )
    parser.add_argument(
        "--device",
        default="auto",
        help="auto (cuda when available), cpu, cuda, cuda:1, ...; under torchrun every rank uses cuda:LOCAL_RANK",
    )
    parser.add_argument(
        "--dist-timeout-min",
        type=float,
        default=24 * 60,
        help="torchrun: how long ranks wait for each other at the shard barrier",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.set_defaults(handler=run_precompute)


def _add_inspect(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "inspect",
        help="print the provenance, coverage, ASR, MI and criterion summary of a cache",
        description="Print what an HDF5 UAE cache holds: provenance, coverage (done/total rows),"
        " attack success rate, MI statistics and a histogram of the attack criterion.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        parents=[_verbosity()],
    )
    parser.add_argument("path", type=Path, help="cache file (.h5), finished, partial or a shard")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("--bins", type=_positive_int, default=10, help="histogram bins of the criterion")
    parser.set_defaults(handler=run_inspect)


def _add_demo(subparsers: Any, load: bool) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="a minutes-long CPU demo (see `uae-augment demo --help`)",
        description="Run the uae-augment demo (uae_augment.demo).",
        parents=[_verbosity()],
        conflict_handler="resolve",  # the demo's own options win over ours
    )
    if not load:
        return
    try:
        module = importlib.import_module("uae_augment.demo")
    except ImportError as error:
        parser.set_defaults(handler=_demo_unavailable(error))
        return
    module.add_arguments(parser)
    parser.set_defaults(handler=module.run)


def _command(argv: Sequence[str]) -> str | None:
    """The subcommand named in ``argv`` (the first token that is not a global option)."""
    for token in argv:
        if not token.startswith("-"):
            return token
    return None


def build_parser(argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    """The argument parser; the demo's options are loaded only when ``argv`` selects ``demo``."""
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="uae-augment",
        description="MINE-based unsupervised adversarial examples (UAEs) as data augmentation.",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="-v: info logs, -vv: debug logs")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_precompute(subparsers)
    _add_inspect(subparsers)
    _add_demo(subparsers, load=_command(argv) == "demo")
    return parser


def _configure_logging(verbosity: int) -> None:
    """Logs to stderr through tqdm, so that log lines and progress bars never interleave."""
    from ._progress import configure_logging

    level = logging.WARNING if verbosity <= 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    rank = os.environ.get("RANK") if int(os.environ.get("WORLD_SIZE", "1")) > 1 else None
    prefix = f"[rank {rank}] " if rank is not None else ""
    configure_logging(level, f"%(asctime)s {prefix}%(levelname)s %(name)s: %(message)s")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``uae-augment`` (and ``python -m uae_augment.cli``); returns the exit status."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(arguments)
    args = parser.parse_args(arguments)
    _configure_logging(args.verbose)
    from .data._distributed import RankFailedError

    try:
        return int(args.handler(args) or 0)
    except KeyboardInterrupt:
        print("uae-augment: interrupted", file=sys.stderr)
        return 130
    except (CLIError, RankFailedError, ValueError, TypeError, OSError) as error:
        if args.verbose >= 2:
            logger.exception("uae-augment %s failed", args.command)
        print(f"uae-augment {args.command}: error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
