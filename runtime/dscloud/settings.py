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
header_seconds            ``DSC_HEADER_SECONDS``      ``10`` (request headers must arrive
                                                      within; 0 disables)
body_seconds              ``DSC_BODY_SECONDS``        ``30`` (the body must arrive within,
                                                      else 408; 0 disables)
max_concurrent            ``DSC_MAX_CONCURRENT``      ``16`` scoring requests per process
                                                      (more get 503; 0: no cap)
memory_budget_bytes       ``DSC_MEMORY_BUDGET_BYTES`` ``0`` (none) request memory per process
                                                      (more gets 503); the stacks derive it
                                                      from the task size
predictions_table         ``DSC_PREDICTIONS_TABLE``   (none)
output_stream             ``DSC_OUTPUT_STREAM``       (none)
rejects_queue_url         ``DSC_REJECTS_QUEUE_URL``   (none)
shard_index               ``AWS_BATCH_JOB_ARRAY_INDEX``  ``0``
shard_count               ``DSC_SHARD_COUNT``         ``1``
s3_endpoint               ``AWS_ENDPOINT_URL_S3`` or  (none: AWS; e.g. a moto server)
                          ``AWS_ENDPOINT_URL``
max_rejected_share        ``DSC_MAX_REJECTED_SHARE``  ``0.5`` (a batch run rejecting more
                                                      of its rows fails; 1 never fails)
========================  ==========================  =====================================

The server keeps an idle connection open for 75 s, *longer* than the ALB's 60 s idle
timeout, on purpose: the balancer must be the side that closes idle connections, or it may
send a request on one the task just closed (a 502). Slow clients are bounded by
``header_seconds`` and ``body_seconds`` instead (see :mod:`dscloud.server.deadlines`).
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


def _float(
    env: Mapping[str, str], key: str, default: float, *, what: str = "a number of seconds"
) -> float:
    raw = env.get(key)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{key}={raw!r}: expected {what}") from None
    if value < 0:
        raise ConfigError(f"{key}={raw!r}: expected a number >= 0")
    return value


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
    header_seconds: float = 10.0
    body_seconds: float = 30.0
    max_concurrent: int = 16
    memory_budget_bytes: int = 0
    predictions_table: str | None = None
    output_stream: str | None = None
    rejects_queue_url: str | None = None
    shard_index: int = 0
    shard_count: int = 1
    s3_endpoint: str | None = None
    max_rejected_share: float = 0.5

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
            header_seconds=_float(env, "DSC_HEADER_SECONDS", 10.0),
            body_seconds=_float(env, "DSC_BODY_SECONDS", 30.0),
            max_concurrent=_int(env, "DSC_MAX_CONCURRENT", 16),
            memory_budget_bytes=_int(env, "DSC_MEMORY_BUDGET_BYTES", 0),
            predictions_table=env.get("DSC_PREDICTIONS_TABLE") or None,
            output_stream=env.get("DSC_OUTPUT_STREAM") or None,
            rejects_queue_url=env.get("DSC_REJECTS_QUEUE_URL") or None,
            shard_index=_int(env, "AWS_BATCH_JOB_ARRAY_INDEX", 0),
            shard_count=_int(env, "DSC_SHARD_COUNT", 1, minimum=1),
            s3_endpoint=env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL") or None,
            max_rejected_share=_float(
                env, "DSC_MAX_REJECTED_SHARE", 0.5, what="a share of rows in 0..1"
            ),
        )
        known = {f.name for f in fields(cls)}
        unknown = set(overrides) - known
        if unknown:
            raise ConfigError(f"unknown settings {sorted(unknown)}; known: {sorted(known)}")
        given = {k: v for k, v in overrides.items() if v is not None}
        if "models" in given:
            given["models"] = tuple(given["models"])
        settings = replace(settings, **given)
        if not 0 <= settings.max_rejected_share <= 1:
            raise ConfigError(
                f"max rejected share {settings.max_rejected_share}: expected a number in 0..1 "
                "(DSC_MAX_REJECTED_SHARE / --max-rejected-share)"
            )
        if not 0 <= settings.shard_index < settings.shard_count:
            raise ConfigError(
                f"shard index {settings.shard_index} is outside 0..{settings.shard_count - 1} "
                "(AWS_BATCH_JOB_ARRAY_INDEX / --shard-index against DSC_SHARD_COUNT / --shard-count)"
            )
        return settings
