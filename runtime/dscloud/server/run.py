"""Run the server on uvicorn: one process, or ``workers`` processes sharing the port.

Models are loaded and their goldens replayed before the port opens, so a model that
cannot be served stops ``dsc serve`` with a one-line error instead of a crash loop.
SIGTERM (uvicorn's graceful shutdown) stops accepting connections and lets in-flight
requests finish, up to :data:`DRAIN_SECONDS`.
"""

from __future__ import annotations

import gc
import os
import signal

import uvicorn

from dscloud.archive import Archive
from dscloud.errors import ConfigError
from dscloud.live import ModelSet
from dscloud.server.app import create_app
from dscloud.server.logs import configure_logging
from dscloud.settings import Settings

__all__ = ["DRAIN_SECONDS", "KEEP_ALIVE_SECONDS", "check", "serve", "settings_env"]

#: How long SIGTERM waits for in-flight requests (below ECS's default 30 s stop timeout).
DRAIN_SECONDS = 25
#: Longer than an ALB's 60 s idle timeout, so the balancer never reuses a closed connection.
KEEP_ALIVE_SECONDS = 75
FACTORY = "dscloud.server.app:app_from_env"


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that makes :func:`~dscloud.server.app.app_from_env` in a worker
    process see ``settings``."""
    return settings.environ(
        ("archive", "models", "workers", "threads", "refresh_seconds", "max_body_bytes")
    )


def check(settings: Settings) -> None:
    """Raise :class:`ConfigError` when there is nothing to serve.

    Ranges (port, workers, threads, body size, refresh interval) are the settings table's
    rules, already enforced when ``settings`` was built."""
    if not settings.models:
        raise ConfigError("no models to serve: give NAME@REF arguments or set DSC_MODELS")


def serve(settings: Settings) -> None:
    """Serve ``settings.models`` until SIGTERM or SIGINT.

    Raises :class:`ConfigError` without models, and the archive's or scorer's error when a
    model cannot be loaded or fails its golden examples.
    """
    check(settings)
    configure_logging()
    archive = Archive.open(settings.archive)
    models = ModelSet(archive, settings.models, threads=settings.threads)
    common: dict[str, object] = {
        "host": settings.host,
        "port": settings.port,
        "log_config": None,
        "access_log": False,
        "server_header": False,
        "timeout_keep_alive": KEEP_ALIVE_SECONDS,
        "timeout_graceful_shutdown": DRAIN_SECONDS,
    }
    # uvicorn drains on SIGTERM, then re-raises it to the handler it found: the default one,
    # not the CLI's exit-at-once handler (which is for commands without a drain of their own).
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if settings.workers == 1:
        uvicorn.run(create_app(models, settings), **common)  # type: ignore[arg-type]
        return
    # Workers are fresh processes: each builds its app from the environment. The models
    # loaded above only proved they can be served.
    del models
    gc.collect()
    os.environ.update(settings_env(settings))
    uvicorn.run(FACTORY, factory=True, workers=settings.workers, **common)  # type: ignore[arg-type]
