"""Device resolution and the torchrun process group (uae_augment.devices), on a CPU machine.

CUDA and torchrun are simulated: ``torch.cuda.is_available``/``device_count`` and
``set_device`` are monkeypatched, the torchrun variables set in the environment,
and the process-group calls of ``torch.distributed`` recorded.
"""

from __future__ import annotations

import logging

import pytest
import torch
import torch.distributed as dist

from uae_augment import devices
from uae_augment.devices import distributed, resolve_device


@pytest.fixture
def no_torchrun(monkeypatch):
    for name in ("WORLD_SIZE", "LOCAL_RANK", "RANK"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def gpus(monkeypatch):
    """Four simulated CUDA devices; returns the list of set_device calls."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    calls: list[torch.device] = []
    monkeypatch.setattr(torch.cuda, "set_device", calls.append)
    return calls


def torchrun(monkeypatch, local_rank: int, world_size: int = 2) -> None:
    monkeypatch.setenv("WORLD_SIZE", str(world_size))
    monkeypatch.setenv("LOCAL_RANK", str(local_rank))
    monkeypatch.setenv("RANK", str(local_rank))


class TestResolveDevice:
    def test_cpu_and_auto_without_cuda(self, no_torchrun, monkeypatch):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
        assert resolve_device("cpu") == torch.device("cpu")
        assert resolve_device("auto") == torch.device("cpu")
        assert resolve_device() == torch.device("cpu")

    def test_cuda_without_cuda_raises(self, no_torchrun, monkeypatch):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
        for name in ("cuda", "cuda:1"):
            with pytest.raises(ValueError, match="CUDA is not available"):
                resolve_device(name)

    def test_bad_name_raises(self, no_torchrun):
        with pytest.raises(ValueError, match="not a device name"):
            resolve_device("gpu0")

    def test_single_process_takes_the_name_as_written(self, no_torchrun, gpus):
        assert resolve_device("auto") == torch.device("cuda")
        assert resolve_device("cuda") == torch.device("cuda")
        assert resolve_device("cuda:3") == torch.device("cuda", 3)

    @pytest.mark.parametrize("local_rank", [0, 1, 3])
    def test_torchrun_puts_each_rank_on_its_local_gpu(self, monkeypatch, gpus, local_rank):
        torchrun(monkeypatch, local_rank, world_size=4)
        for name in ("auto", "cuda", f"cuda:{local_rank}"):
            assert resolve_device(name) == torch.device("cuda", local_rank)
        assert resolve_device("cpu") == torch.device("cpu")

    def test_torchrun_overrides_an_explicit_index_with_a_warning(self, monkeypatch, gpus, caplog):
        torchrun(monkeypatch, 1)
        with caplog.at_level(logging.WARNING, logger="uae_augment.devices"):
            assert resolve_device("cuda:0") == torch.device("cuda", 1)
        assert "uses cuda:1 instead" in caplog.text
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="uae_augment.devices"):
            resolve_device("cuda:1")
        assert caplog.text == ""

    def test_torchrun_rank_without_a_gpu_raises(self, monkeypatch, gpus):
        torchrun(monkeypatch, 4, world_size=8)
        with pytest.raises(ValueError, match="LOCAL_RANK 4 has no GPU of its own: 4 CUDA"):
            resolve_device("cuda")

    def test_bad_torchrun_environment_raises(self, monkeypatch, gpus):
        monkeypatch.setenv("WORLD_SIZE", "2")
        monkeypatch.delenv("LOCAL_RANK", raising=False)
        with pytest.raises(ValueError, match="LOCAL_RANK is not set"):
            resolve_device("cuda")
        monkeypatch.setenv("WORLD_SIZE", "two")
        with pytest.raises(ValueError, match="WORLD_SIZE must be an integer"):
            resolve_device("cuda")

    def test_one_process_torchrun_is_not_distributed(self, monkeypatch, gpus):
        torchrun(monkeypatch, 0, world_size=1)
        assert resolve_device("cuda:2") == torch.device("cuda", 2)


class FakeGroup:
    """Records the process-group calls of torch.distributed."""

    def __init__(self, monkeypatch, rank: int, world_size: int):
        self.calls: list[tuple] = []
        self.initialised = False
        monkeypatch.setattr(dist, "is_initialized", lambda: self.initialised)
        monkeypatch.setattr(dist, "init_process_group", self.init)
        monkeypatch.setattr(dist, "destroy_process_group", self.destroy)
        monkeypatch.setattr(dist, "get_rank", lambda: rank)
        monkeypatch.setattr(dist, "get_world_size", lambda: world_size)

    def init(self, backend, timeout):
        self.calls.append(("init", backend, timeout))
        self.initialised = True

    def destroy(self):
        self.calls.append(("destroy",))
        self.initialised = False


class TestDistributed:
    def test_alone_no_process_group(self, no_torchrun, monkeypatch):
        group = FakeGroup(monkeypatch, 0, 1)
        with distributed("cpu") as placement:
            assert placement.world is None and placement.device == torch.device("cpu") and placement.is_main
        assert group.calls == []

    def test_torchrun_on_gpus_uses_nccl_and_the_local_gpu(self, monkeypatch, gpus):
        torchrun(monkeypatch, 1)
        group = FakeGroup(monkeypatch, 1, 2)
        with distributed("cuda:0") as (world, device):
            assert world == (1, 2) and device == torch.device("cuda", 1)
            assert gpus == [torch.device("cuda", 1)]
            assert group.calls == [("init", "nccl", devices.DEFAULT_TIMEOUT)]
        assert group.calls[-1] == ("destroy",)

    def test_torchrun_on_cpu_uses_gloo_and_tears_down_on_error(self, monkeypatch):
        torchrun(monkeypatch, 0)
        group = FakeGroup(monkeypatch, 0, 2)
        with pytest.raises(RuntimeError, match="boom"):
            with distributed("cpu") as placement:
                assert placement.world == (0, 2) and placement.is_main
                raise RuntimeError("boom")
        assert [call[:2] for call in group.calls] == [("init", "gloo"), ("destroy",)]

    def test_an_existing_group_is_used_and_left_open(self, monkeypatch):
        torchrun(monkeypatch, 1)
        group = FakeGroup(monkeypatch, 1, 2)
        group.initialised = True
        with distributed("cpu") as placement:
            assert placement.world == (1, 2) and not placement.is_main
        assert group.calls == [] and group.initialised
