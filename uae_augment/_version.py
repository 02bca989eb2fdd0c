"""The library's version string (read by the package root and the cache format)."""

__version__ = "0.1.0"
