"""fit: seeded order, determinism, step budget, defaults, eval mode, errors, real workers, step options, worlds."""

from __future__ import annotations

import math
import os
import socket

import pytest
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import TensorDataset

from uae_augment import FitHistory, fit
from uae_augment.models import ConvAutoencoder, FitSettings, ReferenceModel


class Recorder(ReferenceModel):
    """A real trainable linear model that records which samples each step saw."""

    fit_settings = FitSettings(epochs=3, batch_size=7)

    def __init__(self, features: int):
        super().__init__()
        self.linear = nn.Linear(features, 1)
        self.seen: list[torch.Tensor] = []
        self.total_steps: int | None = None

    def on_fit_start(self, total_steps: int) -> None:
        self.total_steps = total_steps

    def configure_optimizers(self):
        return [torch.optim.SGD(self.parameters(), lr=0.1)]

    def training_loss(self, x, y):
        self.seen.append(x[:, 0].detach().clone())
        noise = torch.rand(())  # global RNG inside fit: seeded, caller's state untouched
        return (self.linear(x).squeeze(1) - noise).pow(2).mean(), {"noise": noise}


def _ids(n: int) -> torch.Tensor:
    """Rows whose first feature is the row id / n (so recorded batches identify samples)."""
    return torch.stack([torch.arange(n) / n, torch.linspace(0, 1, n)], dim=1)


def test_each_epoch_is_a_seeded_permutation_and_steps_are_counted():
    n = 30
    model = Recorder(2)
    history = fit(model, _ids(n), seed=3, progress=False)
    assert isinstance(history, FitHistory)
    assert history.batch_size == 7 and history.epochs == 3 and len(history.losses) == 3
    assert history.steps == 3 * math.ceil(n / 7) == model.total_steps
    orders = [torch.cat(model.seen[e * 5 : (e + 1) * 5]) for e in range(3)]
    for order in orders:
        assert torch.equal(order.sort().values, torch.arange(n) / n)
    assert not torch.equal(orders[0], orders[1])
    assert set(history.metrics[0]) == {"loss", "noise"}
    assert history.losses == [m["loss"] for m in history.metrics]

    again = Recorder(2)
    fit(again, _ids(n), seed=3, progress=False)
    assert all(torch.equal(a, b) for a, b in zip(model.seen, again.seen))
    other = Recorder(2)
    fit(other, _ids(n), seed=4, progress=False)
    assert not torch.equal(torch.cat(model.seen), torch.cat(other.seen))


def test_same_order_with_real_worker_processes():
    items = TensorDataset(_ids(24), torch.arange(24))
    inline, workers = Recorder(2), Recorder(2)
    fit(inline, items, epochs=2, batch_size=5, seed=1, progress=False)
    fit(workers, items, epochs=2, batch_size=5, seed=1, progress=False, num_workers=2)
    assert len(inline.seen) == len(workers.seen) == 10
    assert all(torch.equal(a, b) for a, b in zip(inline.seen, workers.seen))


def test_item_layouts():
    rows = _ids(12)
    for items in ([row for row in rows], [(row, 0, "extra") for row in rows]):
        model = Recorder(2)
        history = fit(model, items, epochs=1, batch_size=4, progress=False)
        assert history.steps == 3
        assert torch.equal(torch.cat(model.seen).sort().values, rows[:, 0])


def test_caller_random_state_is_untouched():
    model = Recorder(2)
    torch.manual_seed(123)
    state = torch.get_rng_state()
    fit(model, _ids(10), epochs=1, progress=False)
    assert torch.equal(torch.get_rng_state(), state)


def test_same_seed_same_weights_and_eval_mode(mnist):
    x, y = mnist
    data = TensorDataset(x[:120], y[:120])
    states = []
    for seed in (0, 0, 1):
        torch.manual_seed(0)
        model = ConvAutoencoder()
        history = fit(model, data, batch_size=40, max_steps=4, seed=seed, progress=False)
        assert history.steps == 4 and not model.training
        assert all(not m.training for m in model.modules())
        states.append(model.state_dict())
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
    assert any(not torch.equal(states[0][k], states[2][k]) for k in states[0])


def test_max_steps_sets_epochs_or_stops_early():
    model = Recorder(2)
    history = fit(model, _ids(20), batch_size=10, max_steps=5, progress=False)
    assert history.steps == 5 == model.total_steps and history.epochs == 3
    assert len(model.seen) == 5
    model = Recorder(2)
    history = fit(model, _ids(20), epochs=1, batch_size=10, max_steps=5, progress=False)
    assert history.steps == 2 == model.total_steps and history.epochs == 1


def test_defaults_come_from_the_model_and_loss_falls(mnist):
    x, _ = mnist
    torch.manual_seed(0)
    model = ConvAutoencoder()
    history = fit(model, x[:200], epochs=4, progress=False)
    assert history.batch_size == ConvAutoencoder.fit_settings.batch_size == 100
    assert history.steps == 8
    assert history.losses[-1] < 0.8 * history.losses[0]
    with torch.no_grad():
        out = model(x[:8])
        assert torch.nn.functional.binary_cross_entropy(out, x[:8]) < history.losses[0]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"epochs": 0}, "epochs"),
        ({"batch_size": -2}, "batch_size"),
        ({"max_steps": 0}, "max_steps"),
        ({"epochs": 1.5}, "epochs"),
        ({"num_workers": -1}, "num_workers"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        fit(Recorder(2), _ids(10), progress=False, **kwargs)


def test_bad_models_and_data():
    with pytest.raises(TypeError, match="training_step"):
        fit(nn.Linear(2, 1), _ids(10))
    with pytest.raises(TypeError, match="nn.Module"):
        fit("model", _ids(10))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="empty"):
        fit(Recorder(2), torch.empty(0, 2))
    with pytest.raises(TypeError, match="floating-point"):
        fit(Recorder(2), torch.ones(4, 2, dtype=torch.uint8), progress=False)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        fit(Recorder(2), _ids(4) * 3, progress=False)
    with pytest.raises(TypeError, match="items"):
        fit(Recorder(2), [{"x": torch.zeros(2)}] * 4, progress=False)


def test_non_finite_loss_raises_and_leaves_eval_mode():
    class Exploding(Recorder):
        def training_loss(self, x, y):
            loss, parts = super().training_loss(x, y)
            return loss * float("nan"), parts

    model = Exploding(2)
    with pytest.raises(FloatingPointError, match="step 0"):
        fit(model, _ids(10), progress=False)
    assert not model.training


# --------------------------------------------------------------------------- step options and worlds


class IndexRecorder(Recorder):
    """Records the options fit passes; runs the network through ``forward`` (DDP in a distributed fit)."""

    def __init__(self, features: int):
        super().__init__(features)
        self.calls: list[dict] = []
        self.local_losses: list[float] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)

    def training_step(self, x, y, optimizers, *, index, epoch, seed, forward=None):
        self.calls.append({"index": index.clone(), "epoch": epoch, "seed": seed, "ddp": forward is not None})
        self.seen.append(x[:, 0].detach().clone())
        (optimizer,) = optimizers
        optimizer.zero_grad(set_to_none=True)
        loss = (forward or self)(x).squeeze(1).sub(x[:, 1]).pow(2).mean()
        loss.backward()
        optimizer.step()
        self.local_losses.append(float(loss.detach()))
        return {"loss": float(loss.detach())}


def _global_batches(n: int, batch_size: int, seed: int, epochs: int, rank: int, size: int) -> list[torch.Tensor]:
    """The rule of the SimCLR recipe's former train_contrastive, written out independently."""
    generator, local, parts = torch.Generator().manual_seed(seed), batch_size // size, []
    for _ in range(epochs):
        permutation = torch.randperm(n, generator=generator)
        for b in range(n // batch_size):
            parts.append(permutation[b * batch_size : (b + 1) * batch_size][rank * local : (rank + 1) * local])
    return parts


def test_fit_passes_the_rows_epoch_and_seed_to_a_step_that_names_them():
    n = 30
    model = IndexRecorder(2)
    history = fit(model, _ids(n), seed=3, progress=False)
    plain = Recorder(2)
    fit(plain, _ids(n), seed=3, progress=False)
    assert history.steps == len(model.calls) == 15 and [len(c["index"]) for c in model.calls[:5]] == [7] * 4 + [2]
    assert all(torch.equal(a, b) for a, b in zip(model.seen, plain.seen))  # same order as a step without options
    for call, seen in zip(model.calls, model.seen):
        assert call["index"].dtype == torch.int64 and torch.equal(call["index"] / n, seen)  # the rows of x
        assert call["seed"] == 3 and not call["ddp"]
    assert [c["epoch"] for c in model.calls] == [0] * 5 + [1] * 5 + [2] * 5
    assert history.step_losses == model.local_losses and len(history.step_losses) == history.steps


def test_a_one_process_world_trains_on_the_global_batches_of_a_distributed_run():
    n, batch = 26, 8
    model = IndexRecorder(2)
    history = fit(model, _ids(n), epochs=2, batch_size=batch, seed=7, progress=False, world=(0, 1))
    assert history.steps == 2 * (n // batch)  # the last, partial batch is dropped
    expected = _global_batches(n, batch, seed=7, epochs=2, rank=0, size=1)
    assert all(torch.equal(c["index"], rows) for c, rows in zip(model.calls, expected, strict=True))
    limited = IndexRecorder(2)
    assert fit(limited, _ids(n), batch_size=batch, max_steps=4, seed=7, progress=False, world=(0, 1)).epochs == 2
    assert all(torch.equal(c["index"], rows) for c, rows in zip(limited.calls, expected[:4], strict=True))


def _world_worker(rank: int, size: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=size)
    try:
        torch.manual_seed(0)
        model = IndexRecorder(2)
        history = fit(model, _ids(26), epochs=2, batch_size=8, seed=7, progress=False, world=(rank, size))
        torch.save(
            {
                "calls": model.calls,
                "local": model.local_losses,
                "history": history,
                "state": model.state_dict(),
            },
            os.path.join(out, f"{rank}.pt"),
        )
    finally:
        dist.destroy_process_group()


@pytest.mark.slow  # 47 s on the shared 2-core machine, mostly starting two processes
def test_a_world_of_two_processes_splits_every_global_batch_and_averages_the_losses(tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    torch.multiprocessing.spawn(_world_worker, args=(2, port, str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"{rank}.pt", weights_only=False) for rank in range(2)]
    for rank, record in enumerate(ranks):
        expected = _global_batches(26, 8, seed=7, epochs=2, rank=rank, size=2)
        assert [c["epoch"] for c in record["calls"]] == [0, 0, 0, 1, 1, 1]
        assert all(
            torch.equal(c["index"], rows) and c["ddp"] for c, rows in zip(record["calls"], expected, strict=True)
        )
    first, second = ranks
    mean = [(a + b) / 2 for a, b in zip(first["local"], second["local"])]
    assert first["history"].step_losses == second["history"].step_losses == pytest.approx(mean, abs=1e-12)
    assert first["history"].losses == second["history"].losses
    for name, value in first["state"].items():  # DDP kept the replicas equal
        assert torch.equal(value, second["state"][name]), name
    torch.manual_seed(0)
    alone = IndexRecorder(2)  # one process, the same global batches: the same training up to rounding
    fit(alone, _ids(26), epochs=2, batch_size=8, seed=7, progress=False, world=(0, 1))
    for name, value in alone.state_dict().items():
        torch.testing.assert_close(value, first["state"][name], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("model", "world", "error", "match"),
    [
        (Recorder(2), (0, 2), TypeError, "forward"),
        (IndexRecorder(2), (0, 3), ValueError, "split evenly over 3"),
        (IndexRecorder(2), (2, 2), ValueError, "0 <= rank < size"),
        (IndexRecorder(2), (0, 1), ValueError, "larger than the 6 rows"),
    ],
)
def test_bad_worlds(model, world, error, match):
    with pytest.raises(error, match=match):
        fit(model, _ids(6), batch_size=8 if "rows" in match else 4, world=world, progress=False)
