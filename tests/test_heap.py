"""Freed memory kept in the process (uae_augment._heap): glibc's heap between steps.

The behaviour is checked in fresh processes with real allocations: page faults of a loop that
frees and re-allocates 128 MB per step, as a training or attack step does.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

import uae_augment
from uae_augment import _heap

GLIBC = _heap._glibc() is not None

STEP_FAULTS = textwrap.dedent(
    """
    import json, resource, sys
    import torch
    import uae_augment
    from uae_augment.models import ConvAutoencoder

    torch.set_num_threads(1)
    before = uae_augment.heap_retention()
    if sys.argv[1] == "opt-out":
        uae_augment.set_heap_retention(None)
    uae_augment.fit(ConvAutoencoder(in_channels=1, image_size=8), torch.rand(16, 1, 8, 8), epochs=1, progress=False)
    after_fit = uae_augment.heap_retention()
    faults = []
    for _ in range(5):  # one "step": sixteen 8 MB temporaries, written, then freed
        start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        temporaries = [torch.ones(8 << 20, dtype=torch.uint8) for _ in range(16)]
        del temporaries
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start)
    print(json.dumps({"before": before, "after_fit": after_fit, "faults": faults}))
    """
)
PAGES_PER_STEP = (16 * 8 << 20) // 4096


def _run(mode: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", STEP_FAULTS, mode], capture_output=True, text=True, check=True, timeout=120
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not GLIBC, reason="the retention is a glibc setting; elsewhere it is a no-op (tested below)")
def test_fit_keeps_freed_memory_so_later_steps_fault_no_pages_in() -> None:
    kept = _run("default")
    assert kept["before"] is None and kept["after_fit"] == _heap.DEFAULT_RETENTION
    assert kept["faults"][0] > 0.5 * PAGES_PER_STEP  # the first step touches its pages
    assert sum(kept["faults"][1:]) < 0.1 * PAGES_PER_STEP, kept["faults"]  # four steps, < 1/10 of one

    # glibc's own behaviour: whether a step's pages go back to the kernel depends on its adaptive
    # thresholds and on the heap's layout (it varied from run to run), so only the setting is checked
    assert _run("opt-out")["after_fit"] is None


def test_set_heap_retention_validates_and_reports(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_heap, "_applied", None)
    monkeypatch.setattr(_heap, "_chosen", False)
    for bad, error in ((-1, ValueError), (2**31, ValueError), (1.5, TypeError), (True, TypeError)):
        with pytest.raises(error, match="nbytes"):
            uae_augment.set_heap_retention(bad)  # type: ignore[arg-type]
    assert uae_augment.set_heap_retention(None) is False  # nothing set yet: nothing to undo
    _heap.retain_freed_memory()
    assert uae_augment.heap_retention() is None  # the user's None stands


@pytest.mark.skipif(not GLIBC, reason="sets glibc's mallopt values")
def test_set_heap_retention_sets_and_undoes_on_glibc(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_heap, "_applied", None)
    monkeypatch.setattr(_heap, "_chosen", False)
    try:
        _heap.retain_freed_memory()
        assert uae_augment.heap_retention() == _heap.DEFAULT_RETENTION
        assert uae_augment.set_heap_retention(64 << 20) is True
        assert uae_augment.heap_retention() == 64 << 20
        _heap.retain_freed_memory()  # the user's value stands
        assert uae_augment.heap_retention() == 64 << 20
        assert uae_augment.set_heap_retention(None) is True  # back to glibc's values
        assert uae_augment.heap_retention() is None
    finally:
        _heap._set_top_pad(_heap.DEFAULT_RETENTION)  # the rest of the suite runs with the default


def test_other_c_libraries_are_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_heap, "_glibc", lambda: None)
    monkeypatch.setattr(_heap, "_applied", None)
    monkeypatch.setattr(_heap, "_chosen", False)
    _heap.retain_freed_memory()
    assert uae_augment.heap_retention() is None
    assert uae_augment.set_heap_retention(1 << 20) is False
    assert uae_augment.heap_retention() is None
