"""Model registry: names, shapes, options, errors and checkpoint round trips."""

from __future__ import annotations

import pytest
import torch

from uae_augment.models import (
    AdversarialAutoencoder,
    ConcreteAutoencoder,
    ConvAutoencoder,
    CWClassifier,
    DenseAutoencoder,
    LeNet,
    MLPClassifier,
    SimCLR,
    SparseAutoencoder,
    available_models,
    build_model,
)

CASES = {
    "conv-ae": ((3, 32, 32), {}, ConvAutoencoder),
    "sparse-ae": ((617,), {}, SparseAutoencoder),
    "dense-ae": ((1, 28, 28), {"hidden": 64}, DenseAutoencoder),
    "adversarial-ae": ((1, 28, 28), {"hidden": 32}, AdversarialAutoencoder),
    "concrete-ae": ((1, 28, 28), {"k": 10, "total_steps": 5}, ConcreteAutoencoder),
    "cw-classifier": ((3, 32, 32), {"classes": 4}, CWClassifier),
    "lenet": ((1, 28, 28), {}, LeNet),
    "mlp": ((561,), {"hidden": (16,), "classes": 6}, MLPClassifier),
    "simclr-resnet18": ((3, 32, 32), {"width": 4}, SimCLR),
}


def test_available_models_are_the_documented_names():
    assert available_models() == sorted(CASES)


@pytest.mark.parametrize("name", sorted(CASES))
def test_checkpoint_round_trip_gives_identical_outputs(name, tmp_path):
    shape, options, cls = CASES[name]
    torch.manual_seed(0)
    model = build_model(name, shape, **options)
    assert type(model) is cls
    with torch.no_grad():  # move the weights away from any initial pattern
        for parameter in model.parameters():
            parameter.add_(0.01 * torch.randn_like(parameter))
    path = tmp_path / f"{name}.pt"
    torch.save(model.state_dict(), path)
    torch.manual_seed(1)
    loaded = build_model(name, list(shape), **options)
    assert any(not torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.state_dict().values()))
    loaded.load_state_dict(torch.load(path, weights_only=True))
    x = torch.rand(3, *shape)
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(x), model.eval()(x), rtol=0, atol=0)


def test_names_are_normalised_and_options_reach_the_model():
    model = build_model("Concrete_AE", (64,), k=7)
    assert model.selector.k == 7
    assert build_model("conv-ae", (1, 28, 28)).input_shape == (1, 28, 28)


def test_errors():
    with pytest.raises(ValueError, match="available: adversarial-ae, concrete-ae, conv-ae"):
        build_model("resnet", (3, 32, 32))
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        build_model("conv-ae", (784,))
    with pytest.raises(TypeError, match="widht"):
        build_model("cw-classifier", (1, 28, 28), widht=3)
    with pytest.raises(TypeError, match="str"):
        build_model(3, (1, 28, 28))  # type: ignore[arg-type]
