"""What ``uae-augment precompute`` attacks with: the model from the registry and its checkpoint, and the attack.

Part of the CLI (:mod:`uae_augment.cli`); like it, this module imports torch
only inside its functions, so ``uae-augment --help`` stays fast.
"""

from __future__ import annotations

import argparse
import inspect
import logging
import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from torch import nn

logger = logging.getLogger("uae_augment.cli")  # the command's logger: one name for all its messages


class CLIError(Exception):
    """A problem with the command line's inputs (reported without a traceback)."""


# --------------------------------------------------------------------------- model, data, attack


def load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Reads a state dict with ``torch.load(weights_only=True)`` (never unpickles objects).

    Accepts a mapping of names to tensors, or one nested under ``"state_dict"``
    or ``"model"``.

    Raises:
        CLIError: missing file, a file ``weights_only`` refuses (e.g. a pickled
            ``nn.Module``), or contents that are not a state dict.
    """
    import torch

    if not path.is_file():
        raise CLIError(f"checkpoint {path} does not exist")
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, AttributeError) as error:
        text = re.sub(r"\x1b\[[0-9;]*m", "", str(error)).strip()
        first_line = text.splitlines()[0].split(". ")[0] if text else type(error).__name__
        raise CLIError(
            f"checkpoint {path} is not a weights-only state dict: torch.load(weights_only=True)"
            f" refused it ({first_line}). Save only the weights: torch.save(model.state_dict(), path)"
        ) from error
    state = loaded
    if isinstance(loaded, Mapping):
        for key in ("state_dict", "model"):
            if isinstance(loaded.get(key), Mapping):
                state = loaded[key]
                break
    if (
        not isinstance(state, Mapping)
        or not state
        or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items())
    ):
        raise CLIError(
            f"checkpoint {path} holds {_describe(loaded)}, not a state dict (a mapping of parameter"
            " names to tensors). Save it with torch.save(model.state_dict(), path)"
        )
    return dict(state)


def _describe(value: object) -> str:
    if isinstance(value, Mapping):
        kinds = sorted({type(v).__name__ for v in value.values()})
        return f"a {type(value).__name__} with {len(value)} entries of type {', '.join(kinds) or '-'}"
    return f"a {type(value).__name__}"


def build_victim(args: argparse.Namespace, input_shape: tuple[int, ...], num_classes: int | None) -> nn.Module:
    """The model named by ``--model`` (with ``--model-arg``), its checkpoint loaded, in eval mode."""
    import torch

    from .models import MODELS, build_model

    kwargs = dict(args.model_arg)
    key = args.model.strip().lower().replace("_", "-")
    builder = MODELS.get(key)
    if (
        builder is not None
        and num_classes is not None
        and "classes" not in kwargs
        and "classes" in _parameters(builder)
    ):
        kwargs["classes"] = num_classes
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(args.seed)
        model = build_model(args.model, input_shape, **kwargs)
    if args.checkpoint is None:
        logger.warning("no --checkpoint: attacking a randomly initialised %s (seed %d)", args.model, args.seed)
    else:
        state = load_state_dict(args.checkpoint)
        try:
            model.load_state_dict(state)
        except RuntimeError as error:
            raise CLIError(
                f"checkpoint {args.checkpoint} does not match --model {args.model} for inputs"
                f" {input_shape}: {str(error).strip()}"
            ) from error
    return model.eval()


def _parameters(fn: Any) -> set[str]:
    try:
        return set(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return set()


def _is_autoencoder(model: nn.Module, sample: torch.Tensor) -> bool:
    import torch

    with torch.no_grad():
        output = model(sample[None])
    return tuple(output.shape) == (1, *sample.shape)


def build_attack(args: argparse.Namespace, model: nn.Module, sample: torch.Tensor) -> Any:
    """The attack named by ``--attack`` with ``--preset``, ``--seed`` and ``--set`` overrides."""
    from .attacks import MINEUAE, GaussianNoise, LpUAE, MinMaxAttack
    from .criteria import ClassifierMargin, Reconstruction

    overrides = dict(args.set)
    for reserved, flag in (("seed", "--seed"), ("preset", "--preset"), ("mode", "--attack")):
        if reserved in overrides:
            raise CLIError(f"use {flag} instead of --set {reserved}=...")
    criterion_kind = args.criterion
    contrastive_model = callable(getattr(model, "criterion", None))  # SimCLR builds its own criterion
    if criterion_kind == "auto" and contrastive_model and args.attack != "minmax":
        criterion_kind = "contrastive"
    if (criterion_kind == "contrastive") != contrastive_model:
        raise CLIError(
            f"--model {args.model} needs --criterion contrastive"
            if contrastive_model
            else f"--criterion contrastive needs a contrastive model (simclr-resnet18), not --model {args.model}"
        )
    if criterion_kind == "contrastive":
        criterion = model.criterion(seed=args.seed, n_views=4)  # 4 views: NT-Xent without a negative bank
    elif criterion_kind == "auto":
        if args.attack == "minmax":
            criterion_kind = "margin"
        elif args.attack in ("mine-uae", "l2-uae"):
            criterion_kind = "reconstruction"
        else:
            criterion_kind = "reconstruction" if _is_autoencoder(model, sample) else "margin"
    if criterion_kind == "reconstruction" and not _is_autoencoder(model, sample):
        raise CLIError(
            f"--attack {args.attack} with the reconstruction criterion needs an autoencoder"
            f" (output shaped like its input), but --model {args.model} is not one; use an"
            " autoencoder model, or --attack minmax / --criterion margin for a classifier"
        )
    if criterion_kind != "contrastive":
        criterion = Reconstruction(model) if criterion_kind == "reconstruction" else ClassifierMargin(model)
    if args.attack == "gaussian":
        if args.preset is not None:
            logger.warning("--preset is ignored by --attack gaussian (set sigma with --set sigma=...)")
        cls: Any = GaussianNoise
        kwargs: dict[str, Any] = {"seed": args.seed, **overrides}
    else:
        cls = {"mine-uae": MINEUAE, "l2-uae": LpUAE, "minmax": MinMaxAttack}[args.attack]
        kwargs = {
            "preset": args.preset,
            "seed": args.seed,
            **overrides,
        }  # None: the attack's default
        if args.attack == "minmax":
            kwargs["mode"] = "supervised"
    try:
        return cls(criterion, **kwargs)
    except TypeError as error:
        accepted = sorted(_accepted_options(cls) - {"criterion", "seed", "preset", "mode", "progress", "feature_layer"})
        raise CLIError(f"--set: {error}; --attack {args.attack} accepts: {', '.join(accepted)}") from error


LONG_JOB_S = 1800.0
"""Jobs estimated longer than this (one CPU core) are announced with a warning before they start."""


def warn_if_long(attack: Any, rows: int, sample_shape: tuple[int, ...]) -> float | None:
    """Logs a warning with the estimate when a MINE attack on ``rows`` samples may take over 30 min.

    Returns:
        The one-core estimate in seconds, or None for attacks without MINE steps.
    """
    from .attacks.minmax import CPU_SECONDS_PER_IMAGE, MinMaxAttack, estimate_cpu_seconds

    if not isinstance(attack, MinMaxAttack) or "mine_steps" not in attack.config():
        return None
    seconds = estimate_cpu_seconds(attack, rows, sample_shape)
    if seconds > LONG_JOB_S:
        shorter = "--limit"
        ratio = CPU_SECONDS_PER_IMAGE.get(attack.preset, 0.0) / CPU_SECONDS_PER_IMAGE["fast"]
        if ratio >= 2:  # the paper preset; strong costs about what fast does
            shorter += f" or --preset fast (about {ratio:.0f}x less by the same estimate)"
        logger.warning(
            "this job may take about %.1f hours on one CPU core (%d rows, preset %r, estimated from "
            "benchmarks/results); more threads or a GPU shorten it, %s too",
            seconds / 3600,
            rows,
            attack.preset,
            shorter,
        )
    return seconds


def _accepted_options(cls: type) -> set[str]:
    names = set()
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        parameters = inspect.signature(init).parameters
        names |= {n for n, p in parameters.items() if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}
        if not any(p.kind == p.VAR_KEYWORD for p in parameters.values()):
            break
    return names - {"self"}
