"""
``pypicached-admin``, the operator's command: stats, purge, verify, policy check,
prefetch (requirements and lock files), export and import of bundles, tokens.
"""

from pypicached.admin.cli import main

__all__ = ["main"]
