"""Counts the aten operations that force a host-device synchronisation on a GPU.

On CPU nothing waits, but the same operations run: a :class:`SyncCounter`
(a ``TorchDispatchMode``) records every call that would stall a CUDA stream, so
a CPU-only test can assert that a loop issues none of them.
"""

from __future__ import annotations

from collections import Counter

import torch
from torch.utils._python_dispatch import TorchDispatchMode

_ALWAYS = {
    "aten._local_scalar_dense",  # .item(), int(t), float(t), bool(t), `if t:`
    "aten.is_nonzero",
    "aten.nonzero",
    "aten.nonzero_static",
    "aten.masked_select",
    "aten.masked_scatter",
    "aten.masked_scatter_",
    "aten.unique",
    "aten._unique",
    "aten._unique2",
    "aten.unique_dim",
    "aten.unique_consecutive",
    "aten.repeat_interleave",
    "aten.equal",
    "aten.allclose",
    "aten._assert_async",
}
_INDEXING = {"aten.index", "aten.index_put", "aten.index_put_", "aten._index_put_impl_"}


def _has_bool_index(args: tuple) -> bool:
    indices = args[1] if len(args) > 1 else ()
    return any(isinstance(i, torch.Tensor) and i.dtype in (torch.bool, torch.uint8) for i in indices or ())


def _sync_name(func: torch._ops.OpOverload, args: tuple, kwargs: dict) -> str | None:
    name = func.overloadpacket.__qualname__ if hasattr(func, "overloadpacket") else str(func)
    name = f"aten.{func.overloadpacket.__name__}" if func.namespace == "aten" else name
    if name in _ALWAYS:
        return name
    if name in _INDEXING and _has_bool_index(args):
        return f"{name}[bool]"
    if name in ("aten._to_copy", "aten.to", "aten.copy_"):
        device = kwargs.get("device")
        source = args[0] if name != "aten.copy_" else args[1]
        target = args[0] if name == "aten.copy_" else None
        if name == "aten.copy_" and isinstance(target, torch.Tensor) and isinstance(source, torch.Tensor):
            if target.device.type == "cpu" and source.device.type != "cpu":
                return "device->cpu copy"
        elif device is not None and torch.device(device).type == "cpu" and source.device.type != "cpu":
            return "device->cpu copy"
    return None


class SyncCounter(TorchDispatchMode):
    """Counts sync-causing aten calls (by name) while active."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        kwargs = kwargs or {}
        name = _sync_name(func, args, kwargs)
        if name is not None:
            self.counts[name] += 1
        return func(*args, **kwargs)

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def count_syncs(function, *args, **kwargs) -> Counter[str]:  # type: ignore[no-untyped-def]
    """The sync-causing aten calls made by ``function(*args, **kwargs)``."""
    with SyncCounter() as counter:
        function(*args, **kwargs)
    return counter.counts
