"""Attack speed of MINE-UAE: the per-sample reference loop vs the batched engine vs the presets.

The paper configuration (docs/method.md sections 1, 2 and 7): a 28x28 ConvAutoencoder
trained briefly on MNIST-5k, feature-map MINE with K = 16 maps of 28x28, the
release statistics network (two 11664 -> 512 -> 10 branches, ~12M parameters
per sample), 40 attack iterations x 20 MINE Adam steps. Measured, in one run:

* ``reference``: the plain per-sample loop of ``tests/reference.py`` (one
  ``nn.Module`` statistics network per sample, autograd, default Adam);
* ``paper_B{n}``: the batched engine (``MINEUAE(preset="paper")``) at B = n;
* ``fast`` and ``strong``: the cheaper presets at their own batch size;
* ``fast_B{n}_T{t}`` (``--fast-batch-sizes``, ``--fast-threads``): the fast preset at
  B = n with t threads, and ``fast_precompute_B{n}_T{t}`` (``--precompute-batch``):
  ``uae_augment.precompute`` of the same rows into an HDF5 cache, n rows per attack
  call; each row has user and kernel (sys) CPU seconds per image and the kernel's
  share of CPU time (``sys_fraction_of_cpu``), and with ``--baseline-ref`` the same
  row of an earlier version (git worktree) with the speed-up over it.

Each configuration runs in its own subprocess (so its peak resident memory is
its own) with one warm-up on the same images (so the one-off first touch of the
per-sample state's memory is not timed), then two timed runs: T = 1 (set-up plus one
evaluation) and T = 1 + m (m full iterations). The slope gives seconds per
iteration per image; the extrapolation to T iterations is
``t(1) + (T - 1) * slope`` per image. A roofline (measured copy bandwidth and
matmul peak against a stated byte/FLOP model of a MINE step) says how far each
configuration is from what the machine allows.

Run ``python benchmarks/attack_speed.py --help``; it prints JSON and writes ``--out``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    CpuShare,
    finish_machine_info,
    load_average,
    machine_info,
    resolve_device,
    synchronize,
    train_conv_autoencoder,
    training_images,
    write_json,
)

from uae_augment import MINEUAE, PRESETS, Reconstruction  # noqa: E402

FLOAT_BYTES = 4
EMBED = 10
BRANCH_CONV_CHANNELS = 16
BRANCH_CONV_KERNEL = 2
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "attack_speed.json"


# --------------------------------------------------------------------------- roofline


def _best_time(fn, device: torch.device, repeats: int) -> float:
    fn()
    synchronize(device)
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        synchronize(device)
        best = min(best, time.perf_counter() - start)
    return best


def measure_peaks(device: torch.device, copy_mb: int, matmul_size: int, repeats: int = 5) -> dict[str, float]:
    """Copy bandwidth (GB/s, read + write counted) and float32 matmul throughput (GFLOP/s)."""
    source = torch.rand(copy_mb * 2**20 // FLOAT_BYTES, device=device)
    target = torch.empty_like(source)
    copy_s = _best_time(lambda: target.copy_(source), device, repeats)
    a = torch.rand(matmul_size, matmul_size, device=device)
    b = torch.rand(matmul_size, matmul_size, device=device)
    if device.type == "cuda":  # measure plain float32, not TF32
        torch.backends.cuda.matmul.allow_tf32 = False
    matmul_s = _best_time(lambda: a @ b, device, repeats)
    return {
        "copy_GBps": round(2 * copy_mb * 2**20 / copy_s / 1e9, 2),
        "copy_tensor_MB": copy_mb,
        "matmul_GFLOPps": round(2 * matmul_size**3 / matmul_s / 1e9, 1),
        "matmul_size": matmul_size,
    }


COST_MODEL = (
    "Per sample and MINE step (float32, P = statistics-network parameters, K paired samples, "
    "each branch's 2x2 convolution folded into its first linear layer of width h: taps "
    "T = 5 (four filter taps and the bias) over H'W' positions, C = 16 channels): per branch the "
    "folded weight A = W0 x filters (2*h*C*T*H'W' FLOPs), the layer's output (2*K*h*T*H'W'), "
    "the folded weight's gradient G (2*K*h*T*H'W'), W0's gradient from G (2*h*C*T*H'W') and the "
    "filters' gradient (2*h*C*T*H'W'), plus 3 x (2*K*in*out) per later linear layer (forward, "
    "weight gradient, input gradient). Bytes = 4*(10*P + 2*(2*K*T*H'W' + 5*h*T*H'W')): W0 read "
    "twice (fold, filters' gradient), its gradient written, fused Adam reads param/grad/m/v and "
    "writes param/m/v (7P); the taps read twice, A written and read, G written and read twice. "
    "Per attack iteration: S MINE steps plus the delta step's MI forward (both branches) and "
    "backward to v (v branch, no weight gradients): bytes 4*(1.5*P + 2*(3*h*T*H'W' + "
    "2*K*T*H'W')). FLOP counts agree with torch.utils.flop_counter. The victim autoencoder "
    "(~4 MFLOP per image) and the per-step head are ignored. Lower bound per iteration = "
    "max(bytes / copy bandwidth, FLOPs / matmul peak)."
)


def iteration_cost(count: int, map_shape: tuple[int, int], hidden: int | None, mine_steps: int) -> dict[str, float]:
    """Bytes streamed and FLOPs of one attack iteration for one sample (see COST_MODEL)."""
    out_h, out_w = map_shape[0] - BRANCH_CONV_KERNEL + 1, map_shape[1] - BRANCH_CONV_KERNEL + 1
    positions = out_h * out_w
    features = BRANCH_CONV_CHANNELS * positions
    widths = [features, EMBED] if hidden is None else [features, hidden, EMBED]
    linear_params = sum(i * o + o for i, o in zip(widths[:-1], widths[1:]))
    conv_params = BRANCH_CONV_CHANNELS * (BRANCH_CONV_KERNEL**2 + 1)
    params = 2 * (linear_params + conv_params) + EMBED
    taps = (BRANCH_CONV_KERNEL**2 + 1) * positions
    first = widths[1]
    fold_flops = 2 * first * BRANCH_CONV_CHANNELS * taps
    first_flops = 2 * count * first * taps
    later_flops = sum(2 * count * i * o for i, o in zip(widths[1:-1], widths[2:]))
    step_flops = 2 * (3 * fold_flops + 2 * first_flops + 3 * later_flops)
    step_bytes = FLOAT_BYTES * (10 * params + 2 * (2 * count * taps + 5 * first * taps))
    delta_flops = 2 * (fold_flops + first_flops + later_flops) + first_flops + later_flops
    delta_bytes = FLOAT_BYTES * (1.5 * params + 2 * (3 * first * taps + 2 * count * taps))
    return {
        "params_per_sample": params,
        "mine_step_bytes": step_bytes,
        "mine_step_flops": step_flops,
        "bytes": mine_steps * step_bytes + delta_bytes,
        "flops": mine_steps * step_flops + delta_flops,
    }


def roofline(
    cost: dict[str, float], peaks: dict[str, float], s_per_iteration: float, iterations: int
) -> dict[str, Any]:
    """Achieved throughput of a configuration and its lower bound per image."""
    memory_s = cost["bytes"] / (peaks["copy_GBps"] * 1e9)
    compute_s = cost["flops"] / (peaks["matmul_GFLOPps"] * 1e9)
    bound_s = max(memory_s, compute_s)
    return {
        "bytes_per_iteration_MB": round(cost["bytes"] / 1e6, 2),
        "GFLOP_per_iteration": round(cost["flops"] / 1e9, 4),
        "arithmetic_intensity_flop_per_byte": round(cost["flops"] / cost["bytes"], 3),
        "achieved_GBps": round(cost["bytes"] / s_per_iteration / 1e9, 2),
        "achieved_GFLOPps": round(cost["flops"] / s_per_iteration / 1e9, 2),
        "bound": "memory" if memory_s >= compute_s else "compute",
        "lower_bound_s_per_iteration": round(bound_s, 5),
        "lower_bound_s_per_image": round((iterations - 1) * bound_s, 3),
        "fraction_of_roofline": round(bound_s / s_per_iteration, 3),
    }


# --------------------------------------------------------------------------- one configuration (subprocess)


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _user_sys_s() -> tuple[float, float]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime, usage.ru_stime


def run_configuration(spec: dict[str, Any]) -> dict[str, Any]:
    """Times one configuration; runs inside its own process (``--worker``)."""
    from uae_augment.models import ConvAutoencoder

    torch.set_num_threads(spec["threads"])
    device = torch.device(spec["device"])
    images = torch.load(spec["images"])
    model = ConvAutoencoder(in_channels=images.shape[1], image_size=images.shape[-1])
    model.load_state_dict(torch.load(spec["state"]))
    model.eval().requires_grad_(False).to(device)
    criterion = Reconstruction(model)
    x = images[: spec["images_timed"]].to(device)
    seed = spec["seed"]

    if spec["kind"] == "reference":
        from tests.reference import reference_minmax

        sampler = MINEUAE(criterion, seed=seed).sampler_for(tuple(x.shape[1:]))

        def attack(steps: int, n: int) -> None:
            for row in range(n):
                reference_minmax(
                    x[row],
                    criterion,
                    sampler,
                    supervised=False,
                    index=row,
                    seed=seed,
                    steps=steps,
                    mine_steps=spec["mine_steps"],
                    hidden=spec["statistics_hidden"],
                )
    elif spec["kind"] == "precompute":
        from torch.utils.data import TensorDataset

        from uae_augment import precompute

        def attack(steps: int, n: int) -> None:
            rows = TensorDataset(x[:n].cpu(), torch.zeros(n, dtype=torch.long))
            engine = MINEUAE(
                criterion,
                preset=spec["preset"],
                steps=steps,
                mine_steps=spec["mine_steps"],
                seed=seed,
            )
            with tempfile.TemporaryDirectory(prefix="attack_speed_cache_") as cache_dir:
                precompute(
                    rows,
                    engine,
                    Path(cache_dir) / "cache.h5",
                    batch_size=spec["batch_size"],
                    progress=False,
                )
    else:

        def attack(steps: int, n: int) -> None:
            MINEUAE(
                criterion,
                preset=spec["preset"],
                steps=steps,
                mine_steps=spec["mine_steps"],
                batch_size=spec["batch_size"],
                seed=seed,
            )(x[:n])

    def timed(steps: int, n: int) -> float:
        synchronize(device)
        start = time.perf_counter()
        attack(steps, n)
        synchronize(device)
        return time.perf_counter() - start

    # warm-up on the same rows: library initialisation, thread pools, kernel selection and the
    # first touch of the per-sample state's memory, which a process pays once (measured: 0.056 CPU s
    # of kernel time for 16 rows, then none in the timed runs)
    timed(2, x.shape[0])
    baseline_mb = _rss_mb()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    n = x.shape[0]
    share = CpuShare()
    cpu_before = _cpu_s()
    user_before, sys_before = _user_sys_s()
    share.start()
    setup_s = timed(1, n)
    full_s = timed(1 + spec["iterations"], n)
    contention = share.stop(_cpu_s() - cpu_before)
    user_after, sys_after = _user_sys_s()
    result = {
        "setup_s": setup_s,
        "timed_s": full_s,
        "user_s": user_after - user_before,
        "sys_s": sys_after - sys_before,
        "baseline_rss_MB": round(baseline_mb, 1),
        "peak_rss_MB": round(_rss_mb(), 1),
        "cpu_share": contention,
    }
    if device.type == "cuda":
        result["peak_cuda_MB"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    # after the memory reading: the peaks' buffers must not raise the high-water mark
    result["peaks"] = measure_peaks(device, spec["copy_mb"], spec["matmul_size"])
    return result


def _available_memory_mb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def launch(spec: dict[str, Any], workdir: Path, library: Path | None = None) -> dict[str, Any]:
    """Runs one configuration in a fresh Python process and returns its measurements.

    ``library``: a source tree whose ``uae_augment`` the process imports instead of this one's.
    """
    spec_path = workdir / f"{spec['name']}.json"
    spec_path.write_text(json.dumps(spec))
    env = dict(os.environ)
    if library is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(library), env.get("PYTHONPATH", "")])
    completed = subprocess.run(
        [sys.executable, __file__, "--worker", str(spec_path)],
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"configuration {spec['name']} failed:\n{completed.stderr[-4000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- the benchmark


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Seconds per image of MINE-UAE: per-sample reference loop vs batched engine vs presets.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--device", default="cpu", help="cpu or cuda (the reference loop always runs on CPU)")
    parser.add_argument("--iterations", type=int, default=3, help="attack iterations timed (m)")
    parser.add_argument("--extrapolate-to", type=int, default=40, help="full attack length T")
    parser.add_argument("--mine-steps", type=int, default=None, help="override every preset's MINE steps")
    parser.add_argument("--batch-sizes", default="1,8,32,64", help="batch sizes of the paper preset")
    parser.add_argument("--presets", default="fast,strong", help="further presets to time")
    parser.add_argument("--preset-images", type=int, default=64, help="images for the further presets")
    parser.add_argument("--fast-batch-sizes", default="", help="fast preset batch sizes timed with user/sys CPU s")
    parser.add_argument("--fast-threads", default="", help="extra thread counts for the fast preset at B = 64")
    parser.add_argument("--fast-images", type=int, default=64, help="images per fast-preset batch-size row")
    parser.add_argument(
        "--precompute-batch",
        type=int,
        default=0,
        help="also time uae_augment.precompute (fast preset, --fast-images rows, this many rows per attack call; 0: no)",
    )
    parser.add_argument(
        "--baseline-ref",
        default="",
        help="git ref of an earlier version: every fast_* row also runs on it (git worktree) in the same run",
    )
    parser.add_argument(
        "--pairs",
        type=int,
        default=1,
        help="with --baseline-ref: alternating (this version, baseline) process pairs per fast_* row; "
        "the rows report the median-CPU run of each side and every pair's speed-up",
    )
    parser.add_argument("--reference-images", type=int, default=2, help="images for the reference loop")
    parser.add_argument("--no-reference", action="store_true", help="skip the reference loop")
    parser.add_argument("--train-rows", type=int, default=4000, help="MNIST-5k training rows for the victim")
    parser.add_argument("--epochs", type=int, default=1, help="victim training epochs")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch threads")
    parser.add_argument("--copy-mb", type=int, default=256, help="tensor size of the bandwidth test")
    parser.add_argument("--matmul-size", type=int, default=2048, help="square matmul size of the peak test")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="where to write the JSON ('' for stdout only)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.iterations < 1 or args.extrapolate_to < 2:
        parser.error("--iterations must be >= 1 and --extrapolate-to >= 2")
    if args.pairs < 1:
        parser.error("--pairs must be >= 1")
    return args


def _specs(args: argparse.Namespace, paths: dict[str, str], device: torch.device) -> list[dict[str, Any]]:
    common = {
        **paths,
        "iterations": args.iterations,
        "threads": args.threads,
        "seed": args.seed,
        "copy_mb": args.copy_mb,
        "matmul_size": args.matmul_size,
    }
    paper = PRESETS["paper"]
    paper_steps = args.mine_steps if args.mine_steps is not None else paper["mine_steps"]["unsupervised"]
    specs = []
    if not args.no_reference:
        specs.append(
            {
                **common,
                "name": "reference",
                "kind": "reference",
                "preset": "paper",
                "device": "cpu",
                "batch_size": 1,
                "images_timed": args.reference_images,
                "mine_steps": paper_steps,
                "statistics_hidden": paper["statistics_hidden"],
            }
        )
    for batch in [int(b) for b in args.batch_sizes.split(",") if b]:
        specs.append(
            {
                **common,
                "name": f"paper_B{batch}",
                "kind": "engine",
                "preset": "paper",
                "device": str(device),
                "batch_size": batch,
                "images_timed": batch,
                "mine_steps": paper_steps,
                "statistics_hidden": paper["statistics_hidden"],
            }
        )
    fast = PRESETS["fast"]
    fast_steps = args.mine_steps if args.mine_steps is not None else fast["mine_steps"]["unsupervised"]
    fast_rows = [(int(b), args.threads) for b in args.fast_batch_sizes.split(",") if b]
    fast_rows += [(64, int(t)) for t in args.fast_threads.split(",") if t and int(t) != args.threads]
    for batch, threads in fast_rows:
        specs.append(
            {
                **common,
                "name": f"fast_B{batch}_T{threads}",
                "kind": "engine",
                "preset": "fast",
                "device": str(device),
                "batch_size": batch,
                "images_timed": max(batch, args.fast_images),
                "mine_steps": fast_steps,
                "statistics_hidden": fast["statistics_hidden"],
                "threads": threads,
            }
        )
    if args.precompute_batch:
        specs.append(
            {
                **common,
                "name": f"fast_precompute_B{args.precompute_batch}_T{args.threads}",
                "kind": "precompute",
                "preset": "fast",
                "device": str(device),
                "batch_size": args.precompute_batch,
                "images_timed": max(args.precompute_batch, args.fast_images),
                "mine_steps": fast_steps,
                "statistics_hidden": fast["statistics_hidden"],
            }
        )
    for preset in [p for p in args.presets.split(",") if p]:
        values = PRESETS[preset]
        steps = args.mine_steps if args.mine_steps is not None else values["mine_steps"]["unsupervised"]
        specs.append(
            {
                **common,
                "name": preset,
                "kind": "engine",
                "preset": preset,
                "device": str(device),
                "batch_size": values["batch_size"],
                "images_timed": args.preset_images,
                "mine_steps": steps,
                "statistics_hidden": values["statistics_hidden"],
            }
        )
    return specs


def _summarise(spec: dict[str, Any], raw: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    n = spec["images_timed"]
    slope = (raw["timed_s"] - raw["setup_s"]) / args.iterations / n
    setup = raw["setup_s"] / n
    return {
        "name": spec["name"],
        "kind": spec["kind"],
        "preset": spec["preset"],
        "device": spec["device"],
        "batch_size": min(spec["batch_size"], n),
        "images": n,
        "mine_steps": spec["mine_steps"],
        "statistics_hidden": spec["statistics_hidden"],
        "setup_and_one_evaluation_s_per_image": round(setup, 4),
        "s_per_iteration_per_image": round(slope, 5),
        "s_per_image_measured": round(raw["timed_s"] / n, 4),
        "s_per_image_extrapolated": round(setup + (args.extrapolate_to - 1) * slope, 3),
        "peak_rss_MB": raw["peak_rss_MB"],
        "rss_growth_MB": round(raw["peak_rss_MB"] - raw["baseline_rss_MB"], 1),
        **({"peak_cuda_MB": raw["peak_cuda_MB"]} if "peak_cuda_MB" in raw else {}),
        "load_1min_before": spec["load_before"],
        "cpu_share": raw["cpu_share"],
        "threads": spec["threads"],
        "user_s_per_image": round(raw["user_s"] / n, 4),
        "sys_s_per_image": round(raw["sys_s"] / n, 4),
        "sys_fraction_of_cpu": round(raw["sys_s"] / max(raw["user_s"] + raw["sys_s"], 1e-9), 4),
    }


def _baseline_tree(ref: str, workdir: Path) -> Path:
    """A detached git worktree of ``ref`` under ``workdir`` (the earlier version to time)."""
    root = Path(__file__).resolve().parent.parent
    tree = workdir / "baseline"
    commit = subprocess.run(["git", "-C", str(root), "rev-parse", ref], capture_output=True, text=True, check=True)
    subprocess.run(
        ["git", "-C", str(root), "worktree", "add", "--detach", str(tree), commit.stdout.strip()],
        capture_output=True,
        check=True,
    )
    return tree


def _baseline_row(
    spec: dict[str, Any], row: dict[str, Any], raw: dict[str, Any], args: argparse.Namespace
) -> dict[str, Any]:
    """The baseline's measurements of ``spec`` and this version's speed-up over it (CPU s and wall)."""
    base = _summarise({**spec, "name": spec["name"] + "_baseline"}, raw, args)
    base["kind"] = "baseline"
    cpu_now = row["user_s_per_image"] + row["sys_s_per_image"]
    cpu_before = base["user_s_per_image"] + base["sys_s_per_image"]
    base["speedup_cpu_s"] = round(cpu_before / cpu_now, 2)
    base["speedup_wall_s"] = round(base["s_per_image_measured"] / row["s_per_image_measured"], 2)
    return base


def _cpu_of(raw: dict[str, Any]) -> float:
    return raw["user_s"] + raw["sys_s"]


def _median_run(raws: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median CPU seconds (the lower middle one for an even count)."""
    return sorted(raws, key=_cpu_of)[(len(raws) - 1) // 2]


def _pair_speedup(spec: dict[str, Any], now: dict[str, Any], before: dict[str, Any]) -> dict[str, float]:
    """One alternating pair: CPU s per image of each side and the speed-ups (CPU s, wall)."""
    n = spec["images_timed"]
    return {
        "cpu_s_per_image": round(_cpu_of(now) / n, 4),
        "baseline_cpu_s_per_image": round(_cpu_of(before) / n, 4),
        "speedup_cpu_s": round(_cpu_of(before) / _cpu_of(now), 2),
        "speedup_wall_s": round(before["timed_s"] / now["timed_s"], 2),
    }


def _skip_for_memory(spec: dict[str, Any], cost: dict[str, float]) -> str | None:
    if spec["device"] != "cpu":
        return None
    needed_mb = (
        1.3 * 4 * FLOAT_BYTES * cost["params_per_sample"] * min(spec["batch_size"], spec["images_timed"]) / 2**20
    )
    available = _available_memory_mb()
    if available is not None and needed_mb > 0.85 * available:
        return f"skipped: needs about {needed_mb:.0f} MB (params, grads, 2 Adam moments), {available:.0f} MB available"
    return None


def _goals(rows: list[dict[str, Any]]) -> dict[str, Any]:
    by_name = {row["name"]: row for row in rows if "s_per_image_extrapolated" in row}
    goals: dict[str, Any] = {}
    if "reference" not in by_name:
        return goals
    paper = [row for row in by_name.values() if row["kind"] == "engine" and row["preset"] == "paper"]
    if paper:
        best = max(paper, key=lambda row: row["speedup_vs_reference"])
        goals["paper_batched_at_least_2x_reference"] = {
            "best_configuration": best["name"],
            "speedup": best["speedup_vs_reference"],
            "met": best["speedup_vs_reference"] >= 2.0,
        }
    if "fast" in by_name:
        speedup = by_name["fast"]["speedup_vs_reference"]
        goals["fast_at_least_30x_reference"] = {"speedup": speedup, "met": speedup >= 30.0}
    return goals


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.worker:
        print(json.dumps(run_configuration(json.loads(Path(args.worker).read_text()))))
        return {}
    wall_start = time.perf_counter()
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    machine = machine_info(device)
    peaks = measure_peaks(device, args.copy_mb, args.matmul_size)
    images = training_images("mnist-5k", None)[: args.train_rows]
    model, training = train_conv_autoencoder(images, epochs=args.epochs, seed=args.seed, device=torch.device("cpu"))
    training["dataset"] = "mnist-5k"
    needed = max(
        [
            args.preset_images,
            args.reference_images,
            *[int(b) for b in args.batch_sizes.split(",") if b],
        ]
    )
    if needed > images.shape[0]:
        raise SystemExit(f"needs {needed} images but --train-rows gives {images.shape[0]}")
    sample = MINEUAE(Reconstruction(model)).sampler_for(tuple(images.shape[1:]))(images[:1])
    count, map_shape = sample.shape[1], (sample.shape[2], sample.shape[3])

    rows: list[dict[str, Any]] = []
    loads = [machine["load_average_at_start"][0]]
    with tempfile.TemporaryDirectory(prefix="attack_speed_") as tmp:
        workdir = Path(tmp)
        baseline = _baseline_tree(args.baseline_ref, workdir) if args.baseline_ref else None
        paths = {"state": str(workdir / "model.pt"), "images": str(workdir / "images.pt")}
        torch.save(model.state_dict(), paths["state"])
        torch.save(images[:needed].clone(), paths["images"])
        for spec in _specs(args, paths, device):
            cost = iteration_cost(count, map_shape, spec["statistics_hidden"], spec["mine_steps"])
            skipped = _skip_for_memory(spec, cost)
            if skipped:
                rows.append({"name": spec["name"], "skipped": skipped})
                continue
            spec["load_before"] = load_average()[0]
            loads.append(spec["load_before"])
            paired = baseline is not None and spec["name"].startswith("fast_")
            raws, base_raws = [launch(spec, workdir)], []
            for pair in range(args.pairs if paired else 0):
                if pair > 0:
                    raws.append(launch(spec, workdir))
                base_raws.append(launch(spec, workdir, baseline))
            raw = _median_run(raws)
            row = _summarise(spec, raw, args)
            row["roofline"] = {
                "peaks_in_this_process": raw["peaks"],
                **roofline(cost, raw["peaks"], row["s_per_iteration_per_image"], args.extrapolate_to),
            }
            rows.append(row)
            print(
                f"# {row['name']}: {row['s_per_image_extrapolated']} s/image (extrapolated)",
                file=sys.stderr,
            )
            if paired:
                base = _baseline_row(spec, row, _median_run(base_raws), args)
                base["pairs"] = [_pair_speedup(spec, now, before) for now, before in zip(raws, base_raws)]
                rows.append(base)
        if baseline is not None:
            root = Path(__file__).resolve().parent.parent
            subprocess.run(
                ["git", "-C", str(root), "worktree", "remove", "--force", str(baseline)],
                check=False,
            )

    reference = next((row for row in rows if row["name"] == "reference" and "skipped" not in row), None)
    for row in rows:
        if reference is not None and "s_per_image_extrapolated" in row:
            row["speedup_vs_reference"] = round(
                reference["s_per_image_extrapolated"] / row["s_per_image_extrapolated"], 2
            )
            row["speedup_per_iteration_vs_reference"] = round(
                reference["s_per_iteration_per_image"] / row["s_per_iteration_per_image"], 2
            )
    finish_machine_info(machine, time.perf_counter() - wall_start, loads)
    result = {
        "benchmark": "attack_speed",
        "command": " ".join(
            [
                Path(sys.executable).name,
                "benchmarks/attack_speed.py",
                *(argv if argv is not None else sys.argv[1:]),
            ]
        ),
        "settings": {
            "measured_iterations": args.iterations,
            "extrapolated_to": args.extrapolate_to,
            "extrapolation": "s/image = t(T=1)/n + (extrapolated_to - 1) * (t(T=1+m) - t(T=1)) / (m * n)",
            "warm_up": "one run with T=2 on the same images per configuration, not timed (first touch of memory)",
            "feature_maps": {"K": count, "map": list(map_shape)},
            "attack": f"MINEUAE unsupervised, Reconstruction criterion, glorot delta_0, seed {args.seed}",
            "threads": args.threads,
            "memory": "peak_rss_MB = ru_maxrss of the configuration's own process; rss_growth_MB above its level after warm-up",
        },
        "machine": machine,
        "victim": training,
        "roofline": {
            "peaks": peaks,
            "peaks_note": "measured at start; each configuration's roofline uses the peaks measured in its own"
            " process right after its timings (same threads, similar load)",
            "cost_model": COST_MODEL,
        },
        "configurations": rows,
        **({"baseline_ref": args.baseline_ref} if args.baseline_ref else {}),
        "goals": _goals(rows),
    }
    if device.type == "cuda":
        result["notes"] = ["the reference loop (tests/reference.py) draws on CPU generators and runs on CPU only"]
    write_json(result, args.out)
    return result


if __name__ == "__main__":
    main()
