"""End-to-end ``precompute`` throughput on MNIST and the projected time for the whole training split.

Attacks the first ``--rows`` rows of the 60,000-image MNIST training split with
``MINEUAE`` (the README's conv autoencoder, trained briefly on ``--train-rows``
of the same split) through ``uae_augment.precompute`` into a real HDF5 cache,
once per process count in ``--processes``: 1 is a plain process, n > 1 runs
under ``torchrun --standalone --nproc_per_node n`` (gloo; every rank writes its
shard, rank 0 joins them). Each configuration runs in fresh processes with
``--threads`` torch threads per process; the figures are the precompute call's
wall time (slowest rank, from a barrier to the joined file), img/s, the user
and kernel (sys) CPU seconds of the precompute calls (summed over ranks) and
of the whole process tree (``RUSAGE_CHILDREN``, start-up and imports
included). Projections for 60,000 rows: at the measured img/s (inflated by
the other jobs of a shared machine) and on idle cores (each process on its own
core at its measured CPU seconds per image).

The paper preset is far too slow to run on many rows here: it is measured on
``--paper-rows`` rows at T = 1 and T = 1 + m attack iterations (one process),
extrapolated to its 40 iterations like ``attack_speed.py``, and projected to
60,000 rows with the same per-process scaling as the fast preset.

Run ``python benchmarks/precompute_throughput.py --help``; it prints JSON and writes ``--out``.
"""

from __future__ import annotations

import argparse
import json
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
    finish_machine_info,
    load_average,
    machine_info,
    train_conv_autoencoder,
    write_json,
)

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "precompute_throughput.json"
TRAIN_ROWS = 60_000


def run_worker(spec: dict[str, Any]) -> None:
    """One process (or torchrun rank): precompute the spec's rows; writes its timings to JSON."""
    from torch.utils.data import TensorDataset

    from uae_augment import MINEUAE, Reconstruction, precompute
    from uae_augment.devices import distributed
    from uae_augment.models import ConvAutoencoder

    torch.set_num_threads(spec["threads"])
    images = torch.load(spec["images"])
    labels = torch.zeros(images.shape[0], dtype=torch.long)
    model = ConvAutoencoder(in_channels=1, image_size=28)
    model.load_state_dict(torch.load(spec["state"]))
    model.eval().requires_grad_(False)
    attack = MINEUAE(Reconstruction(model), preset=spec["preset"], steps=spec["steps"], seed=0)
    with distributed("cpu") as placement:
        rank = placement.world[0] if placement.world else 0
        if placement.world:
            torch.distributed.barrier()
        before = resource.getrusage(resource.RUSAGE_SELF)
        start = time.perf_counter()
        precompute(
            TensorDataset(images, labels),
            attack,
            spec["cache"],
            batch_size=spec["batch_size"],
            progress=False,
        )
        wall = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_SELF)
    report = {
        "rank": rank,
        "precompute_wall_s": wall,
        "precompute_user_s": after.ru_utime - before.ru_utime,
        "precompute_sys_s": after.ru_stime - before.ru_stime,
    }
    Path(f"{spec['report']}.rank{rank}").write_text(json.dumps(report))


def launch(spec: dict[str, Any], workdir: Path, processes: int) -> dict[str, Any]:
    """Runs ``spec`` in 1 process or under torchrun; returns wall, CPU and per-rank timings."""
    spec = {
        **spec,
        "cache": str(workdir / f"{spec['name']}.h5"),
        "report": str(workdir / spec["name"]),
    }
    spec_path = workdir / f"{spec['name']}.json"
    spec_path.write_text(json.dumps(spec))
    script = [str(Path(__file__).resolve()), "--worker", str(spec_path)]
    if processes == 1:
        command = [sys.executable, *script]
    else:
        command = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc_per_node={processes}",
            *script,
        ]
    env = {**os.environ, "OMP_NUM_THREADS": str(spec["threads"])}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    completed = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if completed.returncode != 0:
        raise RuntimeError(f"{spec['name']} failed:\n{completed.stderr[-4000:]}")
    ranks = [json.loads(Path(f"{spec['report']}.rank{r}").read_text()) for r in range(processes)]
    Path(spec["cache"]).unlink()
    user = sum(r["precompute_user_s"] for r in ranks)
    sys_s = sum(r["precompute_sys_s"] for r in ranks)
    return {
        "process_wall_s": round(wall, 2),
        "process_tree_user_s": round(after.ru_utime - before.ru_utime, 2),
        "process_tree_sys_s": round(after.ru_stime - before.ru_stime, 2),
        "precompute_wall_s": round(max(r["precompute_wall_s"] for r in ranks), 2),
        "precompute_user_s": round(user, 2),
        "precompute_sys_s": round(sys_s, 2),
        "sys_fraction_of_cpu": round(sys_s / max(user + sys_s, 1e-9), 4),
        "ranks": ranks,
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="precompute img/s on MNIST with 1 and n processes; projected time for 60,000 rows.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--rows", type=int, default=512, help="MNIST training rows attacked per configuration")
    parser.add_argument("--processes", default="1,2", help="process counts (n > 1: torchrun, gloo)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument("--batch-size", type=int, default=None, help="rows per attack call (default: precompute's)")
    parser.add_argument(
        "--steps",
        type=int,
        default=None,
        help="fast-preset attack iterations (default: the preset's)",
    )
    parser.add_argument("--train-rows", type=int, default=1000, help="rows the victim autoencoder trains on")
    parser.add_argument("--epochs", type=int, default=1, help="victim training epochs")
    parser.add_argument("--paper-rows", type=int, default=8, help="rows of the paper preset's measurement (0: skip)")
    parser.add_argument(
        "--paper-iterations",
        type=int,
        default=2,
        help="m: the paper preset runs T = 1 and T = 1 + m",
    )
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="where to write the JSON ('' for stdout only)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def _projection(rows: int, wall_s: float, cpu_s: float, processes: int) -> dict[str, float]:
    """img/s as measured (shared machine) and the 60k-row wall time, measured and on idle cores."""
    rate = rows / wall_s
    idle_rate = rows * processes / cpu_s  # each process on its own idle core, at its measured CPU s/image
    return {
        "img_per_s_measured": round(rate, 3),
        "projected_60k_wall_h_at_measured_rate": round(TRAIN_ROWS / rate / 3600, 2),
        "img_per_s_idle_cores": round(idle_rate, 3),
        "projected_60k_wall_h_idle_cores": round(TRAIN_ROWS / idle_rate / 3600, 2),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.worker:
        run_worker(json.loads(Path(args.worker).read_text()))
        return {}
    from uae_augment import PRESETS, load_dataset
    from uae_augment._names import PRECOMPUTE_BATCH_SIZE

    wall_start = time.perf_counter()
    torch.set_num_threads(args.threads)
    machine = machine_info(torch.device("cpu"))
    data = load_dataset("mnist", split="train").data
    model, training = train_conv_autoencoder(
        data[: args.train_rows], epochs=args.epochs, seed=0, device=torch.device("cpu")
    )
    training["dataset"] = "mnist (train split)"
    batch = args.batch_size or PRECOMPUTE_BATCH_SIZE
    rows: list[dict[str, Any]] = []
    loads = [machine["load_average_at_start"][0]]
    with tempfile.TemporaryDirectory(prefix="precompute_throughput_") as tmp:
        workdir = Path(tmp)
        common = {"state": str(workdir / "model.pt"), "threads": args.threads, "batch_size": batch}
        torch.save(model.state_dict(), common["state"])
        for count, n in [("fast", args.rows), ("paper", args.paper_rows)]:
            torch.save(data[:n].clone(), workdir / f"{count}.pt")
        fast_steps = args.steps or PRESETS["fast"]["steps"]["unsupervised"]
        for processes in [int(p) for p in args.processes.split(",") if p]:
            loads.append(load_average()[0])
            spec = {
                **common,
                "name": f"fast_P{processes}",
                "preset": "fast",
                "steps": fast_steps,
                "images": str(workdir / "fast.pt"),
            }
            raw = launch(spec, workdir, processes)
            row = {
                "name": spec["name"],
                "preset": "fast",
                "processes": processes,
                "rows": args.rows,
                "attack_iterations": fast_steps,
                "load_1min_before": loads[-1],
                **raw,
                "cpu_s_per_image": round((raw["precompute_user_s"] + raw["precompute_sys_s"]) / args.rows, 4),
                **_projection(
                    args.rows,
                    raw["precompute_wall_s"],
                    raw["precompute_user_s"] + raw["precompute_sys_s"],
                    processes,
                ),
            }
            rows.append(row)
            print(
                f"# {row['name']}: {row['img_per_s_idle_cores']} img/s on idle cores",
                file=sys.stderr,
            )
        paper = None
        if args.paper_rows:
            timings = {}
            paper_steps = PRESETS["paper"]["steps"]["unsupervised"]
            for steps in (1, 1 + args.paper_iterations):
                loads.append(load_average()[0])
                spec = {
                    **common,
                    "name": f"paper_T{steps}",
                    "preset": "paper",
                    "steps": steps,
                    "batch_size": min(batch, args.paper_rows),
                    "images": str(workdir / "paper.pt"),
                }
                timings[steps] = launch(spec, workdir, 1)

            def extrapolate(key: str) -> float:
                short, long = timings[1][key], timings[1 + args.paper_iterations][key]
                return short + (paper_steps - 1) * (long - short) / args.paper_iterations

            wall = extrapolate("precompute_wall_s")
            cpu = extrapolate("precompute_user_s") + extrapolate("precompute_sys_s")
            paper = {
                "name": "paper_P1_extrapolated",
                "preset": "paper",
                "processes": 1,
                "rows": args.paper_rows,
                "measured": {f"T{k}": v for k, v in timings.items()},
                "attack_iterations": paper_steps,
                "cpu_s_per_image_extrapolated": round(cpu / args.paper_rows, 2),
                **_projection(args.paper_rows, wall, cpu, 1),
            }
            fast = {row["processes"]: row for row in rows}
            if 1 in fast and len(fast) > 1:
                most = max(fast)
                scaling = fast[most]["img_per_s_idle_cores"] / fast[1]["img_per_s_idle_cores"]
                paper[f"projected_60k_wall_h_idle_cores_{most}_processes"] = round(
                    paper["projected_60k_wall_h_idle_cores"] / scaling, 1
                )
                paper["process_scaling_from_fast"] = round(scaling, 3)
            rows.append(paper)
    finish_machine_info(machine, time.perf_counter() - wall_start, loads)
    result = {
        "benchmark": "precompute_throughput",
        "command": " ".join(
            [
                Path(sys.executable).name,
                "benchmarks/precompute_throughput.py",
                *(argv if argv is not None else sys.argv[1:]),
            ]
        ),
        "settings": {
            "threads_per_process": args.threads,
            "batch_size": batch,
            "dataset": "mnist train split",
            "victim": "ConvAutoencoder, Reconstruction criterion, seed 0",
            "projection": f"{TRAIN_ROWS} rows / (rows / slowest rank's precompute wall time)",
        },
        "machine": machine,
        "victim": training,
        "configurations": rows,
    }
    write_json(result, args.out)
    return result


if __name__ == "__main__":
    main()
