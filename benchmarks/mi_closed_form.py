"""What the MI term measures: MINE against the exact MI of the random-projection sampler.

For the random-projection sampler, a pair (x, x') gives K paired samples whose raw
coordinates are bivariate normal with correlation cos(x, x'), so the exact MI of
one pair is -(p/2) log(1 - cos^2) (``projection_mi``); after the sampler's
per-sample standardisation it is ``standardised_projection_mi``. This script
measures, on pairs with a prescribed cosine:

* ``per_sample_mi`` (a fresh MINE, several K and step budgets);
* the attack's own estimate: ``MISimilarity`` trained as in an attack (40
  iterations x S MINE steps at the fast and paper settings) on a fixed pair;
* the feature-map sampler on MNIST pairs (identical, noisy, unrelated digits)
  with the first layer of a conv autoencoder trained for one epoch;
* the speed of ``mi="analytic"`` against MINE (same attack otherwise).

Usage: python benchmarks/mi_closed_form.py [--quick] [--out benchmarks/results/mi_closed_form.json]
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import machine_info, mnist_source, train_conv_autoencoder, write_json  # noqa: E402

from uae_augment import MINEUAE, Reconstruction, load_dataset  # noqa: E402
from uae_augment.attacks._minmax_loop import MISimilarity  # noqa: E402
from uae_augment.controls import with_cosine  # noqa: E402
from uae_augment.mine import (  # noqa: E402
    FeatureMapSampler,
    RandomProjectionSampler,
    per_sample_mi,
    projection_mi,
    standardised_projection_mi,
)

COSINES = (0.3, 0.6, 0.8, 0.9, 0.95, 0.99)


def _pairs(count: int, features: int = 784) -> tuple[torch.Tensor, torch.Tensor]:
    """Non-negative 'images' x (count, features) and x' with the prescribed cosines."""
    x = torch.rand(count, features, generator=torch.Generator().manual_seed(0))
    return x, with_cosine(x, torch.tensor(COSINES[:count]))


def closed_forms(dims: tuple[int, ...]) -> list[dict[str, Any]]:
    """projection_mi and the standardised exact MI per (p, cos)."""
    rows = []
    for dim in dims:
        for cos in COSINES:
            rows.append(
                {
                    "dim": dim,
                    "cos": cos,
                    "gaussian_closed_form": round(float(projection_mi(torch.tensor(cos, dtype=torch.float64), dim)), 4),
                    "standardised_exact": round(standardised_projection_mi(cos, dim), 4),
                }
            )
    return rows


def per_sample_grid(dims: tuple[int, ...], budgets: list[tuple[int, int]]) -> list[dict[str, Any]]:
    """per_sample_mi on the cosine grid for every p and (K, steps)."""
    x, other = _pairs(len(COSINES))
    rows = []
    for dim in dims:
        for projections, steps in budgets:
            start = time.perf_counter()
            values = per_sample_mi(x, other, steps=steps, projections=projections, projection_dim=dim)
            rows.append(
                {
                    "dim": dim,
                    "K": projections,
                    "steps": steps,
                    "log_K": round(math.log(projections), 3),
                    "cos": list(COSINES),
                    "per_sample_mi": [round(float(v), 4) for v in values],
                    "seconds": round(time.perf_counter() - start, 1),
                }
            )
    return rows


ATTACK_SETTINGS = {
    # (mine_lr, statistics_hidden, mine_steps) of the presets in random-projection mode, 40 iterations
    "fast": (5e-4, None, 5),
    "paper": (1.5e-5, 512, 20),
}


def attack_estimates(dims: tuple[int, ...], projections: int = 500, iterations: int = 40) -> list[dict[str, Any]]:
    """The attack's own MINE (``MISimilarity``) after ``iterations`` updates on a fixed pair."""
    x, other = _pairs(len(COSINES))
    rows = []
    for dim in dims:
        sampler = RandomProjectionSampler(x.shape[1], projections, dim, seed=0)
        for preset, (lr, hidden, steps) in ATTACK_SETTINGS.items():
            similarity = MISimilarity(
                sampler,
                x,
                torch.arange(x.shape[0]),
                seed=0,
                mine_steps=steps,
                mine_lr=lr,
                hidden=hidden,
            )
            start = time.perf_counter()
            for _ in range(iterations):
                similarity.update(other)
            with torch.no_grad():
                values = similarity.value(other)
            rows.append(
                {
                    "dim": dim,
                    "K": projections,
                    "preset_settings": preset,
                    "mine_steps_total": steps * iterations,
                    "cos": list(COSINES),
                    "attack_estimate": [round(float(v), 4) for v in values],
                    "seconds": round(time.perf_counter() - start, 1),
                }
            )
    return rows


def _map_correlation(maps: torch.Tensor, other: torch.Tensor) -> float:
    """Mean over the K channels of the Pearson correlation of corresponding maps."""
    a = maps.flatten(2) - maps.flatten(2).mean(-1, keepdim=True)
    b = other.flatten(2) - other.flatten(2).mean(-1, keepdim=True)
    correlation = (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1)).clamp_min(1e-12)
    return float(correlation.mean())


def feature_maps(images: torch.Tensor, labels: torch.Tensor, layer: torch.nn.Module, pairs: int) -> dict[str, Any]:
    """per_sample_mi with the feature-map sampler on identical, noisy and unrelated MNIST pairs."""
    generator = torch.Generator().manual_seed(0)
    x = images[:pairs]
    unrelated_index = torch.tensor([int(torch.nonzero(labels != labels[i])[i, 0]) for i in range(pairs)])
    kinds = {
        "identical": x,
        "noisy_0.1": (x + 0.1 * torch.randn(x.shape, generator=generator)).clamp(0, 1),
        "noisy_0.3": (x + 0.3 * torch.randn(x.shape, generator=generator)).clamp(0, 1),
        "unrelated_digit": images[unrelated_index],
    }
    sampler = FeatureMapSampler(layer)
    out: dict[str, Any] = {"pairs": pairs, "steps": 600, "K": None}
    with torch.no_grad():
        maps = sampler(x)
    out["K"] = int(maps.shape[1])
    for name, other in kinds.items():
        with torch.no_grad():
            other_maps = sampler(other)
        fm = per_sample_mi(x, other, sampler, steps=600)
        rp = per_sample_mi(x, other, steps=600)
        cos = torch.nn.functional.cosine_similarity(x.flatten(1), other.flatten(1), dim=1)
        out[name] = {
            "feature_map_mi_mean": round(float(fm.mean()), 3),
            "random_projection_mi_mean": round(float(rp.mean()), 3),
            "image_cos_mean": round(float(cos.mean()), 4),
            "first_layer_map_correlation_mean": round(_map_correlation(maps, other_maps), 4),
        }
    return out


def speed(images: torch.Tensor, model: torch.nn.Module, count: int, dim: int) -> dict[str, Any]:
    """s/image of MINEUAE (fast preset, random projections) with mi='mine' and mi='analytic'."""
    x = images[:count]
    result: dict[str, Any] = {
        "images": count,
        "preset": "fast",
        "projection_dim": dim,
        "projections": 500,
    }
    for mi in ("mine", "analytic"):
        attack = MINEUAE(
            Reconstruction(model),
            preset="fast",
            sampler="random_projection",
            projection_dim=dim,
            mi=mi,
        )
        start = time.perf_counter()
        out = attack(x)
        elapsed = time.perf_counter() - start
        cos = torch.nn.functional.cosine_similarity(x.flatten(1), out.adversarial.flatten(1), dim=1)
        result[mi] = {
            "s_per_image": round(elapsed / count, 4),
            "success_rate": round(float(out.success.float().mean()), 3),
            "mean_cos_to_x_of_successes": round(float(cos[out.success].mean()), 4) if out.success.any() else None,
            "moved_linf_mean": round(float(out.moved_linf.mean()), 4),
        }
    result["speedup"] = round(result["mine"]["s_per_image"] / result["analytic"]["s_per_image"], 1)
    return result


def plot(result: dict[str, Any], path: str) -> None:
    """Estimates against the closed forms over cos, one panel per p."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dims = sorted({row["dim"] for row in result["closed_forms"]})
    figure, axes = plt.subplots(1, len(dims), figsize=(5 * len(dims), 4), squeeze=False)
    for axis, dim in zip(axes[0], dims):
        forms = [r for r in result["closed_forms"] if r["dim"] == dim]
        axis.plot(COSINES, [r["gaussian_closed_form"] for r in forms], "k-", label="-(p/2) log(1-cos²)")
        axis.plot(COSINES, [r["standardised_exact"] for r in forms], "k--", label="exact, standardised")
        for row in result["per_sample_mi"]:
            if row["dim"] == dim:
                axis.plot(
                    COSINES,
                    row["per_sample_mi"],
                    "o-",
                    label=f"per_sample_mi K={row['K']}, {row['steps']} steps",
                )
        for row in result["attack_estimates"]:
            if row["dim"] == dim:
                axis.plot(
                    COSINES,
                    row["attack_estimate"],
                    "s:",
                    label=f"attack MINE ({row['preset_settings']})",
                )
        axis.set_yscale("log")
        axis.set_xlabel("cos(x, x')")
        axis.set_ylabel("MI (nats)")
        axis.set_title(f"p = {dim}")
        axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small budgets (a smoke run)")
    parser.add_argument("--out", default="benchmarks/results/mi_closed_form.json")
    parser.add_argument("--plot", default="benchmarks/results/mi_closed_form.png")
    args = parser.parse_args()
    torch.set_num_threads(1)
    start = time.perf_counter()
    info = machine_info(torch.device("cpu"))
    dims = (8,) if args.quick else (8, 32)
    budgets = [(200, 100)] if args.quick else [(200, 300), (2000, 300), (2000, 800)]
    result: dict[str, Any] = {"machine": info, "cosines": list(COSINES)}
    result["closed_forms"] = closed_forms(dims)
    result["per_sample_mi"] = per_sample_grid(dims, budgets)
    result["attack_estimates"] = attack_estimates(dims, iterations=4 if args.quick else 40)
    dataset, root = mnist_source("auto", None)
    data = load_dataset(dataset, root=root, split="train")
    images, labels = data.data, data.targets
    model, training = train_conv_autoencoder(images[:2000], epochs=1, seed=0, device=torch.device("cpu"))
    result["victim"] = {"dataset": dataset, **training}
    result["feature_maps"] = feature_maps(images, labels, model.first_layer, 4 if args.quick else 16)
    result["speed"] = speed(images, model, 8 if args.quick else 32, 32)
    info["wall_s"] = round(time.perf_counter() - start, 1)
    write_json(result, args.out)
    plot(result, args.plot)


if __name__ == "__main__":
    main()
