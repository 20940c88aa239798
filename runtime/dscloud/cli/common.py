"""What every ``dsc`` command group shares: settings from the parsed flags, the archive."""

from __future__ import annotations

import argparse
from typing import Any

from dscloud.archive import Archive
from dscloud.settings import Settings

__all__ = ["metrics_text", "open_archive", "settings"]


def settings(args: argparse.Namespace, **flags: Any) -> Settings:
    """Settings from the environment, overridden by the global ``--archive`` and ``flags``."""
    return Settings.from_env(archive=getattr(args, "archive", None), **flags)


def open_archive(args: argparse.Namespace) -> Archive:
    """The archive of ``--archive``, ``$DSC_ARCHIVE`` or the default; raises its errors."""
    return Archive.open(settings(args).archive)


def metrics_text(metrics: dict[str, float]) -> str:
    """``auc=0.91 accuracy=0.85`` (or ``-`` for none): metrics on one line."""
    return " ".join(f"{k}={v:.4g}" for k, v in metrics.items()) or "-"
