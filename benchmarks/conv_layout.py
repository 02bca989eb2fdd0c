"""The conv autoencoder's speed with channels-last and with contiguous (NCHW) convolution weights.

``ConvAutoencoder`` stores its convolution weights channels-last
(``uae_augment.models.base.channels_last_``). This measures what that buys in one
process: the two layouts of the same weights alternate ``--pairs`` times (each
first in every other pair), one torch thread. Measured: the attack's victim work
per iteration (forward and backward of the reconstruction error and of the first
layer's maps on ``--batch`` digits), a training step (Adadelta, binary
cross-entropy, the release's batch of 100), and a fast-preset ``MINEUAE`` attack
on ``--batch`` digits (``--iterations`` iterations, CPU seconds per image).
Medians per arm and their ratio; the largest difference between the two layouts'
outputs (they run different kernels, so the last bits differ). The same for the
conv classifiers (``cw_mnist``, ``LeNet``; ``--classifier-batch`` digits): the
input gradient of the cross-entropy (a gradient attack's step) and a training step.

Run ``python benchmarks/conv_layout.py --help``; it prints JSON and writes ``--out``.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import finish_machine_info, load_average, machine_info, write_json  # noqa: E402

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "conv_layout.json"
LAYOUTS = {"channels_last": torch.channels_last, "contiguous": torch.contiguous_format}


def _ms(work: Callable[[], Any], repeats: int) -> float:
    start = time.perf_counter()
    for _ in range(repeats):
        work()
    return (time.perf_counter() - start) / repeats * 1e3


def _order(pair: int) -> list[str]:
    """The arms of measurement pair ``pair``: each goes first in every other pair."""
    names = list(LAYOUTS)
    return names if pair % 2 == 0 else names[::-1]


def _summary(times: dict[str, dict[str, list[float]]]) -> dict[str, Any]:
    """The runs, each arm's medians and the contiguous arm's medians over the channels-last arm's."""
    medians = {name: {key: statistics.median(values) for key, values in runs.items()} for name, runs in times.items()}
    ratios = {
        key: round(medians["contiguous"][key] / medians["channels_last"][key], 3) for key in medians["contiguous"]
    }
    return {"runs": times, "medians": medians, "contiguous_over_channels_last": ratios}


def _victim_pass(model: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The attack's victim work of one iteration: the error's and the first layer's gradients at x."""
    delta = torch.zeros_like(x, requires_grad=True)
    x_adv = x + delta
    error = F.mse_loss(model(x_adv), x, reduction="sum")
    (grad,) = torch.autograd.grad(error + model.first_layer(x_adv).sum(), delta)
    return error.detach(), grad


def _train_step(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    target: torch.Tensor,
) -> None:
    optimizer.zero_grad()
    loss(model(x), target).backward()
    optimizer.step()


def measure(args: argparse.Namespace, digits: Any) -> dict[str, Any]:
    """The conv autoencoder: victim work of an attack iteration, a fast-preset attack, a training step."""
    from uae_augment import MINEUAE, Reconstruction
    from uae_augment.models import ConvAutoencoder

    x = torch.stack([digits[i][0] for i in range(max(args.batch, 100))])
    torch.manual_seed(0)
    base = ConvAutoencoder(in_channels=1, image_size=28)
    models = {name: copy.deepcopy(base).to(memory_format=layout) for name, layout in LAYOUTS.items()}
    optimizers = {name: model.configure_optimizers()[0] for name, model in models.items()}
    attacks = {
        name: MINEUAE(Reconstruction(model.eval()), preset="fast", steps=args.iterations, seed=0, progress=False)
        for name, model in models.items()
    }
    for name in LAYOUTS:  # warm-up: first touches, oneDNN's kernel choice
        _victim_pass(models[name], x[: args.batch])
        attacks[name](x[: args.batch])
    times: dict[str, dict[str, list[float]]] = {
        name: {"victim_ms": [], "attack_cpu_s_per_image": [], "train_step_ms": []} for name in LAYOUTS
    }
    for pair in range(args.pairs):
        for name in _order(pair):
            model = models[name].eval().requires_grad_(False)
            times[name]["victim_ms"].append(round(_ms(partial(_victim_pass, model, x[: args.batch]), 20), 3))
            start = time.process_time()
            attacks[name](x[: args.batch])
            times[name]["attack_cpu_s_per_image"].append(round((time.process_time() - start) / args.batch, 4))
    for name in LAYOUTS:  # training last: it changes the weights
        models[name].train().requires_grad_(True)
    for pair in range(args.pairs):
        for name in _order(pair):
            step = partial(_train_step, models[name], optimizers[name], F.binary_cross_entropy, x[:100], x[:100])
            times[name]["train_step_ms"].append(round(_ms(step, 3), 2))
    fresh = {name: copy.deepcopy(base).to(memory_format=layout).eval() for name, layout in LAYOUTS.items()}
    outputs = {name: _victim_pass(model, x[: args.batch]) for name, model in fresh.items()}
    return {
        **_summary(times),
        "max_abs_difference": {
            "reconstruction_error": float((outputs["channels_last"][0] - outputs["contiguous"][0]).abs()),
            "input_gradient": float((outputs["channels_last"][1] - outputs["contiguous"][1]).abs().max()),
        },
    }


def _input_gradient(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    delta = torch.zeros_like(x, requires_grad=True)
    return torch.autograd.grad(F.cross_entropy(model(x + delta), y), delta)[0]


def measure_classifiers(args: argparse.Namespace, digits: Any) -> dict[str, Any]:
    """Each conv classifier's input-gradient pass (a gradient attack's step) and training step, both layouts."""
    from uae_augment.models import LeNet, cw_mnist

    x = torch.stack([digits[i][0] for i in range(args.classifier_batch)])
    y = torch.tensor([int(digits[i][1]) for i in range(args.classifier_batch)])
    results: dict[str, Any] = {}
    for label, build in (("CWClassifier (cw_mnist)", cw_mnist), ("LeNet", LeNet)):
        torch.manual_seed(0)
        base = build()
        models = {name: copy.deepcopy(base).to(memory_format=layout) for name, layout in LAYOUTS.items()}
        optimizers = {name: model.configure_optimizers()[0] for name, model in models.items()}

        for name in LAYOUTS:
            _input_gradient(models[name].eval(), x, y)
        times: dict[str, dict[str, list[float]]] = {
            name: {"input_gradient_ms": [], "train_step_ms": []} for name in LAYOUTS
        }
        for pair in range(args.pairs):
            for name in _order(pair):
                model = models[name].eval()
                times[name]["input_gradient_ms"].append(round(_ms(partial(_input_gradient, model, x, y), 3), 2))
        for pair in range(args.pairs):
            for name in _order(pair):
                models[name].train()
                times[name]["train_step_ms"].append(
                    round(_ms(partial(_train_step, models[name], optimizers[name], F.cross_entropy, x, y), 2), 2)
                )
        results[label] = _summary(times)
    return results


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--batch", type=int, default=16, help="digits per victim pass and attack (default: %(default)s)")
    add("--iterations", type=int, default=10, help="attack iterations (default: %(default)s)")
    add("--pairs", type=int, default=16, help="alternating measurements per arm (default: %(default)s)")
    add("--classifier-batch", type=int, default=64, help="digits per classifier pass (default: %(default)s)")
    add("--out", default=str(DEFAULT_OUT), help="JSON output (default: %(default)s)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    wall_start = time.perf_counter()
    machine = machine_info(torch.device("cpu"))
    loads = [machine["load_average_at_start"][0]]
    import uae_augment

    torch.set_num_threads(1)
    digits = uae_augment.load_dataset("mnist-5k")
    figures = measure(args, digits)
    loads.append(load_average()[0])
    figures["classifiers"] = measure_classifiers(args, digits)
    loads.append(load_average()[0])
    finish_machine_info(machine, time.perf_counter() - wall_start, loads)
    result = {
        "benchmark": "conv_layout",
        "command": "python benchmarks/conv_layout.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "settings": {
            "batch": args.batch,
            "iterations": args.iterations,
            "pairs": args.pairs,
            "threads": 1,
            "classifier_batch": args.classifier_batch,
            "model": "ConvAutoencoder(1, 28), mnist-5k digits; classifiers: cw_mnist, LeNet",
        },
        "machine": machine,
        **figures,
    }
    write_json(result, args.out)
    return result


if __name__ == "__main__":
    main()
