"""Helpers shared by the benchmark scripts: machine state, data, the victim model, JSON output.

Not part of the library: benchmarks print their results (JSON) and may import
from the repository's tests (the one reference implementation lives there).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
HIGH_LOAD = 1.5
"""1-minute load average above which a run is flagged as measured on a busy machine."""

if str(REPO) not in sys.path:  # run as a script: make `tests.reference` importable
    sys.path.insert(0, str(REPO))


# --------------------------------------------------------------------------- machine state


def load_average() -> list[float]:
    """The 1, 5 and 15 minute load averages (``uptime``'s figures)."""
    return [round(value, 2) for value in os.getloadavg()]


def uptime_line() -> str:
    """The output of ``uptime`` (empty when the command is missing)."""
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()
    except OSError:
        return ""


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo (``platform.processor()`` elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def cpu_identity() -> dict[str, Any]:
    """Which CPU generation ran: /proc/cpuinfo's family, model and stepping, the cache sizes
    and the vector kernels PyTorch dispatches to (the same model name, "AMD EPYC", has covered
    both an AVX2 Zen 3 and an AVX-512 Zen 4 host: 0.231 and 0.147 CPU s per image in
    ``precompute_throughput.py``)."""
    names = {"cpu family": "cpu_family", "model": "cpu_model_number", "stepping": "cpu_stepping"}
    fields: dict[str, Any] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            name = names.get(key.strip())
            if name is not None and name not in fields:  # the first CPU's
                fields[name] = value.strip()
    except OSError:
        pass
    for index in range(8):  # /sys/devices/system/cpu/cpu0/cache/index*/: L1d, L1i, L2, L3
        cache = Path(f"/sys/devices/system/cpu/cpu0/cache/index{index}")
        try:
            level, kind = (cache / "level").read_text().strip(), (cache / "type").read_text().strip()
            size = (cache / "size").read_text().strip()
        except OSError:
            break
        if kind != "Instruction":
            fields[f"l{level}_cache_per_core" if level != "3" else "l3_cache"] = size
    fields["torch_cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    return fields


def machine_info(device: torch.device) -> dict[str, Any]:
    """Where and under which load the figures were measured."""
    load = load_average()
    info: dict[str, Any] = {
        "cpu": cpu_model(),
        **cpu_identity(),
        "logical_cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": str(device),
        "load_average_at_start": load,
        "uptime_at_start": uptime_line(),
        "high_load_at_start": load[0] > HIGH_LOAD,
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def finish_machine_info(info: dict[str, Any], wall_s: float, loads: list[float]) -> None:
    """Adds the end-of-run load, the highest load seen and the run's wall time to ``info``."""
    info["load_average_at_end"] = load_average()
    info["uptime_at_end"] = uptime_line()
    info["max_load_1min_seen"] = max([*loads, info["load_average_at_end"][0]])
    info["high_load"] = info["max_load_1min_seen"] > HIGH_LOAD
    info["wall_s"] = round(wall_s, 1)


def _cpu_jiffies() -> tuple[int, int] | None:
    """(busy, total) jiffies of all CPUs from /proc/stat, or None off Linux."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except (OSError, IndexError):
        return None
    values = [int(v) for v in fields[:8]]
    idle = values[3] + values[4]  # idle + iowait
    return sum(values) - idle, sum(values)


@dataclass
class CpuShare:
    """CPU time of the whole machine during a measurement, split into ours and other users'.

    ``start()`` and ``stop(our_cpu_s)`` bracket a measurement; ``our_cpu_s`` is the
    CPU time our process (or child) used meanwhile. ``other_cores`` is the average
    number of cores busy with *other* work: contention that slows our timing.
    """

    _start: tuple[int, int] | None = None
    _wall: float = 0.0

    def start(self) -> None:
        self._start = _cpu_jiffies()
        self._wall = time.perf_counter()

    def stop(self, our_cpu_s: float) -> dict[str, float | None]:
        wall = time.perf_counter() - self._wall
        end = _cpu_jiffies()
        if self._start is None or end is None or wall <= 0:
            return {"machine_busy_cores": None, "our_cores": None, "other_cores": None}
        hertz = os.sysconf("SC_CLK_TCK")
        busy_cores = (end[0] - self._start[0]) / hertz / wall
        ours = our_cpu_s / wall
        return {
            "machine_busy_cores": round(busy_cores, 2),
            "our_cores": round(ours, 2),
            "other_cores": round(max(0.0, busy_cores - ours), 2),
        }


def synchronize(device: torch.device) -> None:
    """Waits for queued GPU work so that wall-clock timings are honest."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def resolve_device(name: str) -> torch.device:
    """:func:`uae_augment.devices.resolve_device`, its error as the script's exit message."""
    from uae_augment import devices

    try:
        return devices.resolve_device(name)
    except ValueError as error:
        raise SystemExit(str(error)) from None


# --------------------------------------------------------------------------- data and model


def mnist_source(dataset: str, root: str | None) -> tuple[str, str | None]:
    """(data-set name, root) for MNIST: full MNIST when its canonical file exists, else mnist-5k.

    ``dataset`` is ``auto``, ``mnist`` or ``mnist-5k``. ``auto`` looks for
    ``mnist.npz`` in ``root``, then in :func:`uae_augment.data.resolve_data_root`'s
    folder (``$UAE_DATA_ROOT``, else the repository's ``datasets/``).
    """
    if dataset != "auto":
        return dataset, root
    from uae_augment.data import resolve_data_root

    candidates = [root, str(resolve_data_root())]
    for candidate in candidates:
        if candidate and (Path(candidate) / "mnist.npz").is_file():
            return "mnist", candidate
    return "mnist-5k", None


def training_images(dataset: str, root: str | None) -> torch.Tensor:
    """The training split of an image data set as a float tensor (N, C, H, W) in [0, 1]."""
    from uae_augment import load_dataset

    return load_dataset(dataset, root=root, split="train").data


def train_conv_autoencoder(
    images: torch.Tensor, *, epochs: int, seed: int, device: torch.device
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The release's 28x28 conv autoencoder trained by ``uae_augment.fit`` on ``images``.

    Returns the model (eval mode, on ``device``) and a record of the training run.
    """
    from uae_augment import fit
    from uae_augment.models import ConvAutoencoder

    torch.manual_seed(seed)
    model = ConvAutoencoder(in_channels=images.shape[1], image_size=images.shape[-1])
    start = time.perf_counter()
    history = fit(model, images, epochs=epochs, seed=seed, progress=False, device=device)
    return model.eval(), {
        "model": "ConvAutoencoder",
        "rows": int(images.shape[0]),
        "epochs": epochs,
        "batch_size": history.batch_size,
        "steps": history.steps,
        "final_epoch_loss": round(history.losses[-1], 6),
        "train_s": round(time.perf_counter() - start, 1),
    }


# --------------------------------------------------------------------------- output


def write_json(result: dict[str, Any], out: str | None) -> None:
    """Prints ``result`` as JSON to stdout and, when ``out`` is given, writes it there."""
    text = json.dumps(result, indent=2, sort_keys=False)
    print(text)
    if out:
        path = Path(out)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")
