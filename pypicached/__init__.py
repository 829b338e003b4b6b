"""pypicached: a caching proxy for a Python package index, for one LAN."""

__version__ = "0.1.0"
