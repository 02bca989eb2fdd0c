# `make test` and `make demo` work on a fresh machine: they build .venv first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TORCH_PINS := torch==2.14.1 torchvision==0.29.1

.PHONY: help venv test test-slow demo demo-table demo-attack lint format bench clean

help:
	@echo "make demo         the one-page example recipes/example.py: MNIST conv AE + MINE-UAEs via the"
	@echo "                  HDF5 cache vs the same-steps control, one table (~30 s, 2-core machine)"
	@echo "make demo-table   the quick table: recipes/autoencoders.py --quick (4 AE kinds, 6 methods,"
	@echo "                  2 seeds; 5 min 44 s wall, idle 2-core machine)"
	@echo "make demo-attack  the engine alone: UAEs of 64 digits, image grid + JSON"
	@echo "make test         ruff check + ruff format --check, then the test suite (slow tests deselected)"
	@echo "make test-slow    the slow tests; make format: apply ruff format"
	@echo "make lint | bench | clean"

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH_PINS)
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

test: $(STAMP) lint
	$(PY) -m pytest -q

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

# The main job in small (recipes/example.py, one page): a conv AE on 400 embedded MNIST digits, their
# MINE-UAEs precomputed into an HDF5 cache, retrain, one table with the same-steps control.
demo: $(STAMP)
	$(PY) recipes/example.py

# The quick table: the autoencoder recipe's quick mode (4 AE kinds x 6 methods x 2 seeds, minutes).
demo-table: $(STAMP)
	$(PY) recipes/autoencoders.py --quick

# The engine alone: MINE-UAEs of 64 digits against a conv autoencoder, image grid + JSON.
demo-attack: $(STAMP)
	$(PY) -m uae_augment.cli demo

# The style CI keeps: ruff's lint rules and its formatter (`make format` applies it).
lint: $(STAMP)
	$(PY) -m ruff check uae_augment recipes tests benchmarks
	$(PY) -m ruff format --check uae_augment recipes tests benchmarks

format: $(STAMP)
	$(PY) -m ruff format uae_augment recipes tests benchmarks

bench: $(STAMP)
	$(PY) benchmarks/attack_speed.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
