"""Model state helpers: the attack freeze/restore context and the state hash used in cache provenance."""

from __future__ import annotations

import torch
from torch import nn

from uae_augment._model_state import frozen, state_hash


def test_state_hash_covers_batchnorm_buffers_and_values():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2))  # num_batches_tracked is a 0-d long
    first = state_hash([model])
    assert first == state_hash([model]) and len(first) == 64
    model[1].num_batches_tracked += 1
    assert state_hash([model]) != first
    with torch.no_grad():
        model[0].weight[0, 0, 0, 0] += 1e-6
    assert state_hash([model]) not in (first,)


def test_frozen_restores_modes_and_flags_after_an_error():
    model = nn.Sequential(nn.Linear(2, 2), nn.Dropout())
    model.train()
    model[0].bias.requires_grad_(False)
    try:
        with frozen([model]):
            assert not model.training and not any(p.requires_grad for p in model.parameters())
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    assert model.training and model[1].training
    assert model[0].weight.requires_grad and not model[0].bias.requires_grad
