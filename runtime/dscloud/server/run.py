"""Run the server on uvicorn: one process, or ``workers`` processes sharing the port.

Models are loaded and their goldens replayed before the port opens, so a model that
cannot be served stops ``dsc serve`` with a one-line error instead of a crash loop.
SIGTERM (uvicorn's graceful shutdown) stops accepting connections and lets in-flight
requests finish, up to :data:`DRAIN_SECONDS`.
"""

from __future__ import annotations

import contextlib
import gc
import os
import resource
import signal

import uvicorn

from dscloud.archive import Archive
from dscloud.errors import ConfigError
from dscloud.live import ModelSet
from dscloud.server.admission import check_budget
from dscloud.server.app import create_app
from dscloud.server.deadlines import KEEP_ALIVE_SECONDS, PROTOCOL, deadline_protocol
from dscloud.server.logs import configure_logging
from dscloud.settings import Settings

__all__ = ["DRAIN_SECONDS", "KEEP_ALIVE_SECONDS", "check", "serve", "settings_env"]

#: How long SIGTERM waits for in-flight requests (below ECS's default 30 s stop timeout).
DRAIN_SECONDS = 25
FACTORY = "dscloud.server.app:app_from_env"


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that makes :func:`~dscloud.server.app.app_from_env` in a worker
    process see ``settings``."""
    return settings.environ(
        (
            "archive",
            "models",
            "workers",
            "threads",
            "refresh_seconds",
            "max_body_bytes",
            "header_seconds",
            "body_seconds",
            "max_concurrent",
            "memory_budget_bytes",
        )
    )


def check(settings: Settings) -> None:
    """Raise :class:`ConfigError` when there is nothing to serve, or when the memory budget
    cannot take one body of the largest allowed size.

    Ranges (port, workers, threads, body size, refresh interval) are the settings table's
    rules, already enforced when ``settings`` was built."""
    if not settings.models:
        raise ConfigError("no models to serve: give NAME@REF arguments or set DSC_MODELS")
    check_budget(settings.memory_budget_bytes, settings.max_body_bytes)


def _more_file_descriptors() -> None:
    """Raise the soft open-files limit to the hard one: each connection is a descriptor, and
    1,024 (a common soft default) is too few to ride out a flood of idle connections."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def serve(settings: Settings) -> None:
    """Serve ``settings.models`` until SIGTERM or SIGINT.

    Raises :class:`ConfigError` without models, and the archive's or scorer's error when a
    model cannot be loaded or fails its golden examples.
    """
    check(settings)
    configure_logging()
    _more_file_descriptors()
    archive = Archive.open(settings.archive)
    models = ModelSet(archive, settings.models, threads=settings.threads)
    common: dict[str, object] = {
        "host": settings.host,
        "port": settings.port,
        "log_config": None,
        "access_log": False,
        "server_header": False,
        # X-Forwarded-* would only rewrite the client address, which nothing here reads;
        # uvicorn's middleware for it costs a dict of the headers per request.
        "proxy_headers": False,
        "timeout_keep_alive": KEEP_ALIVE_SECONDS,
        "timeout_graceful_shutdown": DRAIN_SECONDS,
    }
    # uvicorn drains on SIGTERM, then re-raises it to the handler it found: the default one,
    # not the CLI's exit-at-once handler (which is for commands without a drain of their own).
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if settings.workers == 1:
        http = deadline_protocol(settings.header_seconds)
        uvicorn.run(create_app(models, settings), http=http, **common)  # type: ignore[arg-type]
        return
    # Workers are fresh processes: each builds its app from the environment. The models
    # loaded above only proved they can be served.
    del models
    gc.collect()
    os.environ.update(settings_env(settings))
    # Each worker sets its header deadline in app_from_env, from the same environment.
    uvicorn.run(FACTORY, factory=True, workers=settings.workers, http=PROTOCOL, **common)  # type: ignore[arg-type]
