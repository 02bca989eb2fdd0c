"""The real-data fixtures of the model tests, shared by the training tests."""

from ..models.conftest import digits, mnist  # noqa: F401
