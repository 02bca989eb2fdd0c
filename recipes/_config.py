"""The recipes' configuration: argparse flags, the YAML overlay, the saved resolved config and a run's start.

Configuration follows timm's ``train.py``: every option is an argparse flag; a
YAML file given with ``--config`` overlays the defaults; flags typed on the
command line override both; ``--quick`` selects a recipe's small preset first.
Precedence, lowest to highest::

    parser defaults < --quick preset < --config file.yaml < explicit flags

The resolved configuration is saved beside the outputs (``config.yaml``), so
every results file can be traced to the exact settings that made it.

The recipes import this module as a sibling (``import _config``): run as
``python recipes/<name>.py``, the script's folder is on ``sys.path``; the tests
get it from pytest's ``pythonpath`` setting (pyproject.toml). Only the public
API of ``uae_augment`` is used here and in the recipes.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import yaml

from uae_augment import configure_logging

CONFIG_FILE = "config.yaml"

QUICK_THREADS = 1
"""Torch threads of every ``--quick`` preset: on a CPU shared with other jobs several OpenMP
threads spin-wait (measured up to ~10x slower per training step with 2 threads at load 5)."""


def base_parser(
    description: str, *, examples: Sequence[str] = (), quick: Mapping[str, Any] | None = None
) -> argparse.ArgumentParser:
    """An argparse parser with the options every recipe shares.

    Shared options: ``--config``, ``--quick``, ``--out``, ``--seeds``, ``--device``,
    ``--data-root``, ``--no-progress``, ``--log-level``. The description is the first
    paragraph of ``description`` (a recipe passes its module docstring); the epilog lists
    the example command lines and the ``--quick`` preset.
    """
    epilog = "".join(
        [
            "examples:\n" if examples else "",
            *(f"  {line}\n" for line in examples),
            f"\nquick preset: {dict(quick)}" if quick is not None else "",
        ]
    )
    parser = argparse.ArgumentParser(
        description=description.strip().split("\n\n")[0],
        epilog=epilog or None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    group = parser.add_argument_group("run")
    group.add_argument(
        "--config",
        type=Path,
        default=None,
        help="YAML file of option values (keys as the long flags, '-' or '_'); flags override it",
    )
    group.add_argument(
        "--quick",
        action="store_true",
        help="the recipe's minutes-long CPU preset (flags and --config still override it)",
    )
    group.add_argument("--out", type=Path, default=None, help="output folder (default: outputs/<recipe>[-quick])")
    group.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=[0, 1, 2],
        help="seeds; mean and std over them (default: %(default)s)",
    )
    group.add_argument(
        "--device",
        default="auto",
        help="'auto' (cuda when available), 'cpu', 'cuda', 'cuda:1', ... (default: %(default)s)",
    )
    group.add_argument(
        "--data-root",
        type=Path,
        default=None,
        help="folder of the canonical .npz data files (default: $UAE_DATA_ROOT, else the library's default)",
    )
    group.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads (default: torch's choice; 1 is faster on a CPU shared with other jobs)",
    )
    group.add_argument("--no-progress", action="store_true", help="hide progress bars")
    group.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="(default: %(default)s)",
    )
    return parser


def add_mine_batch_arguments(attack: argparse._ArgumentGroup) -> None:
    """The MINE-UAE recipes' shared flags: projection length, attack and precompute batch sizes, probe rows."""
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
    return {key: plain(value) for key, value in sorted(vars(args).items())}


def plain(value: Any) -> Any:
    """``value`` as plain YAML/JSON data: paths as strings, tuples as lists, keys as strings."""
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
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
    parser: argparse.ArgumentParser,
    argv: Sequence[str] | None,
    quick: Mapping[str, Any],
    recipe: str,
    *,
    save: bool = True,
) -> tuple[argparse.Namespace, Path]:
    """A recipe's start: parsed settings (:func:`parse_config`), logging and threads applied, the output
    folder (``--out`` or :func:`default_out`) and, with ``save``, its ``config.yaml``."""
    args = parse_config(parser, argv, quick)
    setup_run(args)
    out = args.out or default_out(recipe, args.quick)
    if save:
        save_config(args, out, argv)
    return args, out


def default_out(recipe: str, quick: bool) -> Path:
    """``outputs/<recipe>`` or ``outputs/<recipe>-quick``."""
    return Path("outputs") / (f"{recipe}-quick" if quick else recipe)
