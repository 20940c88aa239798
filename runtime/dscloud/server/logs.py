"""Structured logs: every record is one JSON line on stdout.

The server writes one ``request`` line per request (method, path, status, model, version,
rows, latency); uvicorn's own messages and the alias-following swaps of
:mod:`dscloud.live` come out in the same shape, so one log query covers all of them.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from datetime import UTC, datetime
from typing import Any

import orjson

__all__ = ["ACCESS_LOGGER", "AccessLog", "JsonFormatter", "configure_logging"]

#: The logger name of the per-request lines.
ACCESS_LOGGER = "dscloud.server.access"

_STANDARD = set(vars(logging.makeLogRecord({}))) | {
    "message",
    "asctime",
    "taskName",
    "color_message",
}


class JsonFormatter(logging.Formatter):
    """A record as ``{"ts", "level", "logger", "msg", ...extra fields}`` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD:
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(out, default=str).decode()


def configure_logging(level: int = logging.INFO) -> None:
    """Send every logger's records to stdout as JSON lines (idempotent)."""
    root = logging.getLogger()
    for handler in root.handlers:
        if isinstance(handler.formatter, JsonFormatter):
            return
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter())
    root.handlers = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers = []
        logging.getLogger(name).propagate = True


class AccessLog:
    """The one ``request`` line per request, in :class:`JsonFormatter`'s shape, written to
    stdout in batches.

    A ``logging`` record, its caller lookup, formatter and a flush per request cost about
    as much as scoring one row; here a line is one ``orjson.dumps`` into a buffer that is
    written at most :data:`FLUSH_SECONDS` later (its timestamp's date and time are
    formatted once per second, the milliseconds appended) (a timer on the event loop), when
    :data:`FLUSH_LINES` lines wait, and at shutdown. The access logger's level still
    decides: ``logging.getLogger("dscloud.server.access").setLevel(logging.WARNING)``
    silences it. Lines of one process stay in order; against other loggers' lines they
    may appear up to :data:`FLUSH_SECONDS` late.
    """

    FLUSH_SECONDS = 0.2
    FLUSH_LINES = 256

    def __init__(self) -> None:
        self._logger = logging.getLogger(ACCESS_LOGGER)
        self._lines: list[bytes] = []
        self._timer: asyncio.TimerHandle | None = None
        self._second = -1
        self._second_text = ""

    def request(self, fields: dict[str, Any]) -> None:
        """Queue the line for one request (``fields``: method, path, status, ...)."""
        if not self._logger.isEnabledFor(logging.INFO):
            return
        line = {
            "ts": self._timestamp(time.time()),
            "level": "info",
            "logger": ACCESS_LOGGER,
            "msg": "request",
            **fields,
        }
        self._lines.append(orjson.dumps(line, default=str))
        if len(self._lines) >= self.FLUSH_LINES:
            self.flush()
        elif self._timer is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # not on an event loop: nothing would flush later
                self.flush()
                return
            self._timer = loop.call_later(self.FLUSH_SECONDS, self.flush)

    def _timestamp(self, now: float) -> str:
        """``now`` as :class:`JsonFormatter` writes it: ISO 8601, milliseconds, UTC."""
        second = int(now)
        if second != self._second:
            moment = datetime.fromtimestamp(second, UTC).isoformat()  # ...T18:05:30+00:00
            self._second, self._second_text = second, moment[:-6]
        return f"{self._second_text}.{int((now - second) * 1000):03d}+00:00"

    def flush(self) -> None:
        """Write every queued line to stdout now."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._lines:
            text = b"\n".join(self._lines).decode() + "\n"
            self._lines.clear()
            sys.stdout.write(text)
            sys.stdout.flush()
