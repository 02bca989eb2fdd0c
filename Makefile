# `make test` and `make demo` work on a fresh machine: they build .venv first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TORCH_PINS := torch==2.14.1 torchvision==0.29.1

.PHONY: venv test test-slow demo demo-attack lint bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH_PINS)
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

# The main job: the autoencoder recipe's quick mode on the embedded MNIST-5k (prints its table).
demo: $(STAMP)
	$(PY) recipes/autoencoders.py --quick

# The engine alone: MINE-UAEs of 64 digits against a conv autoencoder, image grid + JSON.
demo-attack: $(STAMP)
	$(PY) -m uae_augment.cli demo

lint: $(STAMP)
	$(PY) -m ruff check uae_augment recipes tests benchmarks

bench: $(STAMP)
	$(PY) benchmarks/attack_speed.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
