"""What every ``dsc`` command group shares: settings from the parsed flags, the archive."""

from __future__ import annotations

import argparse
from typing import Any

from dscloud.archive import Archive
from dscloud.settings import Settings

__all__ = ["open_archive", "settings"]


def settings(args: argparse.Namespace, **flags: Any) -> Settings:
    """Settings from the environment, overridden by the global ``--archive`` and ``flags``."""
    return Settings.from_env(archive=getattr(args, "archive", None), **flags)


def open_archive(args: argparse.Namespace) -> Archive:
    return Archive.open(settings(args).archive)
