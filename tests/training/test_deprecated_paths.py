"""The old import paths of the training code keep working for one release, with a DeprecationWarning."""

from __future__ import annotations

import importlib
import sys
import warnings

import pytest

import uae_augment
from uae_augment import models, training
from uae_augment.training import adversarial


def test_adversarial_training_module_warns_and_holds_the_same_objects(monkeypatch):
    monkeypatch.delitem(sys.modules, "uae_augment.adversarial_training", raising=False)
    with pytest.warns(DeprecationWarning, match="uae_augment.training"):
        old = importlib.import_module("uae_augment.adversarial_training")
    assert old.__all__ == adversarial.__all__
    for name in adversarial.__all__:
        assert getattr(old, name) is getattr(adversarial, name) is getattr(training, name), name


@pytest.mark.parametrize("name", ["fit_concrete", "ConcreteFit"])
def test_models_concrete_fit_names_warn_and_are_the_training_objects(name):
    with pytest.warns(DeprecationWarning, match=f"uae_augment.models.{name} is deprecated"):
        old = getattr(models, name)
    assert old is getattr(training, name)
    assert name not in models.__all__


def test_new_paths_do_not_warn_and_unknown_names_still_fail():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        from uae_augment.training import ConcreteFit, fit_concrete  # noqa: F401

        assert uae_augment.fit is training.fit and uae_augment.FitHistory is training.FitHistory
    with pytest.raises(AttributeError, match="no attribute 'fit_concretes'"):
        models.fit_concretes  # noqa: B018
