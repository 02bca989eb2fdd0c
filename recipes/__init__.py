"""Runnable recipes that reproduce and extend the paper's experiments with the public API."""
