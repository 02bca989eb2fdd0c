"""Temporarily put models in attack state (eval mode, frozen parameters) and restore them."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterable, Iterator

import torch
from torch import nn


@contextlib.contextmanager
def frozen(models: Iterable[nn.Module]) -> Iterator[None]:
    """Eval mode and ``requires_grad=False`` inside the block; the exact prior state after.

    Every submodule's ``training`` flag and every parameter's ``requires_grad``
    flag is restored, also when the block raises.
    """
    unique = list({id(m): m for m in models}.values())
    modes = [(module, module.training) for model in unique for module in model.modules()]
    flags = [(p, p.requires_grad) for model in unique for p in model.parameters()]
    try:
        for model in unique:
            model.eval()
        for parameter, _ in flags:
            parameter.requires_grad_(False)
        yield
    finally:
        for module, training in modes:
            module.training = training
        for parameter, requires_grad in flags:
            parameter.requires_grad_(requires_grad)


def model_device(model: nn.Module) -> torch.device:
    """The device of a model's first parameter or buffer (CPU for stateless modules)."""
    for tensor in list(model.parameters()) + list(model.buffers()):
        return tensor.device
    return torch.device("cpu")


def state_hash(models: Iterable[nn.Module]) -> str:
    """SHA-256 over the names, shapes, dtypes and values of the models' state dicts."""
    digest = hashlib.sha256()
    for model in models:
        digest.update(type(model).__qualname__.encode())
        for name, tensor in model.state_dict().items():
            value = tensor.detach().cpu().contiguous()
            digest.update(f"{name}:{tuple(value.shape)}:{value.dtype}".encode())
            digest.update(value.reshape(-1).view(torch.uint8).numpy().tobytes() if value.numel() else b"")
    return digest.hexdigest()
