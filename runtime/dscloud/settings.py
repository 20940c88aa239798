"""Runtime settings, read once at the edge from environment variables and CLI flags.

Everything deeper receives a :class:`Settings`; nothing else reads ``os.environ``.

========================  ==========================  =====================================
setting                   environment variable        default
========================  ==========================  =====================================
archive                   ``DSC_ARCHIVE``             ``.dsc/archive``
models                    ``DSC_MODELS``              (none; space- or comma-separated refs)
host / port               ``DSC_HOST`` / ``DSC_PORT`` ``127.0.0.1`` / ``8080``
workers                   ``DSC_WORKERS``             ``1``
threads                   ``DSC_THREADS``             ``1`` (ONNX Runtime intra-op threads)
refresh_seconds           ``DSC_REFRESH_SECONDS``     ``30`` (alias polling; 0 disables)
max_body_bytes            ``DSC_MAX_BODY_BYTES``      ``16777216``
predictions_table         ``DSC_PREDICTIONS_TABLE``   (none)
output_stream             ``DSC_OUTPUT_STREAM``       (none)
rejects_queue_url         ``DSC_REJECTS_QUEUE_URL``   (none)
drift                     ``DSC_DRIFT``               ``on`` (``off``: no drift counting)
drift_window_seconds      ``DSC_DRIFT_WINDOW_SECONDS``  ``300`` (drift published per window)
drift_min_rows            ``DSC_DRIFT_MIN_ROWS``      ``500`` (fewer rows: keep counting)
shard_index               ``AWS_BATCH_JOB_ARRAY_INDEX``  ``0``
shard_count               ``DSC_SHARD_COUNT``         ``1``
s3_endpoint               ``AWS_ENDPOINT_URL_S3`` or  (none: AWS; e.g. a moto server)
                          ``AWS_ENDPOINT_URL``
========================  ==========================  =====================================
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

from dscloud.archive import DEFAULT_ARCHIVE
from dscloud.errors import ConfigError

__all__ = ["Settings"]


def _int(env: Mapping[str, str], key: str, default: int, *, minimum: int = 0) -> int:
    raw = env.get(key)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{key}={raw!r}: expected an integer") from None
    if value < minimum:
        raise ConfigError(f"{key}={raw!r}: expected an integer >= {minimum}")
    return value


def _float(env: Mapping[str, str], key: str, default: float) -> float:
    raw = env.get(key)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{key}={raw!r}: expected a number of seconds") from None
    if value < 0:
        raise ConfigError(f"{key}={raw!r}: expected a number >= 0")
    return value


_SWITCH = {"on": True, "true": True, "1": True, "off": False, "false": False, "0": False}


def _switch(env: Mapping[str, str], key: str, default: bool) -> bool:
    raw = env.get(key)
    if raw is None or raw == "":
        return default
    try:
        return _SWITCH[raw.strip().lower()]
    except KeyError:
        raise ConfigError(f"{key}={raw!r}: expected on or off") from None


@dataclass(frozen=True)
class Settings:
    archive: str = DEFAULT_ARCHIVE
    models: tuple[str, ...] = ()
    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 1
    threads: int = 1
    refresh_seconds: float = 30.0
    max_body_bytes: int = 16 * 1024 * 1024
    predictions_table: str | None = None
    output_stream: str | None = None
    rejects_queue_url: str | None = None
    drift: bool = True
    drift_window_seconds: float = 300.0
    drift_min_rows: int = 500
    shard_index: int = 0
    shard_count: int = 1
    s3_endpoint: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Settings from ``env`` (default ``os.environ``), then non-None ``overrides`` (flags).

        Raises :class:`ConfigError` naming the variable and what was expected.
        """
        env = os.environ if env is None else env
        models = tuple(m for m in env.get("DSC_MODELS", "").replace(",", " ").split() if m)
        settings = cls(
            archive=env.get("DSC_ARCHIVE") or DEFAULT_ARCHIVE,
            models=models,
            host=env.get("DSC_HOST") or "127.0.0.1",
            port=_int(env, "DSC_PORT", 8080),
            workers=_int(env, "DSC_WORKERS", 1, minimum=1),
            threads=_int(env, "DSC_THREADS", 1, minimum=1),
            refresh_seconds=_float(env, "DSC_REFRESH_SECONDS", 30.0),
            max_body_bytes=_int(env, "DSC_MAX_BODY_BYTES", 16 * 1024 * 1024, minimum=1),
            predictions_table=env.get("DSC_PREDICTIONS_TABLE") or None,
            output_stream=env.get("DSC_OUTPUT_STREAM") or None,
            rejects_queue_url=env.get("DSC_REJECTS_QUEUE_URL") or None,
            drift=_switch(env, "DSC_DRIFT", True),
            drift_window_seconds=_float(env, "DSC_DRIFT_WINDOW_SECONDS", 300.0),
            drift_min_rows=_int(env, "DSC_DRIFT_MIN_ROWS", 500, minimum=1),
            shard_index=_int(env, "AWS_BATCH_JOB_ARRAY_INDEX", 0),
            shard_count=_int(env, "DSC_SHARD_COUNT", 1, minimum=1),
            s3_endpoint=env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL") or None,
        )
        known = {f.name for f in fields(cls)}
        unknown = set(overrides) - known
        if unknown:
            raise ConfigError(f"unknown settings {sorted(unknown)}; known: {sorted(known)}")
        given = {k: v for k, v in overrides.items() if v is not None}
        if "models" in given:
            given["models"] = tuple(given["models"])
        settings = replace(settings, **given)
        if not 0 <= settings.shard_index < settings.shard_count:
            raise ConfigError(
                f"shard index {settings.shard_index} is outside 0..{settings.shard_count - 1} "
                "(AWS_BATCH_JOB_ARRAY_INDEX / --shard-index against DSC_SHARD_COUNT / --shard-count)"
            )
        return settings
