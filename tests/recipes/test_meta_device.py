"""Every recipe's attack path with a victim on the ``meta`` device (a stand-in for a GPU, on CPU).

A meta tensor has a device and a shape but no values: any operation that mixes
it with a CPU tensor fails with a device error, and any host read (``.item()``,
``nonzero``, a copy to numpy) fails too. Each recipe's attacks, built as the
recipe builds them, attack a meta batch: the MinMax loop (MINE, supervised,
L2, contrastive) and the gradient attacks run to the end, every result tensor
on meta; L-BFGS, which optimises on the host by design, stops where it copies
values out, and the concrete autoencoder where its selector reads its scores,
both after running their victim on meta.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import adversarial_training
import autoencoders
import concrete_autoencoder
import simclr
import supervised_attacks
import transferability
from tests.helpers import digits_classifier, digits_conv_autoencoder
from uae_augment import LBFGS, MINEUAE, Attack, Reconstruction
from uae_augment._model_state import frozen
from uae_augment.models import ConcreteAutoencoder, SimCLR

META = torch.device("meta")


def _attack_on_meta(attack: Attack, shape: tuple[int, ...], labelled: bool) -> list[torch.device]:
    """Runs ``attack``'s batch step on a meta batch; returns the devices its victims' inputs were on."""
    seen: list[torch.device] = []
    hooks = [
        module.register_forward_pre_hook(lambda _m, args: seen.extend(a.device for a in args if torch.is_tensor(a)))
        for module in attack.models()
    ]
    assert attack.device() == META
    x = torch.empty(4, *shape, device=META)
    y = torch.zeros(4, dtype=torch.long, device=META) if labelled else None
    try:
        with frozen(attack.models()):
            result = attack._attack_batch(x, y, torch.arange(4))
    finally:
        for hook in hooks:
            hook.remove()
    tensors = {name: value for name, value in vars(result).items() if torch.is_tensor(value)}
    assert tensors and all(value.device == META for value in tensors.values()), {
        name: value.device for name, value in tensors.items()
    }
    return seen


def _meta(model: nn.Module) -> nn.Module:
    return copy.deepcopy(model).to(META)


@pytest.mark.parametrize("method", sorted(autoencoders.METHODS))
def test_autoencoders_recipe_attacks_run_on_the_victims_device(method):
    args = autoencoders.build_parser().parse_args(["--preset", "fast", "--attack-steps", "3", "--mine-steps", "2"])
    attack = autoencoders.METHODS[method].build(Reconstruction(_meta(digits_conv_autoencoder())), args, 0)
    seen = _attack_on_meta(attack, (1, 8, 8), labelled=False)
    assert seen and set(seen) == {META}


def test_concrete_autoencoder_recipe_attack_runs_on_the_victims_device():
    args = concrete_autoencoder.build_parser().parse_args(
        ["--preset", "fast", "--attack-steps", "3", "--mine-steps", "2"]
    )
    with torch.device(META):
        model = ConcreteAutoencoder((1, 8, 8), k=5)
    attack = MINEUAE(  # as in concrete_autoencoder.Run.run_seed
        Reconstruction(model),
        preset=args.preset,
        steps=args.attack_steps,
        mine_steps=args.mine_steps,
        sampler="random_projection",
        projections=args.projections,
        projection_dim=args.projection_dim,
        seed=0,
        batch_size=args.attack_batch_size,
    )
    seen: list[torch.device] = []
    model.register_forward_pre_hook(lambda _m, a: seen.append(a[0].device))
    # the selector's greedy distinct assignment reads its scores on the host (once per weight version)
    with pytest.raises(RuntimeError, match="cannot be called on meta tensors"):
        _attack_on_meta(attack, (1, 8, 8), labelled=False)
    assert seen and set(seen) == {META}


def test_simclr_recipe_attack_runs_on_the_victims_device():
    args = simclr.build_parser().parse_args(["--attack-steps", "2", "--mine-steps", "1", "--n-views", "2"])
    with torch.device(META):
        model = SimCLR(in_channels=3, image_size=(8, 8))
    bank = torch.rand(3, 3, 8, 8)  # the recipe's bank of training images lives on the CPU
    criterion = model.criterion(n_views=args.n_views, negatives=bank, seed=0)
    attack = MINEUAE(
        criterion,
        preset="fast",
        steps=args.attack_steps,
        mine_steps=args.mine_steps,
        gamma_power=simclr.GAMMA_POWER,
        seed=0,
        batch_size=args.attack_batch_size,
    )
    seen = _attack_on_meta(attack, (3, 8, 8), labelled=False)
    assert seen and set(seen) == {META}


@pytest.mark.parametrize("name", ["minmax", "penalty", "pgd", "fgsm"])
def test_supervised_attacks_recipe_attacks_run_on_the_victims_device(name):
    args = supervised_attacks.build_parser().parse_args(
        [
            "--attacks",
            name,
            "--steps",
            "3",
            "--penalty-steps",
            "2",
            "--penalty-search-steps",
            "2",
            "--penalty-mine-steps",
            "1",
            "--pgd-steps",
            "2",
            "--preset",
            "fast",
        ]
    )
    data = supervised_attacks.DataSpec("digits", "digits", (1, 8, 8), 0.3, 2)
    attack, _ = supervised_attacks.build_attacks(_meta(digits_classifier()), data, args, 0)[name]
    seen = _attack_on_meta(attack, (1, 8, 8), labelled=True)
    assert seen and set(seen) == {META}


@pytest.mark.parametrize("method", ["goodfellow", "madry"])
def test_adversarial_training_recipe_attacks_run_on_the_victims_device(method):
    args = adversarial_training.build_parser().parse_args(["--madry-steps", "2"])
    step = adversarial_training.epoch_step(method, _meta(digits_classifier()), args, 0)
    seen = _attack_on_meta(step.keywords["attack"], (1, 8, 8), labelled=True)
    assert seen and set(seen) == {META}


@pytest.mark.parametrize("recipe", [supervised_attacks, transferability])
def test_lbfgs_of_the_recipes_runs_its_victim_on_its_device_then_stops_at_the_host_copy(recipe):
    args = recipe.build_parser().parse_args([])
    model = _meta(digits_classifier())
    if recipe is supervised_attacks:
        attack = LBFGS(model, search_steps=args.lbfgs_search_steps, max_iter=args.lbfgs_max_iter, seed=0)
    else:  # as in transferability.main
        attack = LBFGS(model, search_steps=args.search_steps, max_iter=args.max_iter, seed=0)
    seen: list[torch.device] = []
    hook = model.register_forward_pre_hook(lambda _m, a: seen.append(a[0].device))
    with pytest.raises(NotImplementedError, match="meta tensor"), frozen([model]):
        attack._attack_batch(
            torch.empty(4, 1, 8, 8, device=META),
            torch.zeros(4, dtype=torch.long, device=META),
            torch.arange(4),
        )
    hook.remove()
    assert seen and set(seen) == {META}
