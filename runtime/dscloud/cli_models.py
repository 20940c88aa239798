"""`dsc` commands for models and the archive (registered by :mod:`dscloud.cli`)."""

from __future__ import annotations

from typing import Any

__all__ = ["register"]


def register(sub: Any) -> None:
    """Add the model and archive subcommands to the ``dsc`` parser."""
    del sub
