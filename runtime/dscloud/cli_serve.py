"""`dsc` commands of the serve adapter (registered by :mod:`dscloud.cli`)."""

from __future__ import annotations

from typing import Any

__all__ = ["register"]


def register(sub: Any) -> None:
    """Add this adapter's subcommands to the ``dsc`` parser."""
    del sub  # commands arrive with the serve adapter
